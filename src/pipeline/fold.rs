//! A lead's history as if its events had been handled in provider-time order, whatever order
//! they reached the store in (research/postgres.md pitfall 4: with several replicas, an event
//! can commit after a later one of the same lead was already applied; a provider's late retry
//! does the same on one process).
//!
//! The merge itself does not depend on order (fields by time and precedence, engagements as a
//! set), so the lead's fields, scores and stage come out the same either way; the stage
//! *history* does not. So every input a lead receives is logged with its provider time, the
//! clock it was qualified at, and what the mapping produced. When an input arrives late (an
//! input that happened after it is already applied, or its own event is processed again by a
//! replay), the lead is rebuilt: every input is applied again from nothing, in provider-time
//! order (then event id).
//!
//! The clocks of the rebuild: every input keeps the clock it was qualified at, and the late input
//! takes the clock of the input it comes before (it would have been handled just before that
//! one); an event processed again by a replay keeps its own. So the rebuild changes what the
//! late input changes and nothing else: time-dependent rules (decay, recency, recycles) see the
//! same times as before, and stage-change times stay where they were. Recycles and sales
//! decisions in the old history are not inputs: they are applied again at their own time,
//! between the inputs (a recycle that no longer holds once the late input is counted does not
//! happen, as it would not have).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lead::{Engagement, LeadPatch};
use crate::qualify::{apply_feedback, qualify, ChangeCause, Decision, LeadState, Rules};
use crate::store::LeadInput;

/// What one event's mapping produced for one lead, as the input log keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Items {
    #[serde(default)]
    pub patches: Vec<LeadPatch>,
    #[serde(default)]
    pub engagements: Vec<Engagement>,
}

impl Items {
    pub fn encode(patches: &[LeadPatch], engagements: &[Engagement]) -> Result<String, String> {
        serde_json::to_string(&Items {
            patches: patches.to_vec(),
            engagements: engagements.to_vec(),
        })
        .map_err(|e| format!("lead input does not serialise: {e}"))
    }

    fn decode(text: &str) -> Result<Items, String> {
        serde_json::from_str(text).map_err(|e| format!("a logged lead input does not parse: {e}"))
    }
}

/// The provider's time of one lead's input: its earliest patch or engagement, else `fallback`.
pub fn occurred_at(
    patches: &[LeadPatch],
    engagements: &[Engagement],
    fallback: DateTime<Utc>,
) -> DateTime<Utc> {
    patches
        .iter()
        .map(|p| p.at)
        .chain(engagements.iter().map(|e| e.at))
        .min()
        .unwrap_or(fallback)
}

/// The lead rebuilt.
pub struct Rebuilt {
    /// The last step's decision, its flags (created, stage/score/fields changed) relative to the
    /// stored state the rebuild replaces.
    pub decision: Decision,
    /// The clock the late input was qualified at (Unix ms).
    pub input_clock_ms: i64,
}

enum Kind {
    Input(Items),
    /// A periodic re-check (recycle rules): kept only if the stage moves.
    Sweep,
    /// Sales set this stage.
    Feedback(String),
}

