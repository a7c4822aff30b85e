//! [`LeadState`]: everything leadgate keeps about one lead between events, stored as JSON.
//!
//! Merging is designed so the result does not depend on the order events are processed in:
//! - a field keeps the value that wins by (source precedence, event time, value, source): a
//!   maximum, so merging is commutative and a late-arriving older value never overwrites a newer
//!   one;
//! - engagement events are a set (duplicates are recognised), counted per kind;
//! - scores and the stage are recomputed from this state by [`super::qualify`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::condition::is_empty_value;
use super::disqualify::DqReason;
use super::rules::Errors;
use crate::lead::{Email, Engagement, EngagementKind, FieldName, LeadPatch};

/// How many events of each kind the state keeps (the newest ones).
///
/// Why this bound is safe: a rule never needs more. Rules count at most `max_events` events
/// (default and upper limit: this number) and thresholds need at most `min_count` (also limited to
/// this number), both checked when the rules are parsed; all-time counts and first/last times are
/// kept exactly in [`KindStats`]. The newest N of the union of kinds is always within the newest N
/// of each kind, so multi-kind rules are exact too. With decay, events past the newest 100 of a
/// kind would in any case contribute next to nothing.
pub const LOG_PER_KIND: usize = 100;

/// How many stage changes the state keeps (the newest ones). A funnel has a handful of stages
/// and leads rarely move more than a few times; the CRM keeps its own full history.
pub const HISTORY_LIMIT: usize = 100;

/// One merged field: its value and where and when that value came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub value: Value,
    pub at: DateTime<Utc>,
    pub source: String,
}

/// `[fields]` as written: `precedence.<field> = ["source", ...]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFields {
    #[serde(default)]
    precedence: BTreeMap<String, Vec<String>>,
}

/// Per-field source precedence: for a listed field, a value from a source earlier in its list
/// wins over one from a later or unlisted source, whatever their times; among equals the newer
/// value wins.
#[derive(Debug, Default)]
pub(crate) struct FieldPrecedence(BTreeMap<FieldName, Vec<String>>);

impl FieldPrecedence {
    /// Higher wins; unlisted sources rank 0.
    fn rank(&self, field: &FieldName, source: &str) -> usize {
        self.0
            .get(field)
            .and_then(|list| {
                list.iter()
                    .position(|s| s == source)
                    .map(|i| list.len() - i)
            })
            .unwrap_or(0)
    }
}

pub(crate) fn build_precedence(raw: RawFields, errs: &mut Errors) -> FieldPrecedence {
    let mut out = BTreeMap::new();
    for (name, sources) in raw.precedence {
        let key = format!("fields.precedence.{name}");
        match FieldName::parse(&name) {
            Err(reason) => errs.push(key, reason),
            Ok(_) if sources.is_empty() => errs.push(key, "list at least one source"),
            Ok(f) => {
                out.insert(f, sources);
            }
        }
    }
    FieldPrecedence(out)
}

/// One engagement event as kept in the state. Its fields, in this order, are its identity and
/// sort order: the same event delivered twice is stored once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub at: DateTime<Utc>,
    pub kind: EngagementKind,
    pub source: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// All-time facts about one engagement kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    pub count: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// What the lead did: exact all-time counts and times per kind, plus the newest events of each
/// kind (at most [`LOG_PER_KIND`]) for windows and decay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngagementHistory {
    pub kinds: BTreeMap<EngagementKind, KindStats>,
    /// Oldest first.
    pub recent: Vec<LoggedEvent>,
}

impl EngagementHistory {
    pub fn count(&self, kind: EngagementKind) -> u64 {
        self.kinds.get(&kind).map_or(0, |s| s.count)
    }

    /// When the lead last did anything.
    pub fn last_at(&self) -> Option<DateTime<Utc>> {
        self.kinds.values().map(|s| s.last_at).max()
    }

