//! `dry-run`, the default when no CRM is configured: nothing is sent. Each batch's requests, as
//! the `dry_run_as` connector (HubSpot by default) would send them, are appended as JSON lines to
//! `<data dir>/crm-dry-run.jsonl` (next to the database), credentials redacted, so a newcomer
//! can read exactly what would reach the CRM. Every record counts as delivered.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{Connector, Delivered, Item, PreparedRequest};
use crate::config::{CrmConfig, CrmKind, RateLimit};
use crate::deliver::retry::Failure;

/// The file name under the data directory.
pub const FILE_NAME: &str = "crm-dry-run.jsonl";

pub struct DryRun {
    inner: Arc<dyn Connector>,
    path: PathBuf,
    batch_size: usize,
}

impl DryRun {
    pub fn new(config: &CrmConfig, inner: Arc<dyn Connector>, data_dir: &Path) -> Self {
        Self {
            inner,
            path: data_dir.join(FILE_NAME),
            batch_size: config.batch_size,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, requests: &[PreparedRequest]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut text = String::new();
        for r in requests {
            let line = json!({ "at": at, "crm": self.inner.name(), "request": r });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
        f.flush()
    }
}

#[async_trait]
impl Connector for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn default_quota(&self) -> RateLimit {
        CrmKind::DryRun.default_rate_limit()
    }

    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest> {
        self.inner.prepare(batch)
    }

    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>> {
        let requests = self.inner.prepare(batch);
        let path = self.path.clone();
        let written = self.append(&requests);
        match written {
            Ok(()) => {
                tracing::info!(
                    requests = requests.len(),
                    records = batch.len(),
                    file = %path.display(),
                    "dry run: recorded the CRM requests instead of sending them"
                );
                batch.iter().map(|_| Ok(Delivered::default())).collect()
            }
            Err(e) => {
                let f =
                    Failure::Transient(format!("dry-run: cannot write {}: {e}", path.display()));
                batch.iter().map(|_| Err(f.clone())).collect()
            }
        }
    }
}
