//! `leadgate check`: parse the settings (and everything they reference) without starting.

use std::path::Path;
use std::process::ExitCode;

use leadgate::config::{process_env, Config};
use leadgate::qualify::Rules;

pub fn run(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path, &process_env()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        println!("warning: {}: {w}", config.origin);
    }
    println!("ok: {} ({} sources)", config.origin, config.sources.len());
    // The rules file: every problem at once, each as `error: file: key: reason`.
    match Rules::load(config.qualification.rules.as_deref()) {
        Ok(rules) => {
            println!(
                "ok: {} (rules version {}, {} stages)",
                rules.origin(),
                rules.version(),
                rules.stages().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
