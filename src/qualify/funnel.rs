//! The funnel: an ordered list of stages (position = rank), who owns each, the criteria to enter
//! it, and the value each stage becomes in each CRM connector; plus BANT and recycle rules.
//!
//! How a lead moves (see [`super::qualify`]):
//! - a stage with `enter` criteria is reached automatically; the lead goes to the highest-ranked
//!   such stage whose criteria hold, and only ever forwards;
//! - stages without `enter` (after the first) are set by sales feedback only; from the first of
//!   them on, the lead is in sales' hands: disqualifiers are noted but do not move it, and any
//!   automatic stage ranked there must `requires_stage` it, so leadgate never skips sales' decision;
//! - the disqualified stage is last and entered only through disqualifiers (or sales);
//! - recycle rules are the one automatic backward move, and say why.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::condition::{self, Condition, Lead, RawCondition};
use super::explain::whole;
use super::rules::{parse_kinds, Errors};
use super::score::age_days;
use super::state::{EngagementHistory, LOG_PER_KIND};
use crate::config::CrmKind;
use crate::lead::EngagementKind;

/// The CRM connector names stage values may be given for ([`CrmKind::as_str`]).
const CONNECTORS: &[CrmKind] = &[
    CrmKind::Hubspot,
    CrmKind::Salesforce,
    CrmKind::Pipedrive,
    CrmKind::Webhook,
    CrmKind::DryRun,
];

/// Who works a lead in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    Marketing,
    Sales,
}

/// A stage's position in the funnel; only ever made from a valid index of one [`Funnel`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StageId(usize);

impl StageId {
    /// 0 for the first stage.
    pub(crate) fn rank(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

/// One stage of the funnel.
#[derive(Debug)]
pub struct StageDef {
    pub name: String,
    /// How people write it ("MQL"); defaults to the name.
    pub label: String,
    pub owner: Owner,
    /// The agreed definition in words.
    pub description: Option<String>,
    pub(crate) enter: Option<Criteria>,
    /// Connector name -> CRM property -> value.
    pub(crate) crm: BTreeMap<String, BTreeMap<String, String>>,
}

impl StageDef {
    /// Reached by rules (it has `enter` criteria) rather than set by sales.
    pub fn is_automatic(&self) -> bool {
        self.enter.is_some()
    }

    /// CRM property values for this stage in one connector (empty if the rules give none).
    pub fn crm_values(&self, crm: CrmKind) -> BTreeMap<String, String> {
        self.crm.get(crm.as_str()).cloned().unwrap_or_default()
    }
}

/// A criterion that held; explanations are built from these.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Met {
    Fit {
        value: f64,
        min: f64,
    },
    Engagement {
        value: f64,
        min: f64,
    },
    Score {
        value: f64,
        min: f64,
    },
    Bant {
        held: Vec<String>,
        defined: usize,
        threshold: usize,
    },
    Events {
        kinds: Vec<String>,
        count: u64,
        within_days: Option<f64>,
    },
    Condition,
    Reached(String),
}

/// What stage criteria look at.
pub(crate) struct Facts<'a> {
    pub lead: &'a Lead<'a>,
    pub history: &'a EngagementHistory,
    pub fit: f64,
    pub engagement: f64,
    pub bant: Option<&'a BantOutcome>,
    pub current: StageId,
    pub now: DateTime<Utc>,
}

/// Criteria to enter a stage: every given item must hold, and one of `any_of` if given.
#[derive(Debug, Default)]
pub(crate) struct Criteria {
    fit_min: Option<f64>,
    engagement_min: Option<f64>,
    score_min: Option<f64>,
    bant: bool,
    events: Option<EventCriterion>,
    when: Option<Condition>,
    requires_stage: Option<(StageId, String)>,
    any_of: Vec<Criteria>,
}

#[derive(Debug)]
struct EventCriterion {
    kinds: Vec<EngagementKind>,
    within_days: Option<f64>,
    min_count: u64,
}

