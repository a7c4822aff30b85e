//! `leadgate check`: parse the settings (and everything they reference) without starting.

use std::path::Path;
use std::process::ExitCode;

use leadgate::config::{process_env, Config};

pub fn run(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    match Config::load(path, &process_env()) {
        Ok(config) => {
            for w in &config.warnings {
                println!("warning: {}: {w}", config.origin);
            }
            println!("ok: {} ({} sources)", config.origin, config.sources.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
