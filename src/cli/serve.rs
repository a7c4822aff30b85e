//! `leadgate serve`: run until SIGTERM/SIGINT, then shut down gracefully.

use std::path::Path;
use std::process::ExitCode;

use leadgate::startup::Application;
use leadgate::telemetry;

pub fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config)?;
    // Flushes buffered log lines when `run` returns.
    let _log_guard = telemetry::init_logging(&config.log);
    super::runtime()?.block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}