impl Criteria {
    /// What held, if everything required did.
    pub(crate) fn check(&self, f: &Facts<'_>) -> Option<Vec<Met>> {
        let mut met = Vec::new();
        let score = f.fit + f.engagement;
        if let Some(min) = self.fit_min {
            if f.fit < min {
                return None;
            }
            met.push(Met::Fit { value: f.fit, min });
        }
        if let Some(min) = self.engagement_min {
            if f.engagement < min {
                return None;
            }
            met.push(Met::Engagement {
                value: f.engagement,
                min,
            });
        }
        if let Some(min) = self.score_min {
            if score < min {
                return None;
            }
            met.push(Met::Score { value: score, min });
        }
        if self.bant {
            let b = f.bant.filter(|b| b.met)?;
            met.push(Met::Bant {
                held: b.held.clone(),
                defined: b.defined,
                threshold: b.threshold,
            });
        }
        if let Some(ev) = &self.events {
            met.push(ev.check(f.history, f.now)?);
        }
        if let Some(c) = &self.when {
            if !c.holds(f.lead) {
                return None;
            }
            met.push(Met::Condition);
        }
        if let Some((id, name)) = &self.requires_stage {
            if f.current < *id {
                return None;
            }
            met.push(Met::Reached(name.clone()));
        }
        if !self.any_of.is_empty() {
            met.extend(self.any_of.iter().find_map(|a| a.check(f))?);
        }
        Some(met)
    }

    fn is_empty(&self) -> bool {
        self.fit_min.is_none()
            && self.engagement_min.is_none()
            && self.score_min.is_none()
            && !self.bant
            && self.events.is_none()
            && self.when.is_none()
            && self.requires_stage.is_none()
            && self.any_of.is_empty()
    }
}

impl EventCriterion {
    fn check(&self, h: &EngagementHistory, now: DateTime<Utc>) -> Option<Met> {
        let mut seen: BTreeSet<EngagementKind> = BTreeSet::new();
        let count = match self.within_days {
            Some(w) => {
                let mut n = 0;
                for e in h
                    .recent
                    .iter()
                    .filter(|e| self.kinds.contains(&e.kind) && age_days(now, e.at) <= w)
                {
                    n += 1;
                    seen.insert(e.kind);
                }
                n
            }
            None => {
                seen.extend(self.kinds.iter().filter(|k| h.count(**k) > 0));
                self.kinds.iter().map(|k| h.count(*k)).sum()
            }
        };
        (count >= self.min_count).then(|| Met::Events {
            kinds: seen.iter().map(|k| k.as_str().to_string()).collect(),
            count,
            within_days: self.within_days,
        })
    }
}

/// BANT: budget, authority, need and timeline, each a condition; `threshold` of the defined
/// ones must hold.
#[derive(Debug)]
pub(crate) struct Bant {
    threshold: usize,
    parts: Vec<(&'static str, Condition)>,
}

/// How a lead does on BANT.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BantOutcome {
    /// The criteria that hold, in B-A-N-T order.
    pub held: Vec<String>,
    /// How many criteria the rules define.
    pub defined: usize,
    pub threshold: usize,
    pub met: bool,
}

impl Bant {
    pub(crate) fn evaluate(&self, lead: &Lead<'_>) -> BantOutcome {
        let held: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, c)| c.holds(lead))
            .map(|(n, _)| n.to_string())
            .collect();
        BantOutcome {
            met: held.len() >= self.threshold,
            held,
            defined: self.parts.len(),
            threshold: self.threshold,
        }
    }
}

/// An explicit backward move: from one of `from` to `to` when all given conditions hold.
#[derive(Debug)]
pub(crate) struct RecycleRule {
    pub name: String,
    from: Vec<StageId>,
    pub to: StageId,
    inactive_days: Option<f64>,
    engagement_below: Option<f64>,
    when: Option<Condition>,
}

