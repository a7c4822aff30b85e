//! Implementations of the `leadgate` subcommands.

pub mod check;
pub mod map;
pub mod migrate;
pub mod probe;
pub mod replay;
pub mod send;
pub mod serve;

use std::path::Path;

use leadgate::config::{process_env, Config, UnsetSecrets};

/// Loads the settings or explains, in one line, what is wrong (file, key, reason). For the
/// commands that verify or send (`serve`, `send`): every secret variable must be set.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path, &process_env()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// [`load_config`] for the commands that only read the settings and the store (`map`,
/// `replay`): an unset secret variable skips its source instead of stopping the command.
pub fn load_config_without_secrets(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load_with(path, &process_env(), UnsetSecrets::Warn).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A multi-threaded runtime for the async parts of a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
