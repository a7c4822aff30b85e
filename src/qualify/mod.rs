//! Qualification: the agreed funnel definition (the rules file), applied the same way to every
//! lead, with the reasons for where it put the lead.
//!
//! The pipeline's whole interface:
//! - [`Rules::load`] once at start (`None` = the embedded default `rules.toml`); `leadgate check`
//!   prints its errors.
//! - [`qualify`] for each event (or batch of events) of one lead: previous [`LeadState`] + what
//!   the event mapped to + the clock -> [`Decision`] (new state, score breakdown, stage, reasons).
//!   Pure and deterministic; the caller serialises calls per lead and stores `decision.state`.
//! - [`Decision::crm_update`] for the outbox.
//! - [`apply_feedback`] when sales sets a stage in the CRM.
//!
//! Guarantees:
//! - **Forward only.** The stage moves back only through a recycle rule or sales feedback, and the
//!   history says so.
//! - **Sticky disqualification.** Once a disqualifier held, the lead stays disqualified (if it is
//!   already in sales' hands, the reason is noted but the stage kept).
//! - **Order does not matter.** Fields merge by event time (then source precedence, value),
//!   events are a set, scores are recomputed from the state, and the stage is the highest one
//!   reached. So, given the same clock, processing a lead's events in any order gives the same
//!   fields, counts, scores, stage and disqualification. Only the history path can differ (which
//!   intermediate stages were recorded), and one case can differ in the stage: a *newer* value
//!   that lowers a score after an older value already promoted the lead (processed in time order
//!   the lead was promoted and stays; processed newest first it never was).
//! - **Versioned.** Every decision and stage change records [`Rules::version`].

mod condition;
mod disqualify;
mod explain;
mod funnel;
mod rules;
mod score;
mod state;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use self::condition::{Condition, FieldTest, Scalar};
pub use self::disqualify::{DqCode, DqReason, EmailClass};
pub use self::explain::{Dimension, RuleHit, SUMMARY_MAX_CHARS};
pub use self::funnel::{BantOutcome, Owner, StageDef};
pub use self::rules::{Rules, RulesError, EMBEDDED_ORIGIN, EMBEDDED_RULES};
pub use self::state::{
    ChangeCause, Disqualification, EngagementHistory, FieldValue, KindStats, LeadState,
    LoggedEvent, StageChange, HISTORY_LIMIT, LOG_PER_KIND,
};

use self::condition::Lead;
use self::explain::{met_long, summary, whole, StageWhy};
use self::funnel::{Facts, Met, StageId};
use crate::config::CrmKind;
use crate::lead::{Engagement, LeadPatch};
use crate::outbox::{Change, CrmUpdate};

/// What qualifying one lead's event(s) decided.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The stage's name as the rules call it, and its rank (position in the funnel).
    pub stage: String,
    pub stage_rank: u32,
    /// The stage before this decision (`None` for a new lead).
    pub previous_stage: Option<String>,
    /// The stage differs from `previous_stage` (always true for a new lead).
    pub stage_changed: bool,
    /// The lead did not exist before.
    pub created: bool,
    /// Fit or engagement score changed when rounded (always true for a new lead).
    pub score_changed: bool,
    /// A merged field value changed (always true for a new lead).
    pub fields_changed: bool,
    /// Scores as the CRM gets them: rounded; `score` = fit + engagement.
    pub fit_score: i64,
    pub engagement_score: i64,
    pub score: i64,
    /// One line for the CRM (at most [`SUMMARY_MAX_CHARS`] characters).
    pub summary: String,
    /// Why the lead is where it is, as sentences.
    pub reasons: Vec<String>,
    /// Every scoring rule that fired, with its points; caps as their own lines.
    pub breakdown: Vec<RuleHit>,
    pub bant: Option<BantOutcome>,
    pub rules_version: String,
    /// The lead's new state, to store.
    pub state: LeadState,
}

/// The inputs to [`qualify`] do not describe one lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QualifyError {
    #[error("nothing to qualify: no previous state, lead patch or engagement")]
    NoLead,
    #[error("{what} {index} is for a different lead than the rest of the input")]
    OtherLead { what: &'static str, index: usize },
}

/// Sales feedback that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    #[error("unknown stage {stage:?}; the rules define {known}")]
    UnknownStage { stage: String, known: String },
    #[error(
        "the lead is disqualified; sales feedback cannot move it to {stage:?} \
         (disqualification is sticky)"
    )]
    Disqualified { stage: String },
}

