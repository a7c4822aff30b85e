//! The outbox: one pending CRM update per lead, coalesced to the lead's newest state. The
//! pipeline writes a [`CrmUpdate`] in the same transaction as the lead state it snapshots;
//! the delivery worker sends it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lead::{Email, FieldName};

/// Why an update was queued (which ones are queued is configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    StageChanged,
    ScoreChanged,
    FieldsChanged,
}

/// A snapshot of one lead's newest state, as the CRM should see it. Sending it is an upsert, so
/// sending it twice is harmless; a newer snapshot replaces an older pending one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmUpdate {
    pub email: Email,
    /// Version of the lead state this snapshot was taken from; strictly increasing per lead.
    pub version: i64,
    /// The lead's merged fields.
    pub fields: BTreeMap<FieldName, Value>,
    /// Funnel stage name (as the rules file calls it) and its position in the funnel.
    pub stage: String,
    pub stage_rank: u32,
    /// CRM property -> value the rules give this stage for the configured connector
    /// (e.g. `lifecyclestage = "marketingqualifiedlead"`).
    pub stage_values: BTreeMap<String, String>,
    pub fit_score: i64,
    pub engagement_score: i64,
    pub score: i64,
    /// A short human reason for the stage ("fit 45 (VP title, 51-200 employees); asked for a demo").
    pub reason: String,
    pub disqualified: Option<String>,
    pub changes: Vec<Change>,
    /// When the lead reached this state (the decision's time): the time of the `lead.updated`
    /// event, the same on every retry. None in updates queued before leadgate recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}