impl RecycleRule {
    fn check(&self, f: &Facts<'_>) -> Option<Vec<String>> {
        if !self.from.contains(&f.current) {
            return None;
        }
        let mut why = Vec::new();
        if let Some(days) = self.inactive_days {
            match f.history.last_at().map(|t| age_days(f.now, t)) {
                Some(idle) if idle < days => return None,
                Some(idle) => why.push(format!("no activity for {} days", idle.floor())),
                None => why.push("no activity at all".to_string()),
            }
        }
        if let Some(below) = self.engagement_below {
            if f.engagement >= below {
                return None;
            }
            why.push(format!("engagement {} < {below}", whole(f.engagement)));
        }
        if let Some(c) = &self.when {
            if !c.holds(f.lead) {
                return None;
            }
            why.push("field condition holds".to_string());
        }
        Some(why)
    }
}

/// The parsed funnel.
#[derive(Debug, Default)]
pub(crate) struct Funnel {
    stages: Vec<StageDef>,
    disqualified: StageId,
    /// The first stage only sales sets; from here on the lead is in sales' hands.
    sales_from: Option<StageId>,
    bant: Option<Bant>,
    recycle: Vec<RecycleRule>,
}

impl Funnel {
    pub(crate) fn stages(&self) -> &[StageDef] {
        &self.stages
    }

    pub(crate) fn id(&self, name: &str) -> Option<StageId> {
        self.stages.iter().position(|s| s.name == name).map(StageId)
    }

    /// Valid for ids of this funnel (the only ones that exist).
    pub(crate) fn get(&self, id: StageId) -> &StageDef {
        &self.stages[id.0]
    }

    pub(crate) fn initial(&self) -> StageId {
        StageId(0)
    }

    pub(crate) fn disqualified(&self) -> StageId {
        self.disqualified
    }

    pub(crate) fn bant(&self) -> Option<&Bant> {
        self.bant.as_ref()
    }

    /// In sales' hands: disqualifiers do not move the lead.
    pub(crate) fn protected(&self, id: StageId) -> bool {
        id != self.disqualified && self.sales_from.is_some_and(|s| id >= s)
    }

    /// The highest-ranked automatic stage whose criteria hold.
    pub(crate) fn target(&self, f: &Facts<'_>) -> Option<(StageId, Vec<Met>)> {
        self.stages
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| StageId(*i) != self.disqualified)
            .find_map(|(i, s)| Some((StageId(i), s.enter.as_ref()?.check(f)?)))
    }

    /// The stages some recycle rule moves leads out of (the pipeline re-checks leads there).
    pub(crate) fn recycle_sources(&self) -> Vec<&str> {
        let mut ids: Vec<StageId> = self
            .recycle
            .iter()
            .flat_map(|r| r.from.iter().copied())
            .collect();
        ids.sort_by_key(|id| id.0);
        ids.dedup();
        ids.into_iter()
            .map(|id| self.get(id).name.as_str())
            .collect()
    }

    /// The first recycle rule that applies.
    pub(crate) fn recycle(&self, f: &Facts<'_>) -> Option<(&RecycleRule, Vec<String>)> {
        self.recycle
            .iter()
            .find_map(|r| r.check(f).map(|why| (r, why)))
    }

    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        names.join(", ")
    }
}