/// Qualifies one lead: merges `patches` and `engagements` into `prev` (or a new state), scores
/// it, and decides its stage at time `now`.
///
/// All inputs must be for one lead (the same normalised email as `prev`); the pipeline groups a
/// stored event's [`crate::lead::Mapped`] by [`crate::lead::Mapped::emails`]. Calling it with no
/// patches or engagements re-evaluates the lead at `now` (decay, recycle rules), e.g. from a
/// periodic sweep. Pure: no I/O, no clock, no logging.
pub fn qualify(
    rules: &Rules,
    prev: Option<&LeadState>,
    patches: &[LeadPatch],
    engagements: &[Engagement],
    now: DateTime<Utc>,
) -> Result<Decision, QualifyError> {
    let email = match (prev, patches.first(), engagements.first()) {
        (Some(p), _, _) => &p.email,
        (None, Some(p), _) => &p.email,
        (None, None, Some(e)) => &e.email,
        (None, None, None) => return Err(QualifyError::NoLead),
    };
    if let Some(index) = patches.iter().position(|p| &p.email != email) {
        return Err(QualifyError::OtherLead {
            what: "patch",
            index,
        });
    }
    if let Some(index) = engagements.iter().position(|e| &e.email != email) {
        return Err(QualifyError::OtherLead {
            what: "engagement",
            index,
        });
    }
    let mut state = match prev {
        Some(p) => p.clone(),
        None => LeadState::new(
            email.clone(),
            &rules.funnel.get(rules.funnel.initial()).name,
            rules.version(),
            now,
        ),
    };
    let mut fields_changed = false;
    for p in patches {
        fields_changed |= state.merge_patch(&rules.fields, p);
    }
    for e in engagements {
        state.merge_engagement(e);
    }
    Ok(decide(rules, prev, state, fields_changed, now))
}

/// Applies a stage sales set in the CRM (any stage, forwards or backwards), then lets the rules
/// continue from there (e.g. in the waterfall funnel, SAL -> SQL once BANT holds). A backward
/// move holds the lead there until new activity, like a recycle. A disqualified lead stays
/// disqualified; sales can disqualify a lead by naming the disqualified stage.
pub fn apply_feedback(
    rules: &Rules,
    state: &LeadState,
    stage: &str,
    now: DateTime<Utc>,
) -> Result<Decision, FeedbackError> {
    let funnel = &rules.funnel;
    let target = funnel
        .id(stage)
        .ok_or_else(|| FeedbackError::UnknownStage {
            stage: stage.to_string(),
            known: funnel.names(),
        })?;
    let current = funnel.id(&state.stage);
    let dq = funnel.disqualified();
    if current == Some(dq) && target != dq {
        return Err(FeedbackError::Disqualified {
            stage: stage.to_string(),
        });
    }
    let mut next = state.clone();
    if state.stage != stage {
        if current.is_some_and(|c| target < c) {
            next.recycled_at = Some(now);
        }
        if target == dq {
            let reason = DqReason {
                code: DqCode::SalesFeedback,
                detail: String::new(),
            };
            match &mut next.disqualification {
                Some(d) => d.add(&[reason]),
                None => {
                    next.disqualification = Some(Disqualification {
                        reasons: vec![reason],
                        since: now,
                    })
                }
            }
        }
        next.push_change(StageChange {
            from: Some(state.stage.clone()),
            to: stage.to_string(),
            at: now,
            cause: ChangeCause::Feedback,
            reasons: vec![format!("set to {stage} by sales")],
            rules_version: rules.version().to_string(),
        });
    }
    Ok(decide(rules, Some(state), next, false, now))
}

impl Decision {
    /// The outbox entry for this decision: the lead's newest state as the CRM should see it.
    /// `version` is the stored state's version (strictly increasing per lead).
    pub fn crm_update(&self, rules: &Rules, crm: CrmKind, version: i64) -> CrmUpdate {
        let changes = if self.created {
            vec![Change::Created]
        } else {
            [
                (self.stage_changed, Change::StageChanged),
                (self.score_changed, Change::ScoreChanged),
                (self.fields_changed, Change::FieldsChanged),
            ]
            .into_iter()
            .filter_map(|(on, c)| on.then_some(c))
            .collect()
        };
        CrmUpdate {
            email: self.state.email.clone(),
            version,
            fields: self
                .state
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            stage: self.stage.clone(),
            stage_rank: self.stage_rank,
            stage_values: rules.stage_values(&self.stage, crm),
            fit_score: self.fit_score,
            engagement_score: self.engagement_score,
            score: self.score,
            reason: self.summary.clone(),
            disqualified: self
                .state
                .disqualification
                .as_ref()
                .and_then(|d| d.primary())
                .map(|r| r.to_string()),
            changes,
            at: Some(self.state.scored_at),
        }
    }
}

