//! Fit and engagement scores: points from rules, summed per group, capped.
//!
//! - Fit rules look at the lead's fields and address (`when = <condition>`).
//! - Engagement rules look at events: per event (`points` for each, newest `max_events`) or once
//!   a count is reached (`min_count`), optionally only within `within_days`. With
//!   `half_life_days`, each event's points halve every half-life (a threshold rule decays with
//!   its newest event), so old activity fades instead of counting forever.
//! - Points may be negative. A group's `cap` limits the group's sum; `cap` on `[fit]` or
//!   `[engagement]` limits the total. A cap shows in the breakdown as its own line, so the lines
//!   always add up to the score.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::condition::{self, Condition, Lead, RawCondition};
use super::explain::{Dimension, RuleHit};
use super::rules::{parse_kinds, Errors};
use super::state::{EngagementHistory, LOG_PER_KIND};
use crate::lead::EngagementKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFit {
    cap: Option<f64>,
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
    #[serde(default)]
    rules: Vec<RawFitRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    cap: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFitRule {
    name: String,
    group: Option<String>,
    points: f64,
    when: RawCondition,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngagement {
    half_life_days: Option<f64>,
    cap: Option<f64>,
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
    #[serde(default)]
    rules: Vec<RawEngagementRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngagementRule {
    name: String,
    group: Option<String>,
    points: f64,
    kinds: Vec<String>,
    within_days: Option<f64>,
    max_events: Option<usize>,
    min_count: Option<usize>,
}

#[derive(Debug)]
struct Group {
    name: String,
    cap: Option<f64>,
}

#[derive(Debug)]
struct FitRule {
    name: String,
    group: Option<usize>,
    points: f64,
    when: Condition,
}

/// `[fit]`, parsed.
#[derive(Debug, Default)]
pub(crate) struct FitModel {
    groups: Vec<Group>,
    cap: Option<f64>,
    rules: Vec<FitRule>,
}

#[derive(Debug)]
struct EngagementRule {
    name: String,
    group: Option<usize>,
    points: f64,
    kinds: Vec<EngagementKind>,
    within_days: Option<f64>,
    /// Per-event rules: how many of the newest matching events score.
    max_events: usize,
    /// Threshold rules: score once when this many events match.
    min_count: Option<usize>,
}

/// `[engagement]`, parsed.
#[derive(Debug, Default)]
pub(crate) struct EngagementModel {
    half_life_days: Option<f64>,
    groups: Vec<Group>,
    cap: Option<f64>,
    rules: Vec<EngagementRule>,
}

/// Age in days of an event at `at`, seen from `now`; events stamped in the future count as new.
pub(crate) fn age_days(now: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (now - at).num_milliseconds().max(0) as f64 / 86_400_000.0
}

impl FitModel {
    pub(crate) fn score(&self, lead: &Lead<'_>) -> (f64, Vec<RuleHit>) {
        let hits = self
            .rules
            .iter()
            .filter(|r| r.when.holds(lead))
            .map(|r| {
                (
                    r.group,
                    hit(
                        Dimension::Fit,
                        &r.name,
                        r.group,
                        &self.groups,
                        r.points,
                        None,
                    ),
                )
            })
            .collect();
        total(Dimension::Fit, &self.groups, self.cap, hits)
    }
}

impl EngagementModel {
    fn decay(&self, now: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
        match self.half_life_days {
            Some(h) => 0.5f64.powf(age_days(now, at) / h),
            None => 1.0,
        }
    }

    pub(crate) fn score(&self, h: &EngagementHistory, now: DateTime<Utc>) -> (f64, Vec<RuleHit>) {
        let mut hits = Vec::new();
        for r in &self.rules {
            let in_window = |at| r.within_days.is_none_or(|w| age_days(now, at) <= w);
            // Newest first.
            let matching = h
                .recent
                .iter()
                .rev()
                .filter(|e| r.kinds.contains(&e.kind) && in_window(e.at));
            let (points, detail) = match r.min_count {
                Some(n) => {
                    let (count, newest) = match r.within_days {
                        Some(_) => {
                            let evs: Vec<_> = matching.collect();
                            (evs.len() as u64, evs.first().map(|e| e.at))
                        }
                        // No window: the exact all-time counts.
                        None => (
                            r.kinds.iter().map(|k| h.count(*k)).sum(),
                            r.kinds
                                .iter()
                                .filter_map(|k| h.kinds.get(k).map(|s| s.last_at))
                                .max(),
                        ),
                    };
                    match newest {
                        Some(at) if count >= n as u64 => (
                            r.points * self.decay(now, at),
                            count_detail(count, r.within_days),
                        ),
                        _ => continue,
                    }
                }
                None => {
                    let mut n = 0u64;
                    let mut sum = 0.0;
                    for e in matching.take(r.max_events) {
                        n += 1;
                        sum += r.points * self.decay(now, e.at);
                    }
                    if n == 0 {
                        continue;
                    }
                    (sum, count_detail(n, r.within_days))
                }
            };
            hits.push((
                r.group,
                hit(
                    Dimension::Engagement,
                    &r.name,
                    r.group,
                    &self.groups,
                    points,
                    Some(detail),
                ),
            ));
        }
        total(Dimension::Engagement, &self.groups, self.cap, hits)
    }
}

fn count_detail(n: u64, within_days: Option<f64>) -> String {
    let events = if n == 1 { "event" } else { "events" };
    match within_days {
        Some(d) => format!("{n} {events} in {d} days"),
        None => format!("{n} {events}"),
    }
}

fn hit(
    score: Dimension,
    name: &str,
    group: Option<usize>,
    groups: &[Group],
    points: f64,
    detail: Option<String>,
) -> RuleHit {
    RuleHit {
        score,
        rule: name.to_string(),
        group: group.and_then(|g| groups.get(g)).map(|g| g.name.clone()),
        points,
        detail,
    }
}

/// Sums hits per group, applies group caps then the total cap, and adds a line for each cap that
/// took points away.
fn total(
    score: Dimension,
    groups: &[Group],
    cap: Option<f64>,
    hits: Vec<(Option<usize>, RuleHit)>,
) -> (f64, Vec<RuleHit>) {
    let mut sums = vec![0.0; groups.len()];
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(hits.len());
    for (g, h) in hits {
        match g.and_then(|g| sums.get_mut(g)) {
            Some(s) => *s += h.points,
            None => sum += h.points,
        }
        out.push(h);
    }
    for (g, s) in groups.iter().zip(sums.iter_mut()) {
        if let Some(c) = g.cap.filter(|c| *s > *c) {
            out.push(RuleHit {
                score,
                rule: format!("{} cap {c}", g.name),
                group: Some(g.name.clone()),
                points: c - *s,
                detail: None,
            });
            *s = c;
        }
        sum += *s;
    }
    if let Some(c) = cap.filter(|c| sum > *c) {
        out.push(RuleHit {
            score,
            rule: format!("total cap {c}"),
            group: None,
            points: c - sum,
            detail: None,
        });
        sum = c;
    }
    (sum, out)
}

fn build_groups(raw: &BTreeMap<String, RawGroup>, key: &str, errs: &mut Errors) -> Vec<Group> {
    raw.iter()
        .map(|(name, g)| {
            if let Some(c) = g.cap {
                positive(c, &format!("{key}.{name}.cap"), errs);
            }
            Group {
                name: name.clone(),
                cap: g.cap,
            }
        })
        .collect()
}

fn resolve_group(
    name: Option<&String>,
    groups: &[Group],
    key: &str,
    errs: &mut Errors,
) -> Option<usize> {
    let name = name?;
    let found = groups.iter().position(|g| &g.name == name);
    if found.is_none() {
        let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        errs.push(
            key,
            format!(
                "unknown group {name:?}; declare it under groups (declared: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    found
}

fn positive(v: f64, key: &str, errs: &mut Errors) -> bool {
    let ok = v.is_finite() && v > 0.0;
    if !ok {
        errs.push(key, format!("must be a positive number, not {v}"));
    }
    ok
}

fn finite(v: f64, key: &str, errs: &mut Errors) {
    if !v.is_finite() {
        errs.push(key, "must be a finite number");
    }
}

fn unique_name(name: &str, seen: &mut BTreeSet<String>, key: &str, errs: &mut Errors) {
    if name.trim().is_empty() {
        errs.push(key, "a rule needs a name: it is what the breakdown shows");
    } else if !seen.insert(name.to_string()) {
        errs.push(
            key,
            format!("two rules are named {name:?}; names must be unique"),
        );
    }
}

pub(crate) fn build_fit(raw: RawFit, errs: &mut Errors) -> FitModel {
    let groups = build_groups(&raw.groups, "fit.groups", errs);
    if let Some(c) = raw.cap {
        positive(c, "fit.cap", errs);
    }
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("fit.rules[{i}]");
        unique_name(&r.name, &mut seen, &format!("{key}.name"), errs);
        finite(r.points, &format!("{key}.points"), errs);
        let group = resolve_group(r.group.as_ref(), &groups, &format!("{key}.group"), errs);
        if let Some(when) = condition::build(&r.when, &format!("{key}.when"), errs) {
            rules.push(FitRule {
                name: r.name.clone(),
                group,
                points: r.points,
                when,
            });
        }
    }
    FitModel {
        groups,
        cap: raw.cap,
        rules,
    }
}

pub(crate) fn build_engagement(raw: RawEngagement, errs: &mut Errors) -> EngagementModel {
    let groups = build_groups(&raw.groups, "engagement.groups", errs);
    if let Some(c) = raw.cap {
        positive(c, "engagement.cap", errs);
    }
    if let Some(h) = raw.half_life_days {
        positive(h, "engagement.half_life_days", errs);
    }
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("engagement.rules[{i}]");
        unique_name(&r.name, &mut seen, &format!("{key}.name"), errs);
        finite(r.points, &format!("{key}.points"), errs);
        let group = resolve_group(r.group.as_ref(), &groups, &format!("{key}.group"), errs);
        let kinds = parse_kinds(&r.kinds, &format!("{key}.kinds"), errs);
        if r.kinds.is_empty() {
            errs.push(format!("{key}.kinds"), "list at least one engagement kind");
        }
        if let Some(w) = r.within_days {
            positive(w, &format!("{key}.within_days"), errs);
        }
        let limit = |v: usize, name: &str, errs: &mut Errors| {
            if v == 0 || v > LOG_PER_KIND {
                errs.push(
                    format!("{key}.{name}"),
                    format!(
                        "must be between 1 and {LOG_PER_KIND} (the events kept per kind), not {v}"
                    ),
                );
            }
        };
        if let Some(m) = r.max_events {
            limit(m, "max_events", errs);
        }
        if let Some(n) = r.min_count {
            limit(n, "min_count", errs);
        }
        if r.max_events.is_some() && r.min_count.is_some() {
            errs.push(
                key.clone(),
                "give max_events (score each event) or min_count (score once at a count), not both",
            );
        }
        rules.push(EngagementRule {
            name: r.name.clone(),
            group,
            points: r.points,
            kinds,
            within_days: r.within_days,
            max_events: r.max_events.unwrap_or(LOG_PER_KIND),
            min_count: r.min_count,
        });
    }
    EngagementModel {
        half_life_days: raw.half_life_days,
        groups,
        cap: raw.cap,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::{Email, Engagement};
    use crate::qualify::state::LeadState;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn model(text: &str) -> EngagementModel {
        let raw: RawEngagement = toml::from_str(text).unwrap();
        let mut errs = Errors::new("t");
        let m = build_engagement(raw, &mut errs);
        errs.finish(m).unwrap()
    }

    fn history(events: &[(EngagementKind, f64)]) -> EngagementHistory {
        let email = Email::parse("pat@acme-corp.io").unwrap();
        let mut s = LeadState::new(email.clone(), "x", "v", now());
        for (i, (kind, days_ago)) in events.iter().enumerate() {
            s.merge_engagement(&Engagement {
                email: email.clone(),
                kind: *kind,
                at: now() - TimeDelta::milliseconds((days_ago * 86_400_000.0) as i64),
                source: format!("s{i}"),
                detail: Default::default(),
            });
        }
        s.engagement
    }

    #[test]
    fn per_event_points_decay_by_half_each_half_life() {
        let m = model(
            "half_life_days = 30\n[[rules]]\nname = \"downloads\"\npoints = 10\nkinds = [\"content_download\"]",
        );
        let h = history(&[
            (EngagementKind::ContentDownload, 0.0),
            (EngagementKind::ContentDownload, 30.0),
            (EngagementKind::ContentDownload, 60.0),
        ]);
        let (score, hits) = m.score(&h, now());
        assert_eq!(score, 10.0 + 5.0 + 2.5);
        assert_eq!(hits[0].detail.as_deref(), Some("3 events"));
        // One half-life later everything has halved.
        let (later, _) = m.score(&h, now() + TimeDelta::days(30));
        assert_eq!(later, score / 2.0);
    }

    #[test]
    fn windows_max_events_and_thresholds() {
        let m = model(
            r#"
[groups]
email = { cap = 5 }
[[rules]]
name = "clicks"
group = "email"
points = 2
kinds = ["email_click"]
within_days = 30
[[rules]]
name = "first forms"
points = 10
kinds = ["form_submit"]
max_events = 2
[[rules]]
name = "binge"
points = 15
kinds = ["content_download", "webinar_signup"]
min_count = 3
within_days = 7
"#,
        );
        use EngagementKind::*;
        let h = history(&[
            (EmailClick, 1.0),
            (EmailClick, 2.0),
            (EmailClick, 3.0),
            (EmailClick, 40.0),
            (FormSubmit, 1.0),
            (FormSubmit, 2.0),
            (FormSubmit, 3.0),
            (ContentDownload, 1.0),
            (WebinarSignup, 2.0),
        ]);
        let (score, hits) = m.score(&h, now());
        let lines: Vec<(String, f64)> = hits.iter().map(|h| (h.rule.clone(), h.points)).collect();
        assert_eq!(
            lines,
            [
                ("clicks".to_string(), 6.0),
                ("first forms".to_string(), 20.0),
                ("email cap 5".to_string(), -1.0),
            ]
        );
        assert_eq!(score, 25.0);
        let more = history(&[
            (ContentDownload, 1.0),
            (WebinarSignup, 2.0),
            (ContentDownload, 6.0),
            (ContentDownload, 8.0),
        ]);
        let (score, hits) = m.score(&more, now());
        assert_eq!(score, 15.0);
        assert_eq!(hits[0].detail.as_deref(), Some("3 events in 7 days"));
    }

    #[test]
    fn bad_engagement_rules_are_reported() {
        let raw: RawEngagement = toml::from_str(
            r#"
half_life_days = 0
[[rules]]
name = "x"
group = "nope"
points = 1
kinds = ["click"]
max_events = 500
[[rules]]
name = "x"
points = 1
kinds = []
min_count = 2
max_events = 3
"#,
        )
        .unwrap();
        let mut errs = Errors::new("t");
        let m = build_engagement(raw, &mut errs);
        let errs = errs.finish(m).unwrap_err();
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.reason.split(';').next().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                ("engagement.half_life_days", "must be a positive number, not 0"),
                ("engagement.rules[0].group", "unknown group \"nope\""),
                ("engagement.rules[0].kinds[0]", "unknown engagement kind \"click\""),
                (
                    "engagement.rules[0].max_events",
                    "must be between 1 and 100 (the events kept per kind), not 500"
                ),
                ("engagement.rules[1].name", "two rules are named \"x\""),
                ("engagement.rules[1].kinds", "list at least one engagement kind"),
                (
                    "engagement.rules[1]",
                    "give max_events (score each event) or min_count (score once at a count), not both"
                ),
            ]
        );
    }
}