// ---- the file's shape ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStage {
    name: String,
    label: Option<String>,
    owner: Owner,
    description: Option<String>,
    enter: Option<RawCriteria>,
    #[serde(default)]
    crm: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriteria {
    fit_min: Option<f64>,
    engagement_min: Option<f64>,
    score_min: Option<f64>,
    bant: Option<bool>,
    events: Option<RawEvents>,
    when: Option<RawCondition>,
    requires_stage: Option<String>,
    #[serde(default)]
    any_of: Vec<RawCriteria>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    kinds: Vec<String>,
    within_days: Option<f64>,
    min_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBant {
    threshold: usize,
    budget: Option<RawCondition>,
    authority: Option<RawCondition>,
    need: Option<RawCondition>,
    timeline: Option<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecycle {
    name: String,
    from: Vec<String>,
    to: String,
    inactive_days: Option<f64>,
    engagement_below: Option<f64>,
    when: Option<RawCondition>,
}

/// Name lookups while building.
struct Names<'a>(&'a [RawStage]);

impl Names<'_> {
    fn resolve(&self, name: &str, key: &str, errs: &mut Errors) -> Option<StageId> {
        let found = self.0.iter().position(|s| s.name == name).map(StageId);
        if found.is_none() {
            let all: Vec<&str> = self.0.iter().map(|s| s.name.as_str()).collect();
            errs.push(
                key,
                format!("unknown stage {name:?}; the stages are {}", all.join(", ")),
            );
        }
        found
    }
}

fn valid_stage_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 40
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

pub(crate) fn build(
    disqualified_stage: &str,
    raw: Vec<RawStage>,
    raw_bant: Option<RawBant>,
    raw_recycle: Vec<RawRecycle>,
    errs: &mut Errors,
) -> Funnel {
    let names = Names(&raw);
    let mut seen = BTreeSet::new();
    for (i, s) in raw.iter().enumerate() {
        if !valid_stage_name(&s.name) {
            errs.push(
                format!("stages[{i}].name"),
                format!(
                    "{:?} is not a stage name: lower-case letters, digits, _ and -, starting with a letter",
                    s.name
                ),
            );
        } else if !seen.insert(s.name.as_str()) {
            errs.push(
                format!("stages[{i}].name"),
                format!("stage {:?} is listed twice", s.name),
            );
        }
    }
    if raw.len() < 2 {
        errs.push(
            "stages",
            "list the funnel's stages in order: at least the first stage and the disqualified stage",
        );
        return Funnel::default();
    }
    let disqualified = names
        .resolve(disqualified_stage, "disqualified_stage", errs)
        .unwrap_or(StageId(raw.len() - 1));
    if disqualified.0 != raw.len() - 1 {
        errs.push(
            "disqualified_stage",
            format!(
                "{disqualified_stage:?} must be the last stage, so moving forward never leaves it"
            ),
        );
    }
    if raw[disqualified.0].enter.is_some() {
        errs.push(
            format!("stages[{}].enter", disqualified.0),
            "the disqualified stage is entered through [disqualify], not enter criteria",
        );
    }
    if raw[0].enter.is_some() {
        errs.push(
            "stages[0].enter",
            "the first stage is where every lead starts; it takes no enter criteria",
        );
    }
    let bant = raw_bant.and_then(|b| build_bant(b, errs));

    let sales_from = raw
        .iter()
        .enumerate()
        .skip(1)
        .find(|(i, s)| *i != disqualified.0 && s.enter.is_none())
        .map(|(i, _)| StageId(i));

    let mut stages = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let key = format!("stages[{i}]");
        for connector in s.crm.keys() {
            if !CONNECTORS.iter().any(|c| c.as_str() == connector) {
                let all: Vec<&str> = CONNECTORS.iter().map(|c| c.as_str()).collect();
                errs.push(
                    format!("{key}.crm.{connector}"),
                    format!("unknown CRM connector; expected one of {}", all.join(", ")),
                );
            }
        }
        let ctx = Ctx {
            names: &names,
            this: StageId(i),
            has_bant: bant.is_some(),
        };
        let enter = s.enter.as_ref().map(|c| {
            let key = format!("{key}.enter");
            let built = build_criteria(c, &key, &ctx, errs);
            if built.is_empty() {
                errs.push(
                    key.clone(),
                    "no criteria: every lead would enter; remove enter to make the stage sales-set",
                );
            }
            if let Some(sf) = sales_from.filter(|sf| StageId(i) > *sf) {
                if built.requires_stage.as_ref().is_none_or(|(r, _)| *r < sf) {
                    let sales_stage = &raw[sf.0].name;
                    errs.push(
                        key,
                        format!(
                            "ranks after {sales_stage:?}, which only sales sets; add \
                             requires_stage = {sales_stage:?} (or a later stage) so leadgate \
                             never skips sales' decision"
                        ),
                    );
                }
            }
            built
        });
        stages.push(StageDef {
            name: s.name.clone(),
            label: s.label.clone().unwrap_or_else(|| s.name.clone()),
            owner: s.owner,
            description: s.description.clone(),
            enter,
            crm: s.crm.clone(),
        });
    }
    check_threshold_order(&stages, errs);

    let recycle = raw_recycle
        .iter()
        .enumerate()
        .filter_map(|(i, r)| build_recycle(r, &format!("recycle[{i}]"), &names, disqualified, errs))
        .collect();

    Funnel {
        stages,
        disqualified,
        sales_from,
        bant,
        recycle,
    }
}