    /// Adds one event; false if it was already recorded.
    ///
    /// An event older than all N kept events of its kind cannot be checked for being a duplicate;
    /// it is counted. That only happens when one lead has more than N events of a kind and an old
    /// one is delivered again; re-processing stored events should start from an empty state.
    fn add(&mut self, e: &Engagement) -> bool {
        let ev = LoggedEvent {
            at: e.at,
            kind: e.kind,
            source: e.source.clone(),
            detail: e.detail.clone(),
        };
        let pos = match self.recent.binary_search(&ev) {
            Ok(_) => return false,
            Err(pos) => pos,
        };
        let same_kind = self.recent.iter().filter(|x| x.kind == ev.kind).count();
        let oldest_same = self.recent.iter().position(|x| x.kind == ev.kind);
        match oldest_same {
            Some(i) if same_kind >= LOG_PER_KIND => {
                // Full: keep the newest N. `ev` sorts after the oldest (index i), so removing
                // index i after inserting at `pos` removes that oldest one.
                if ev > self.recent[i] {
                    self.recent.insert(pos, ev);
                    self.recent.remove(i);
                }
            }
            _ => self.recent.insert(pos, ev),
        }
        let stats = self.kinds.entry(e.kind).or_insert(KindStats {
            count: 0,
            first_at: e.at,
            last_at: e.at,
        });
        stats.count += 1;
        stats.first_at = stats.first_at.min(e.at);
        stats.last_at = stats.last_at.max(e.at);
        true
    }
}

/// What moved the lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCause {
    /// The lead is new.
    Created,
    /// The stage criteria (forward only).
    Rules,
    /// A disqualifier.
    Disqualified,
    /// A recycle rule (the one automatic backward move).
    Recycle,
    /// Sales set the stage in the CRM.
    Feedback,
}

/// One stage change, with why and under which rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageChange {
    pub from: Option<String>,
    pub to: String,
    pub at: DateTime<Utc>,
    pub cause: ChangeCause,
    pub reasons: Vec<String>,
    pub rules_version: String,
}

/// Why a lead is disqualified: every reason that has held (sorted, strongest first), and since
/// when. Sticky: reasons are only ever added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disqualification {
    pub reasons: Vec<DqReason>,
    pub since: DateTime<Utc>,
}

impl Disqualification {
    /// The reason to show (the strongest).
    pub fn primary(&self) -> Option<&DqReason> {
        self.reasons.first()
    }

    pub(crate) fn add(&mut self, more: &[DqReason]) {
        self.reasons.extend(more.iter().cloned());
        self.reasons.sort();
        self.reasons.dedup();
    }
}

/// Everything leadgate keeps about one lead (key: the normalised email). Serialised as JSON in
/// the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadState {
    pub email: Email,
    pub fields: BTreeMap<FieldName, FieldValue>,
    pub engagement: EngagementHistory,
    /// Scores as of `scored_at` (engagement decays, so it is recomputed on every decision).
    pub fit_score: f64,
    pub engagement_score: f64,
    pub scored_at: DateTime<Utc>,
    /// The stage's name as the rules file calls it.
    pub stage: String,
    pub stage_since: DateTime<Utc>,
    /// Newest last; at most [`HISTORY_LIMIT`] entries.
    pub history: Vec<StageChange>,
    pub disqualification: Option<Disqualification>,
    /// Set by a recycle (or a backward move by sales): the lead moves forward again only on
    /// activity newer than this, so it does not bounce straight back to where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycled_at: Option<DateTime<Utc>>,
    /// The rules version of the last decision.
    pub rules_version: String,
}

impl LeadState {
    pub(crate) fn new(email: Email, stage: &str, rules_version: &str, now: DateTime<Utc>) -> Self {
        LeadState {
            email,
            fields: BTreeMap::new(),
            engagement: EngagementHistory::default(),
            fit_score: 0.0,
            engagement_score: 0.0,
            scored_at: now,
            stage: stage.to_string(),
            stage_since: now,
            history: Vec::new(),
            disqualification: None,
            recycled_at: None,
            rules_version: rules_version.to_string(),
        }
    }

