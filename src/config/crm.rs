//! `[crm]`: which CRM connector delivers lead updates, and its settings.
//! (Only `kind` so far; the delivery work adds the connector settings.)

use serde::Deserialize;

use super::EnvVars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrmKind {
    Hubspot,
    Salesforce,
    Pipedrive,
    Webhook,
    DryRun,
}

impl CrmKind {
    /// The name used in the settings and in rules files' per-connector stage values.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Hubspot => "hubspot",
            CrmKind::Salesforce => "salesforce",
            CrmKind::Pipedrive => "pipedrive",
            CrmKind::Webhook => "webhook",
            CrmKind::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CrmConfig {
    pub kind: CrmKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrm {
    #[serde(default = "dry_run")]
    kind: CrmKind,
}

fn dry_run() -> CrmKind {
    CrmKind::DryRun
}

/// Parses the `[crm]` table; errors are `(dotted key, reason)`.
pub(super) fn parse(table: toml::Table, _env: &EnvVars) -> Result<CrmConfig, (String, String)> {
    let raw: RawCrm = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| (format!("crm.{}", e.path()), e.inner().message().to_string()))?;
    Ok(CrmConfig { kind: raw.kind })
}