struct Ctx<'a> {
    names: &'a Names<'a>,
    this: StageId,
    has_bant: bool,
}

fn build_criteria(raw: &RawCriteria, key: &str, ctx: &Ctx<'_>, errs: &mut Errors) -> Criteria {
    for (name, v) in [
        ("fit_min", raw.fit_min),
        ("engagement_min", raw.engagement_min),
        ("score_min", raw.score_min),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            errs.push(format!("{key}.{name}"), "must be a finite number");
        }
    }
    let bant = raw.bant.unwrap_or(false);
    if bant && !ctx.has_bant {
        errs.push(
            format!("{key}.bant"),
            "uses BANT, but the rules have no [bant] section",
        );
    }
    let events = raw.events.as_ref().map(|e| {
        let k = format!("{key}.events");
        if e.kinds.is_empty() {
            errs.push(format!("{k}.kinds"), "list at least one engagement kind");
        }
        if e.within_days.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            errs.push(format!("{k}.within_days"), "must be a positive number");
        }
        let min_count = e.min_count.unwrap_or(1);
        if min_count == 0 || (e.within_days.is_some() && min_count > LOG_PER_KIND as u64) {
            errs.push(
                format!("{k}.min_count"),
                format!("must be between 1 and {LOG_PER_KIND} (the events kept per kind)"),
            );
        }
        EventCriterion {
            kinds: parse_kinds(&e.kinds, &format!("{k}.kinds"), errs),
            within_days: e.within_days,
            min_count,
        }
    });
    let when = raw
        .when
        .as_ref()
        .and_then(|c| condition::build(c, &format!("{key}.when"), errs));
    let requires_stage = raw.requires_stage.as_ref().and_then(|name| {
        let k = format!("{key}.requires_stage");
        let id = ctx.names.resolve(name, &k, errs)?;
        if id >= ctx.this {
            errs.push(
                k,
                format!("{name:?} must be an earlier stage than this one"),
            );
            return None;
        }
        Some((id, name.clone()))
    });
    let any_of = raw
        .any_of
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let k = format!("{key}.any_of[{i}]");
            let c = build_criteria(a, &k, ctx, errs);
            if c.is_empty() {
                errs.push(k, "an empty alternative always holds");
            }
            c
        })
        .collect();
    Criteria {
        fit_min: raw.fit_min,
        engagement_min: raw.engagement_min,
        score_min: raw.score_min,
        bant,
        events,
        when,
        requires_stage,
        any_of,
    }
}

/// A later automatic stage must not require less of a score than an earlier one does: that
/// would let a lead skip the earlier stage's agreed bar. Only top-level (always required)
/// thresholds are compared; `any_of` alternatives are legitimately different routes.
fn check_threshold_order(stages: &[StageDef], errs: &mut Errors) {
    type Get = fn(&Criteria) -> Option<f64>;
    let dims: [(&str, Get); 3] = [
        ("fit_min", |c| c.fit_min),
        ("engagement_min", |c| c.engagement_min),
        ("score_min", |c| c.score_min),
    ];
    for (dim, get) in dims {
        let mut highest: Option<(f64, &str)> = None;
        for (i, s) in stages.iter().enumerate() {
            let Some(v) = s.enter.as_ref().and_then(get) else {
                continue;
            };
            match highest {
                Some((h, earlier)) if v < h => errs.push(
                    format!("stages[{i}].enter.{dim}"),
                    format!(
                        "thresholds out of order: {v} is lower than the {h} that the earlier \
                         stage {earlier:?} requires"
                    ),
                ),
                Some((h, _)) if v == h => {}
                _ => highest = Some((v, s.name.as_str())),
            }
        }
    }
}