/// Leads with more inputs than this are merged instead of rebuilt: a rebuild re-applies every
/// input, and such a lead (a newsletter reader with thousands of opens) gains little from it
/// since its stage history is long settled.
pub const REBUILD_MAX_INPUTS: usize = 1000;

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Rebuilds a lead from its input log plus `current` (the late input, arriving at `now`).
/// `Ok(None)`: the log has inputs from before it kept them, or more than
/// [`REBUILD_MAX_INPUTS`]; the caller merges as usual.
pub fn rebuild(
    rules: &Rules,
    prev: Option<&LeadState>,
    log: Vec<LeadInput>,
    current: &LeadInput,
    now: DateTime<Utc>,
) -> Result<Option<Rebuilt>, String> {
    if log.len() > REBUILD_MAX_INPUTS {
        return Ok(None);
    }
    let late_key = (current.occurred_at_ms, current.event.0);
    // Its own earlier clock (a replay), else the clock of the first input it comes before.
    let own = log.iter().find(|l| l.event == current.event);
    let next = log
        .iter()
        .filter(|l| l.event != current.event && (l.occurred_at_ms, l.event.0) > late_key)
        .min_by_key(|l| (l.occurred_at_ms, l.event.0));
    let input_clock_ms = own
        .or(next)
        .map_or(now.timestamp_millis(), |l| l.folded_at_ms);
    let mut inputs = Vec::with_capacity(log.len() + 1);
    for l in log.iter().filter(|l| l.event != current.event) {
        let Some(text) = &l.items else {
            return Ok(None);
        };
        inputs.push((
            (l.occurred_at_ms, l.event.0),
            at_ms(l.folded_at_ms),
            Items::decode(text)?,
        ));
    }
    let Some(text) = &current.items else {
        return Ok(None);
    };
    inputs.push((late_key, at_ms(input_clock_ms), Items::decode(text)?));
    inputs.sort_by_key(|(key, _, _)| *key);
    // Recycles and sales decisions, at their own time.
    let mut others: Vec<(DateTime<Utc>, Kind)> = prev
        .map(|p| {
            p.history
                .iter()
                .filter_map(|h| match h.cause {
                    ChangeCause::Recycle => Some((h.at, Kind::Sweep)),
                    ChangeCause::Feedback => Some((h.at, Kind::Feedback(h.to.clone()))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    others.sort_by_key(|(at, _)| *at);
    let mut others = others.into_iter().peekable();
    let mut steps: Vec<(DateTime<Utc>, Kind)> = Vec::new();
    let mut running = DateTime::<Utc>::MIN_UTC;
    for (_, clock, items) in inputs {
        let clock = clock.max(running);
        running = clock;
        while let Some(other) = others.next_if(|(at, _)| *at < clock) {
            steps.push(other);
        }
        steps.push((clock, Kind::Input(items)));
    }
    steps.extend(others);

    let mut state: Option<LeadState> = None;
    let mut last: Option<Decision> = None;
    for (clock, kind) in steps {
        let d = match (kind, &state) {
            (Kind::Input(i), s) => qualify(rules, s.as_ref(), &i.patches, &i.engagements, clock)
                .map_err(|e| e.to_string())?,
            (Kind::Sweep, Some(s)) => match qualify(rules, Some(s), &[], &[], clock) {
                Ok(d) if d.stage_changed => d,
                _ => continue,
            },
            (Kind::Feedback(stage), Some(s)) => match apply_feedback(rules, s, &stage, clock) {
                Ok(d) => d,
                Err(_) => continue,
            },
            (_, None) => continue,
        };
        state = Some(d.state.clone());
        last = Some(d);
    }
    let Some(mut d) = last else {
        return Err("a rebuild had no input to apply".into());
    };
    // Relative to what is stored: that is what the CRM and the metrics hear about.
    let whole = |v: f64| v.round() as i64;
    d.created = prev.is_none();
    d.previous_stage = prev.map(|p| p.stage.clone());
    d.stage_changed = prev.is_none_or(|p| p.stage != d.stage);
    d.fields_changed = prev.is_none_or(|p| p.fields != d.state.fields);
    d.score_changed = prev.is_none_or(|p| {
        whole(p.fit_score) != d.fit_score || whole(p.engagement_score) != d.engagement_score
    });
    Ok(Some(Rebuilt {
        decision: d,
        input_clock_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventId;

    fn input(event: i64, items: Option<&str>) -> LeadInput {
        LeadInput {
            event: EventId(event),
            occurred_at_ms: event * 1000,
            folded_at_ms: event * 1000,
            items: items.map(str::to_string),
        }
    }

    #[test]
    fn leads_with_unlogged_or_too_many_inputs_are_merged_not_rebuilt() {
        let rules = Rules::load(None).unwrap();
        let now = at_ms(10_000_000);
        let late = input(0, Some("{}"));
        let unlogged = vec![input(1, None)];
        assert!(rebuild(&rules, None, unlogged, &late, now)
            .unwrap()
            .is_none());
        let many: Vec<LeadInput> = (1..=REBUILD_MAX_INPUTS as i64 + 1)
            .map(|i| input(i, Some("{}")))
            .collect();
        assert!(rebuild(&rules, None, many, &late, now).unwrap().is_none());
    }
}
