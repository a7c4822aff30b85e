//! `leadgate check`: parse the settings and everything they reference (every source's mapping,
//! the files those route to, the rules) without starting, and run the mappings' `[[test]]`
//! cases. Each problem is one `error: file: key: reason` line on stderr; any error exits 1.
//! Secrets are not needed: an unset secret variable is a `warning:` line, since `check` runs
//! where they are not (CI, a laptop) and a mapping must not go unchecked for that.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use leadgate::config::{process_env, Config, UnsetSecrets};
use leadgate::mapping::{MappingError, MappingSet};
use leadgate::qualify::Rules;

#[derive(clap::Args)]
pub struct Args {
    /// Mapping files to check on their own as well, e.g. a new file not yet named by a source
    /// (its tests run with the file's stem as the source name).
    files: Vec<PathBuf>,
}

pub fn run(path: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    // The settings, not the environment: an unset secret is a warning, and the mapping of a
    // source without its secret is checked all the same.
    let config = match Config::load_with(path, &process_env(), UnsetSecrets::Warn) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        println!("warning: {}: {w}", config.origin);
    }
    let mut outcome = Outcome::default();
    outcome.report(MappingSet::load_every_source(&config));
    let mapped_sources = outcome.sources;
    for file in &args.files {
        let source = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("mapping");
        outcome.report(MappingSet::load_file(source, file, &config.mapping));
    }
    // The rules file: every problem at once.
    let rules = match Rules::load(config.qualification.rules.as_deref()) {
        Ok(rules) => Some(rules),
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            outcome.errors += errors.len();
            None
        }
    };
    if outcome.errors > 0 {
        eprintln!("{} error(s)", outcome.errors);
        return Ok(ExitCode::FAILURE);
    }
    if let Some(rules) = rules {
        println!(
            "ok: {} (rules version {}, {} stages)",
            rules.origin(),
            rules.version(),
            rules.stages().len()
        );
    }
    println!(
        "ok: {} ({} sources, {} with a mapping; {} mapping tests passed)",
        config.origin,
        config.sources.len() + config.skipped.len(),
        mapped_sources,
        outcome.tests
    );
    Ok(ExitCode::SUCCESS)
}

/// What the mapping checks found so far.
#[derive(Default)]
struct Outcome {
    errors: usize,
    tests: usize,
    sources: usize,
}

impl Outcome {
    /// Prints each load error or failed test as an `error:` line.
    fn report(&mut self, set: Result<MappingSet, Vec<MappingError>>) {
        match set {
            Ok(set) => {
                self.tests += set.test_count();
                self.sources += set.sources().len();
                for failure in set.run_tests() {
                    eprintln!("error: {failure}");
                    self.errors += 1;
                }
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("error: {e}");
                    self.errors += 1;
                }
            }
        }
    }
}