/// What the stage machine does with the lead this time.
enum Action {
    Stay,
    Disqualify,
    Recycle {
        to: StageId,
        name: String,
        why: Vec<String>,
    },
    Promote(StageId, Vec<Met>),
}

/// Everything [`decide`] learns from reading the merged state, before it changes anything.
struct Assessment {
    fit: f64,
    engagement: f64,
    breakdown: Vec<RuleHit>,
    bant: Option<BantOutcome>,
    /// Disqualifiers that hold now (added to the sticky set).
    dq_now: Vec<DqReason>,
    action: Action,
    /// Whether the current stage's own criteria still hold, and how.
    current_met: Option<Vec<Met>>,
    /// A stage the lead would move to but for a recent recycle (it waits for new activity).
    held: Option<StageId>,
    /// A stage the lead would move to but for a recycle rule that would move it straight back.
    blocked: Option<(StageId, String)>,
}

fn assess(rules: &Rules, state: &LeadState, current: StageId, now: DateTime<Utc>) -> Assessment {
    let funnel = &rules.funnel;
    let lead = Lead {
        email: &state.email,
        fields: &state.fields,
        classes: rules.disqualify.classify(&state.email),
    };
    let (fit, mut breakdown) = rules.fit.score(&lead);
    let (engagement, hits) = rules.engagement.score(&state.engagement, now);
    breakdown.extend(hits);
    let bant = funnel.bant().map(|b| b.evaluate(&lead));
    let dq_now = rules.disqualify.check(&lead, &state.engagement);
    let facts = Facts {
        lead: &lead,
        history: &state.engagement,
        fit,
        engagement,
        bant: bant.as_ref(),
        current,
        now,
    };
    let disqualified = !dq_now.is_empty() || state.disqualification.is_some();
    // A recycled lead waits for activity newer than the recycle before moving forward again.
    let waiting = state
        .recycled_at
        .is_some_and(|r| state.engagement.last_at().is_none_or(|last| last <= r));
    let (mut held, mut blocked) = (None, None);
    let action = if current == funnel.disqualified() {
        Action::Stay
    } else if disqualified && !funnel.protected(current) {
        Action::Disqualify
    } else if let Some((rule, why)) = funnel.recycle(&facts) {
        Action::Recycle {
            to: rule.to,
            name: rule.name.clone(),
            why,
        }
    } else {
        match funnel.target(&facts) {
            Some((t, _)) if t > current && waiting => {
                held = Some(t);
                Action::Stay
            }
            Some((t, met)) if t > current => {
                // Never promote into a stage a recycle rule would take the lead straight back
                // out of: that would flip the lead (and the CRM) on every event.
                let there = Facts {
                    current: t,
                    ..facts
                };
                match funnel.recycle(&there) {
                    Some((rule, _)) => {
                        blocked = Some((t, rule.name.clone()));
                        Action::Stay
                    }
                    None => Action::Promote(t, met),
                }
            }
            _ => Action::Stay,
        }
    };
    let current_met = funnel
        .get(current)
        .enter
        .as_ref()
        .and_then(|c| c.check(&facts));
    Assessment {
        fit,
        engagement,
        breakdown,
        bant,
        dq_now,
        action,
        current_met,
        held,
        blocked,
    }
}

