//! Outputs: the `[[lead]]` and `[[engagement]]` blocks of a mapping file, compiled, and how they
//! turn one event into lead patches and engagement events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::condition::Condition;
use super::field::{one_value, FieldSpec};
use super::selector::{Scope, Selector};
use super::transform::{parse_datetime, text, DateFormat};
use crate::lead::{Email, Engagement, EngagementKind, FieldName, LeadPatch, Mapped};

/// What a block needs besides its own values: when it applies and to which items.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// How the block is named in reasons: `lead`, `engagement[2]`.
    pub key: String,
    pub when: Option<Condition>,
    pub for_each: Option<Selector>,
    pub email: FieldSpec,
    /// The provider's time for this output; the event's `received_at` when absent or empty.
    pub at: Option<FieldSpec>,
}

#[derive(Debug, Clone)]
pub(crate) struct LeadOutput {
    pub block: Block,
    pub fields: Vec<(FieldName, FieldSpec)>,
}

#[derive(Debug, Clone)]
pub(crate) struct EngagementOutput {
    pub block: Block,
    pub kind: EngagementKind,
    pub detail: Vec<(String, FieldSpec)>,
}

/// A reason an event cannot be mapped: which key, and why (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub key: String,
    pub reason: String,
}

fn fail(key: impl Into<String>, reason: impl Into<String>) -> Failure {
    Failure {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The items a block runs for: the event itself, or each node its `for_each` matches (a single
/// matched list is iterated, so `for_each = "$"` walks a JSON array body).
fn items<'a>(block: &Block, scope: Scope<'a>) -> Vec<Scope<'a>> {
    let Some(sel) = &block.for_each else {
        return vec![scope];
    };
    let nodes = sel.query(scope);
    let nodes: Vec<&Value> = match nodes.as_slice() {
        [Value::Array(list)] => list.iter().collect(),
        _ => nodes,
    };
    nodes.into_iter().map(|n| scope.with_item(n)).collect()
}

/// Adds " (item N)" to a reason when the block runs per item, so a batch names the bad one.
fn at_item(reason: String, block: &Block, index: usize) -> String {
    if block.for_each.is_some() {
        format!("{reason} (item {index})")
    } else {
        reason
    }
}

impl Block {
    fn email(&self, scope: Scope<'_>, index: usize) -> Result<Email, Failure> {
        let key = format!("{}.email", self.key);
        let found = self
            .email
            .eval(scope)
            .map_err(|e| fail(&key, at_item(e, self, index)))?;
        let Some(v) = found else {
            let why = self.email.nothing_reason(scope).to_string();
            return Err(fail(key, at_item(why, self, index)));
        };
        let s = text(&v).ok().flatten().ok_or_else(|| {
            fail(
                &key,
                at_item("not a valid email address".into(), self, index),
            )
        })?;
        Email::parse(&s).map_err(|e| fail(&key, at_item(e.to_string(), self, index)))
    }

    fn at(
        &self,
        scope: Scope<'_>,
        index: usize,
        received_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Failure> {
        let Some(spec) = &self.at else {
            return Ok(received_at);
        };
        let key = format!("{}.at", self.key);
        match spec.eval(scope) {
            Ok(Some(v)) => parse_datetime(&v, &DateFormat::Auto)
                .map_err(|e| fail(key, at_item(e, self, index))),
            Ok(None) => Ok(received_at),
            Err(e) => Err(fail(key, at_item(e, self, index))),
        }
    }
}

impl LeadOutput {
    pub fn run(
        &self,
        scope: Scope<'_>,
        source: &str,
        received_at: DateTime<Utc>,
        out: &mut Mapped,
    ) -> Result<(), Failure> {
        let b = &self.block;
        for (index, item) in items(b, scope).into_iter().enumerate() {
            if b.when.as_ref().is_some_and(|c| !c.holds(item)) {
                continue;
            }
            let email = b.email(item, index)?;
            let at = b.at(item, index, received_at)?;
            let mut fields = BTreeMap::new();
            for (name, spec) in &self.fields {
                let key = || format!("{}.fields.{name}", b.key);
                let v = spec
                    .eval(item)
                    .and_then(|v| v.map(one_value).transpose().map(Option::flatten))
                    .map_err(|e| fail(key(), at_item(e, b, index)))?;
                if let Some(v) = v {
                    fields.insert(name.clone(), v);
                }
            }
            out.leads.push(LeadPatch {
                email,
                fields,
                at,
                source: source.to_string(),
            });
        }
        Ok(())
    }
}

impl EngagementOutput {
    pub fn run(
        &self,
        scope: Scope<'_>,
        source: &str,
        received_at: DateTime<Utc>,
        out: &mut Mapped,
    ) -> Result<(), Failure> {
        let b = &self.block;
        for (index, item) in items(b, scope).into_iter().enumerate() {
            if b.when.as_ref().is_some_and(|c| !c.holds(item)) {
                continue;
            }
            let email = b.email(item, index)?;
            let at = b.at(item, index, received_at)?;
            let mut detail = BTreeMap::new();
            for (name, spec) in &self.detail {
                let key = || format!("{}.detail.{name}", b.key);
                let v = spec
                    .eval(item)
                    .and_then(|v| v.map(one_value).transpose().map(Option::flatten))
                    .map_err(|e| fail(key(), at_item(e, b, index)))?;
                if let Some(s) = v.and_then(|v| text(&v).ok().flatten()) {
                    detail.insert(name.clone(), s);
                }
            }
            out.engagements.push(Engagement {
                email,
                kind: self.kind,
                at,
                source: source.to_string(),
                detail,
            });
        }
        Ok(())
    }
}
