//! Explanations: the score breakdown (every rule that fired, with its points) and the reasons for
//! the stage, as full sentences for `leadgate map` and as one short line for the CRM.

use serde::{Serialize, Serializer};

use super::disqualify::DqReason;
use super::funnel::Met;

/// Which score a breakdown line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Fit,
    Engagement,
}

/// One line of the score breakdown: a rule that fired (or a cap that took points away).
/// The lines of one dimension add up to its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleHit {
    pub score: Dimension,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(serialize_with = "two_decimals")]
    pub points: f64,
    /// For engagement rules: how many events counted ("3 events in 30 days").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Decayed points have long binary tails; two decimals are plenty for people.
fn two_decimals<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 100.0).round() / 100.0)
}

/// CRM text fields are often limited to 255 characters (Salesforce `Text(255)`).
pub const SUMMARY_MAX_CHARS: usize = 255;

/// Points as people write them: `+20`, `-15`, `+2.5`.
pub(crate) fn points(p: f64) -> String {
    let r = (p * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:+.0}")
    } else {
        format!("{r:+.1}")
    }
}

/// A score as a whole number, the way the CRM gets it.
pub(crate) fn whole(v: f64) -> i64 {
    v.round() as i64
}

/// A criterion that held, as a full sentence part ("fit 45 ≥ 30").
pub(crate) fn met_long(m: &Met) -> String {
    match m {
        Met::Fit { value, min } => format!("fit {} ≥ {min}", whole(*value)),
        Met::Engagement { value, min } => format!("engagement {} ≥ {min}", whole(*value)),
        Met::Score { value, min } => format!("score {} ≥ {min}", whole(*value)),
        Met::Bant {
            held,
            defined,
            threshold,
        } => format!(
            "BANT {} of {defined} ({}), {threshold} needed",
            held.len(),
            held.join(", ")
        ),
        Met::Events {
            kinds,
            count,
            within_days,
        } => {
            let what = kinds.join("/");
            let times = if *count == 1 {
                String::new()
            } else {
                format!(" ×{count}")
            };
            match within_days {
                Some(d) => format!("{what}{times} within {d} days"),
                None => format!("{what}{times}"),
            }
        }
        Met::Condition => "field condition holds".to_string(),
        Met::Reached(stage) => format!("has reached {stage}"),
    }
}

/// The same, for the one-line summary; scores are shown separately there.
fn met_short(m: &Met) -> Option<String> {
    match m {
        Met::Fit { .. } | Met::Engagement { .. } | Met::Score { .. } | Met::Condition => None,
        Met::Bant { held, defined, .. } => Some(format!("BANT {}/{defined}", held.len())),
        Met::Events { kinds, .. } => Some(kinds.join("/")),
        Met::Reached(stage) => Some(format!("after {stage}")),
    }
}

/// Why a stage holds, in short.
pub(crate) enum StageWhy<'a> {
    Criteria(&'a [Met]),
    SetBySales,
    Recycled,
    Kept,
    First,
}

/// The one-line reason the CRM gets, e.g.
/// `MQL: fit 45 (senior title +20, 51-200 employees +15, target country +10); engagement 30`.
pub(crate) fn summary(
    label: &str,
    fit: f64,
    engagement: f64,
    breakdown: &[RuleHit],
    why: StageWhy<'_>,
    disqualified: Option<&[DqReason]>,
    is_disqualified_stage: bool,
) -> String {
    if is_disqualified_stage {
        let reasons = disqualified.unwrap_or(&[]);
        let mut s = match reasons.first() {
            Some(r) => format!("{label}: {r}"),
            None => label.to_string(),
        };
        if reasons.len() > 1 {
            s.push_str(&format!(" (+{} more)", reasons.len() - 1));
        }
        return truncate(s);
    }
    let mut fit_hits: Vec<&RuleHit> = breakdown
        .iter()
        .filter(|h| h.score == Dimension::Fit && whole(h.points * 10.0) != 0)
        .collect();
    // Biggest effect first; ties keep file order.
    fit_hits.sort_by(|a, b| b.points.abs().total_cmp(&a.points.abs()));
    let mut parts: Vec<String> = fit_hits
        .iter()
        .take(3)
        .map(|h| format!("{} {}", h.rule, points(h.points)))
        .collect();
    if fit_hits.len() > 3 {
        parts.push("…".to_string());
    }
    let mut s = format!("{label}: fit {}", whole(fit));
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join(", ")));
    }
    s.push_str(&format!("; engagement {}", whole(engagement)));
    match why {
        StageWhy::Criteria(met) => {
            for m in met.iter().filter_map(met_short) {
                s.push_str(&format!("; {m}"));
            }
        }
        StageWhy::SetBySales => s.push_str("; set by sales"),
        StageWhy::Recycled => s.push_str("; recycled"),
        StageWhy::Kept | StageWhy::First => {}
    }
    if let Some(r) = disqualified.and_then(|r| r.first()) {
        s.push_str(&format!("; disqualifier noted: {r}"));
    }
    truncate(s)
}

fn truncate(s: String) -> String {
    if s.chars().count() <= SUMMARY_MAX_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(SUMMARY_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(rule: &str, p: f64) -> RuleHit {
        RuleHit {
            score: Dimension::Fit,
            rule: rule.into(),
            group: None,
            points: p,
            detail: None,
        }
    }

    #[test]
    fn points_read_like_people_write_them() {
        assert_eq!(points(20.0), "+20");
        assert_eq!(points(-15.0), "-15");
        assert_eq!(points(2.5), "+2.5");
        assert_eq!(points(7.071), "+7.1");
    }

    #[test]
    fn the_summary_shows_the_biggest_fit_rules_and_what_qualified_the_stage() {
        let hits = [
            fit("target country", 10.0),
            fit("senior title", 20.0),
            fit("free-mail address", -15.0),
            fit("company known", 5.0),
        ];
        let met = [
            Met::Fit {
                value: 20.0,
                min: 10.0,
            },
            Met::Events {
                kinds: vec!["demo_request".into()],
                count: 1,
                within_days: Some(90.0),
            },
        ];
        let s = summary(
            "SQL",
            20.0,
            30.4,
            &hits,
            StageWhy::Criteria(&met),
            None,
            false,
        );
        assert_eq!(
            s,
            "SQL: fit 20 (senior title +20, free-mail address -15, target country +10, …); \
             engagement 30; demo_request"
        );
    }

    #[test]
    fn summaries_are_cut_to_the_crm_limit() {
        let hits: Vec<RuleHit> = (0..3).map(|i| fit(&"x".repeat(100 + i), 1.0)).collect();
        let s = summary("MQL", 3.0, 0.0, &hits, StageWhy::Kept, None, false);
        assert_eq!(s.chars().count(), SUMMARY_MAX_CHARS);
        assert!(s.ends_with('…'));
    }
}