/// Scores the merged state and moves the stage. Shared by [`qualify`] and [`apply_feedback`].
fn decide(
    rules: &Rules,
    prev: Option<&LeadState>,
    mut state: LeadState,
    fields_changed: bool,
    now: DateTime<Utc>,
) -> Decision {
    let funnel = &rules.funnel;
    let version = rules.version().to_string();
    let created = prev.is_none();
    let mut reasons = Vec::new();

    let known = funnel.id(&state.stage);
    if known.is_none() {
        reasons.push(format!(
            "stage {:?} is not in rules {version}; re-evaluated from the first stage",
            state.stage
        ));
    }
    let current = known.unwrap_or(funnel.initial());
    let a = assess(rules, &state, current, now);

    state.fit_score = a.fit;
    state.engagement_score = a.engagement;
    state.scored_at = now;
    state.rules_version.clone_from(&version);
    if !a.dq_now.is_empty() {
        match &mut state.disqualification {
            Some(d) => d.add(&a.dq_now),
            None => {
                state.disqualification = Some(Disqualification {
                    reasons: a.dq_now.clone(),
                    since: now,
                })
            }
        }
    }
    let dq_reasons: Vec<DqReason> = state
        .disqualification
        .as_ref()
        .map(|d| d.reasons.clone())
        .unwrap_or_default();
    let dq_text = || {
        dq_reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stage_line = |id: StageId, met: &[Met]| {
        let parts: Vec<String> = met.iter().map(met_long).collect();
        format!("{}: {}", funnel.get(id).name, parts.join(", "))
    };

    let (target, cause) = match &a.action {
        Action::Disqualify => {
            reasons.push(format!("disqualified: {}", dq_text()));
            (funnel.disqualified(), ChangeCause::Disqualified)
        }
        Action::Recycle { to, name, why } => {
            state.recycled_at = Some(now);
            reasons.push(format!(
                "recycled to {} by rule {name:?}: {}",
                funnel.get(*to).name,
                why.join(", ")
            ));
            (*to, ChangeCause::Recycle)
        }
        Action::Promote(t, met) => {
            reasons.push(stage_line(*t, met));
            (*t, ChangeCause::Rules)
        }
        Action::Stay => {
            // Why the lead is where it is, when it did not just move there.
            let def = funnel.get(current);
            reasons.push(if current == funnel.disqualified() {
                format!("{}: {}", def.name, dq_text())
            } else if let Some(met) = &a.current_met {
                stage_line(current, met)
            } else if current == funnel.initial() {
                format!("{}: first stage; no later stage's criteria hold", def.name)
            } else if !def.is_automatic() {
                format!("{}: set by sales", def.name)
            } else {
                format!(
                    "{}: kept; a lead never moves backwards on its own (its criteria no longer \
                     hold)",
                    def.name
                )
            });
            (current, ChangeCause::Rules)
        }
    };
    if let Some(t) = a.held {
        reasons.push(format!(
            "would move to {}, but waits for activity newer than its recycle",
            funnel.get(t).name
        ));
    }
    if let Some((t, rule)) = &a.blocked {
        reasons.push(format!(
            "would move to {}, but recycle rule {rule:?} would take it straight back",
            funnel.get(*t).name
        ));
    }
    if !dq_reasons.is_empty() && funnel.protected(target) {
        reasons.push(format!(
            "disqualifier noted, stage kept because {} is in sales' hands: {}",
            funnel.get(target).name,
            dq_text()
        ));
    }

    let def = funnel.get(target);
    if created || def.name != state.stage {
        state.push_change(StageChange {
            from: (!created).then(|| state.stage.clone()),
            to: def.name.clone(),
            at: now,
            cause: if created && target == current {
                ChangeCause::Created
            } else {
                cause
            },
            reasons: reasons.clone(),
            rules_version: version.clone(),
        });
    }

    let why = match &a.action {
        Action::Promote(_, met) => StageWhy::Criteria(met),
        Action::Recycle { .. } => StageWhy::Recycled,
        Action::Disqualify => StageWhy::Kept,
        Action::Stay => match &a.current_met {
            Some(met) => StageWhy::Criteria(met),
            None if target == funnel.initial() => StageWhy::First,
            None if !def.is_automatic() && target != funnel.disqualified() => StageWhy::SetBySales,
            None => StageWhy::Kept,
        },
    };
    let summary = summary(
        &def.label,
        a.fit,
        a.engagement,
        &a.breakdown,
        why,
        (!dq_reasons.is_empty()).then_some(dq_reasons.as_slice()),
        target == funnel.disqualified(),
    );

    let previous_stage = prev.map(|p| p.stage.clone());
    let score_changed = prev.is_none_or(|p| {
        whole(p.fit_score) != whole(a.fit) || whole(p.engagement_score) != whole(a.engagement)
    });
    Decision {
        stage_changed: previous_stage.as_deref() != Some(def.name.as_str()),
        stage: def.name.clone(),
        stage_rank: target.rank(),
        previous_stage,
        created,
        score_changed,
        fields_changed: created || fields_changed,
        fit_score: whole(a.fit),
        engagement_score: whole(a.engagement),
        score: whole(a.fit) + whole(a.engagement),
        summary,
        reasons,
        breakdown: a.breakdown,
        bant: a.bant,
        rules_version: version,
        state,
    }
}
