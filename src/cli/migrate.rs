//! `leadgate migrate`: brings the store's schema up to date and exits, for deploy pipelines that
//! migrate before rolling out replicas. `serve` runs the same migrations at start (safe when
//! several replicas start at once), so this step is optional.

use std::path::Path;
use std::process::ExitCode;

use leadgate::config::StoreConfig;
use leadgate::store::postgres::PgStore;
use leadgate::store::sqlite::SqliteStore;
use leadgate::store::Store;

pub fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config)?;
    super::runtime()?.block_on(async move {
        match &config.store {
            StoreConfig::Postgres { url, at } => {
                let (store, ran) = PgStore::migrate(url.expose()).await?;
                store.close().await?;
                println!("{at}: schema up to date ({ran} migrations applied by this run)");
            }
            StoreConfig::Sqlite { path } => {
                let store = SqliteStore::open(path)?;
                store.close().await?;
                println!("{}: schema up to date", path.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