    /// Merges one patch's fields; true if any merged value changed. Empty values are ignored.
    pub(crate) fn merge_patch(&mut self, prec: &FieldPrecedence, patch: &LeadPatch) -> bool {
        let mut changed = false;
        for (field, value) in &patch.fields {
            if is_empty_value(value) {
                continue;
            }
            let candidate = FieldValue {
                value: value.clone(),
                at: patch.at,
                source: patch.source.clone(),
            };
            let wins = match self.fields.get(field) {
                None => true,
                Some(cur) => compare(prec, field, &candidate, cur) == Ordering::Greater,
            };
            if wins {
                changed |= self.fields.get(field).map(|c| &c.value) != Some(value);
                self.fields.insert(field.clone(), candidate);
            }
        }
        changed
    }

    /// Records one engagement event; false if it was a duplicate.
    pub(crate) fn merge_engagement(&mut self, e: &Engagement) -> bool {
        self.engagement.add(e)
    }

    pub(crate) fn push_change(&mut self, change: StageChange) {
        self.stage = change.to.clone();
        self.stage_since = change.at;
        self.history.push(change);
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }
}

/// Total order on candidate values of one field: precedence, then time, then (for equal times)
/// the value's JSON text and the source, so ties resolve the same way in every order.
fn compare(prec: &FieldPrecedence, field: &FieldName, a: &FieldValue, b: &FieldValue) -> Ordering {
    prec.rank(field, &a.source)
        .cmp(&prec.rank(field, &b.source))
        .then(a.at.cmp(&b.at))
        .then_with(|| a.value.to_string().cmp(&b.value.to_string()))
        .then_with(|| a.source.cmp(&b.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn email() -> Email {
        Email::parse("pat@acme-corp.io").unwrap()
    }

    fn patch(field: &str, v: Value, at: i64, source: &str) -> LeadPatch {
        LeadPatch {
            email: email(),
            fields: [(FieldName::parse(field).unwrap(), v)]
                .into_iter()
                .collect(),
            at: t(at),
            source: source.into(),
        }
    }

    fn ev(kind: EngagementKind, at: i64) -> Engagement {
        Engagement {
            email: email(),
            kind,
            at: t(at),
            source: "s".into(),
            detail: BTreeMap::new(),
        }
    }

    fn value(s: &LeadState, f: &str) -> Value {
        s.fields[&FieldName::parse(f).unwrap()].value.clone()
    }

    #[test]
    fn newer_non_empty_values_win_in_any_order() {
        let prec = FieldPrecedence::default();
        let patches = [
            patch("job_title", json!("Manager"), 10, "a"),
            patch("job_title", json!("VP Sales"), 20, "b"),
            patch("job_title", json!(""), 30, "c"),
            patch("job_title", Value::Null, 40, "c"),
        ];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
            let mut s = LeadState::new(email(), "subscriber", "v", t(0));
            for i in order {
                s.merge_patch(&prec, &patches[i]);
            }
            assert_eq!(value(&s, "job_title"), json!("VP Sales"), "{order:?}");
            assert_eq!(
                s.fields[&FieldName::parse("job_title").unwrap()].source,
                "b"
            );
        }
    }

    #[test]
    fn equal_times_break_ties_by_value_then_source() {
        let prec = FieldPrecedence::default();
        let a = patch("country", json!("DE"), 10, "a");
        let b = patch("country", json!("AT"), 10, "b");
        let mut s1 = LeadState::new(email(), "x", "v", t(0));
        s1.merge_patch(&prec, &a);
        s1.merge_patch(&prec, &b);
        let mut s2 = LeadState::new(email(), "x", "v", t(0));
        s2.merge_patch(&prec, &b);
        s2.merge_patch(&prec, &a);
        assert_eq!(s1, s2);
        assert_eq!(value(&s1, "country"), json!("DE"));
    }

    #[test]
    fn source_precedence_beats_time_for_listed_fields_only() {
        let raw: RawFields =
            toml::from_str("[precedence]\njob_title = [\"salesforce\", \"typeform\"]").unwrap();
        let mut errs = Errors::new("t");
        let prec = build_precedence(raw, &mut errs);
        let prec = errs.finish(prec).unwrap();
        let mut s = LeadState::new(email(), "x", "v", t(0));
        s.merge_patch(&prec, &patch("job_title", json!("CTO"), 10, "salesforce"));
        assert!(!s.merge_patch(&prec, &patch("job_title", json!("Dev"), 20, "typeform")));
        assert!(!s.merge_patch(&prec, &patch("job_title", json!("Dev"), 30, "tally")));
        assert_eq!(value(&s, "job_title"), json!("CTO"));
        s.merge_patch(&prec, &patch("country", json!("US"), 10, "salesforce"));
        assert!(s.merge_patch(&prec, &patch("country", json!("CA"), 20, "tally")));
        assert_eq!(value(&s, "country"), json!("CA"));
    }

    #[test]
    fn unknown_precedence_fields_are_reported() {
        let raw: RawFields =
            toml::from_str("[precedence]\njobtitle = [\"crm\"]\ncountry = []").unwrap();
        let mut errs = Errors::new("t");
        let p = build_precedence(raw, &mut errs);
        let errs = errs.finish(p).unwrap_err();
        assert_eq!(errs[0].key, "fields.precedence.country");
        assert_eq!(errs[1].key, "fields.precedence.jobtitle");
        assert!(errs[1].reason.contains("unknown field"));
    }

    #[test]
    fn duplicate_events_count_once_and_the_log_is_bounded() {
        let mut h = EngagementHistory::default();
        assert!(h.add(&ev(EngagementKind::EmailOpen, 5)));
        assert!(!h.add(&ev(EngagementKind::EmailOpen, 5)));
        for i in 0..(LOG_PER_KIND as i64 + 20) {
            h.add(&ev(EngagementKind::EmailClick, 1000 - i));
        }
        assert_eq!(h.count(EngagementKind::EmailOpen), 1);
        assert_eq!(
            h.count(EngagementKind::EmailClick),
            LOG_PER_KIND as u64 + 20
        );
        let clicks: Vec<&LoggedEvent> = h
            .recent
            .iter()
            .filter(|e| e.kind == EngagementKind::EmailClick)
            .collect();
        assert_eq!(clicks.len(), LOG_PER_KIND);
        // The newest N are kept.
        assert_eq!(clicks[0].at, t(1000 - LOG_PER_KIND as i64 + 1));
        assert_eq!(clicks[clicks.len() - 1].at, t(1000));
        assert!(h.recent.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(h.kinds[&EngagementKind::EmailClick].first_at, t(1000 - 119));
        assert_eq!(h.last_at(), Some(t(1000)));
    }

    #[test]
    fn the_bounded_log_is_the_same_in_any_order() {
        let events: Vec<Engagement> = (0..(LOG_PER_KIND as i64 + 30))
            .map(|i| ev(EngagementKind::EmailOpen, (i * 7919) % 1000))
            .collect();
        let mut a = EngagementHistory::default();
        events.iter().for_each(|e| {
            a.add(e);
        });
        let mut b = EngagementHistory::default();
        events.iter().rev().for_each(|e| {
            b.add(e);
        });
        assert_eq!(a, b);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = LeadState::new(email(), "lead", "abc", t(0));
        s.merge_patch(
            &FieldPrecedence::default(),
            &patch("country", json!("US"), 1, "a"),
        );
        s.merge_engagement(&ev(EngagementKind::FormSubmit, 2));
        s.disqualification = Some(Disqualification {
            reasons: vec![DqReason {
                code: super::super::disqualify::DqCode::Unsubscribe,
                detail: String::new(),
            }],
            since: t(3),
        });
        let json = serde_json::to_string(&s).unwrap();
        let back: LeadState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(json.contains("\"form_submit\":{\"count\":1"), "{json}");
    }
}
