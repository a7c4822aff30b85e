//! Implementations of the `leadgate` subcommands.

pub mod check;
pub mod map;
pub mod migrate;
pub mod probe;
pub mod replay;
pub mod send;
pub mod serve;

use std::path::Path;

use leadgate::config::{process_env, Config};

/// Loads the settings or explains, in one line, what is wrong (file, key, reason).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path, &process_env()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A multi-threaded runtime for the async parts of a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
