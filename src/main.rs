//! The `leadgate` command: `serve`, `check`, `map`, `send`, `replay`, `migrate`, `probe`.
//! The command implementations live in `src/cli/` (part of this binary, not of the library).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "leadgate",
    version,
    about = "Signed webhooks in, qualified leads out."
)]
struct Cli {
    /// Settings file; default ./leadgate.toml, else the embedded defaults.
    #[arg(long, global = true, env = "LEADGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve,
    /// Validate the settings and every mapping, and run the mappings' tests; errors name the
    /// file, key and reason. Exit 1 on any error.
    Check(cli::check::Args),
    /// Map a payload file with a source's mapping and print the result as JSON. Sends nothing.
    Map(cli::map::Args),
    /// Sign a payload the way the source's provider does and POST it.
    Send(cli::send::Args),
    /// Re-deliver dead letters (`--dead-letters [--id N ...]`, `--list` to see them).
    Replay(cli::replay::Args),
    /// Bring the store's schema up to date and exit (`serve` also does this at start).
    Migrate,
    /// GET a URL and exit 0 if it answers 200 (container health checks: the image has no curl).
    Probe(cli::probe::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve => cli::serve::run(config),
        Command::Check(args) => cli::check::run(config, args),
        Command::Map(args) => cli::map::run(config, args),
        Command::Send(args) => cli::send::run(config, args),
        Command::Replay(args) => cli::replay::run(config, args),
        Command::Migrate => cli::migrate::run(config),
        Command::Probe(args) => cli::probe::run(config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