fn build_bant(raw: RawBant, errs: &mut Errors) -> Option<Bant> {
    let mut parts = Vec::new();
    for (name, c) in [
        ("budget", &raw.budget),
        ("authority", &raw.authority),
        ("need", &raw.need),
        ("timeline", &raw.timeline),
    ] {
        if let Some(c) = c {
            if let Some(c) = condition::build(c, &format!("bant.{name}"), errs) {
                parts.push((name, c));
            }
        }
    }
    let defined = [&raw.budget, &raw.authority, &raw.need, &raw.timeline]
        .iter()
        .filter(|c| c.is_some())
        .count();
    if defined == 0 {
        errs.push(
            "bant",
            "define at least one of budget, authority, need, timeline",
        );
    }
    if raw.threshold == 0 || raw.threshold > defined {
        errs.push(
            "bant.threshold",
            format!(
                "thresholds out of order: {} must be between 1 and the {defined} criteria defined",
                raw.threshold
            ),
        );
    }
    Some(Bant {
        threshold: raw.threshold,
        parts,
    })
}

fn build_recycle(
    raw: &RawRecycle,
    key: &str,
    names: &Names<'_>,
    disqualified: StageId,
    errs: &mut Errors,
) -> Option<RecycleRule> {
    if raw.name.trim().is_empty() {
        errs.push(
            format!("{key}.name"),
            "a recycle rule needs a name (it is the reason shown)",
        );
    }
    if raw.from.is_empty() {
        errs.push(
            format!("{key}.from"),
            "list the stages this rule recycles from",
        );
    }
    let to = names.resolve(&raw.to, &format!("{key}.to"), errs);
    if to == Some(disqualified) {
        errs.push(
            format!("{key}.to"),
            "recycle cannot disqualify; use [disqualify] for that",
        );
    }
    let mut from = Vec::new();
    for (i, name) in raw.from.iter().enumerate() {
        let k = format!("{key}.from[{i}]");
        let Some(id) = names.resolve(name, &k, errs) else {
            continue;
        };
        if id == disqualified {
            errs.push(
                k,
                "disqualification is sticky; recycle cannot move a lead out of it",
            );
        } else if to.is_some_and(|t| t >= id) {
            errs.push(
                k,
                format!(
                    "recycling moves a lead backwards, but {:?} does not rank below {name:?}",
                    raw.to
                ),
            );
        } else {
            from.push(id);
        }
    }
    if let Some(d) = raw.inactive_days.filter(|d| !(d.is_finite() && *d > 0.0)) {
        errs.push(
            format!("{key}.inactive_days"),
            format!("must be a positive number, not {d}"),
        );
    }
    if raw.engagement_below.is_some_and(|v| !v.is_finite()) {
        errs.push(format!("{key}.engagement_below"), "must be a finite number");
    }
    let when = raw
        .when
        .as_ref()
        .and_then(|c| condition::build(c, &format!("{key}.when"), errs));
    if raw.inactive_days.is_none() && raw.engagement_below.is_none() && raw.when.is_none() {
        errs.push(
            key,
            "give at least one of inactive_days, engagement_below, when; otherwise every lead in \
             `from` would be recycled at once",
        );
    }
    Some(RecycleRule {
        name: raw.name.clone(),
        from,
        to: to?,
        inactive_days: raw.inactive_days,
        engagement_below: raw.engagement_below,
        when,
    })
}
