//! The mappings and rules the pipeline runs with, swapped atomically on reload.
//!
//! A reload (SIGHUP, or a changed mapping/rules file) loads and checks the whole new set first;
//! an invalid set is refused with its errors logged and the old one keeps serving. Ingest never
//! reads the engine, so no webhook can fail because of a reload; the pipeline takes one snapshot
//! per batch, so an event is never mapped with half-old, half-new settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mapping::MappingSet;
use crate::qualify::Rules;

/// Everything that turns a stored event into lead updates.
#[derive(Debug)]
pub struct Engine {
    pub mappings: MappingSet,
    pub rules: Rules,
    /// The first 12 hex digits of the SHA-256 over the mapping files this engine loaded (their
    /// names and bytes): replicas with different mappings show different versions.
    pub mappings_version: String,
}

pub type SharedEngine = Arc<ArcSwap<Engine>>;

/// Every problem found while loading, each as `file: key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct EngineError(pub Vec<String>);

impl Engine {
    /// Loads every mapping and the rules named by `config`.
    pub fn load(config: &Config) -> Result<Engine, EngineError> {
        let mappings = MappingSet::load(config);
        let rules = Rules::load(config.qualification.rules.as_deref());
        match (mappings, rules) {
            (Ok(mappings), Ok(rules)) => Ok(Engine {
                mappings,
                rules,
                mappings_version: mappings_version(config),
            }),
            (m, r) => {
                let mut errors: Vec<String> = Vec::new();
                if let Err(e) = m {
                    errors.extend(e.iter().map(ToString::to_string));
                }
                if let Err(e) = r {
                    errors.extend(e.iter().map(ToString::to_string));
                }
                Err(EngineError(errors))
            }
        }
    }

    /// The files a reload re-reads, for change detection.
    pub fn watched_files(config: &Config) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = config
            .sources
            .iter()
            .filter_map(|s| s.mapping.clone())
            .collect();
        files.extend(config.qualification.rules.clone());
        files.sort();
        files.dedup();
        files
    }
}

fn mappings_version(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut files: Vec<PathBuf> = config
        .sources
        .iter()
        .filter_map(|s| s.mapping.clone())
        .collect();
    files.sort();
    files.dedup();
    for f in files {
        hash.update(f.to_string_lossy().as_bytes());
        hash.update(std::fs::read(&f).unwrap_or_default());
    }
    let mut hex = hex::encode(hash.finalize());
    hex.truncate(12);
    hex
}

/// Publishes which rules and mappings this replica runs (`leadgate_config_info`), so a
/// half-finished rollout shows as two versions side by side.
pub fn report_versions(engine: &Engine, previous: Option<&Engine>) {
    if let Some(p) = previous {
        metrics::gauge!("leadgate_config_info", "rules_version" => p.rules.version().to_string(), "mappings_version" => p.mappings_version.clone())
            .set(0.0);
    }
    metrics::gauge!("leadgate_config_info", "rules_version" => engine.rules.version().to_string(), "mappings_version" => engine.mappings_version.clone())
        .set(1.0);
}

/// Loads a new engine and swaps it in, or keeps the old one and says why.
pub fn reload(config: &Config, shared: &SharedEngine) -> Result<(), EngineError> {
    match Engine::load(config) {
        Ok(engine) => {
            let version = engine.rules.version().to_string();
            report_versions(&engine, Some(&shared.load()));
            shared.store(Arc::new(engine));
            tracing::info!(rules_version = %version, "mappings and rules reloaded");
            metrics::counter!("leadgate_reloads_total", "outcome" => "ok").increment(1);
            Ok(())
        }
        Err(e) => {
            for line in &e.0 {
                tracing::error!(problem = %line, "reload refused; the previous mappings and rules keep serving");
            }
            metrics::counter!("leadgate_reloads_total", "outcome" => "refused").increment(1);
            Err(e)
        }
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads on SIGHUP, and when a watched file's modification time changes (checked every
/// `every`; a few `stat` calls, so cheap).
pub async fn watch(
    config: Config,
    shared: SharedEngine,
    every: Duration,
    cancel: CancellationToken,
) {
    let files = Engine::watched_files(&config);
    let mut seen = mtimes(&files);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading mappings and rules");
                let _ = reload(&config, &shared);
                seen = mtimes(&files);
            }
            _ = tokio::time::sleep(every) => {
                let now = mtimes(&files);
                if now != seen {
                    seen = now;
                    tracing::info!("a mapping or rules file changed: reloading");
                    let _ = reload(&config, &shared);
                }
            }
        }
    }
}
