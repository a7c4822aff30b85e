//! End-to-end tests of [`qualify`] against the shipped rules files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::*;
use crate::lead::{Email, EngagementKind, FieldName};

static DEFAULT: LazyLock<Rules> = LazyLock::new(|| Rules::load(None).unwrap());
static WATERFALL: LazyLock<Rules> = LazyLock::new(|| {
    Rules::load(Some(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/waterfall.toml"
    ))))
    .unwrap()
});

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn days(d: f64) -> TimeDelta {
    TimeDelta::milliseconds((d * 86_400_000.0) as i64)
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn patch(to: &str, fields: &[(&str, Value)], days_ago: f64, source: &str) -> LeadPatch {
    LeadPatch {
        email: email(to),
        fields: fields
            .iter()
            .map(|(k, v)| (FieldName::parse(k).unwrap(), v.clone()))
            .collect(),
        at: now() - days(days_ago),
        source: source.into(),
    }
}

/// `n` distinct events of one kind (distinct sources), `days_ago` old.
fn events(to: &str, kind: EngagementKind, n: usize, days_ago: f64) -> Vec<Engagement> {
    (0..n)
        .map(|i| Engagement {
            email: email(to),
            kind,
            at: now() - days(days_ago),
            source: format!("src{i}"),
            detail: BTreeMap::new(),
        })
        .collect()
}

fn ev(to: &str, kind: EngagementKind, days_ago: f64) -> Engagement {
    events(to, kind, 1, days_ago).remove(0)
}

fn new_lead(
    rules: &Rules,
    to: &str,
    fields: &[(&str, Value)],
    evs: Vec<Engagement>,
    at: DateTime<Utc>,
) -> Decision {
    let patches = if fields.is_empty() {
        vec![]
    } else {
        vec![patch(to, fields, 0.0, "typeform")]
    };
    qualify(rules, None, &patches, &evs, at).unwrap()
}

use EngagementKind::*;

struct Profile {
    what: &'static str,
    email: &'static str,
    fields: Vec<(&'static str, Value)>,
    events: Vec<(EngagementKind, usize)>,
    fit: i64,
    engagement: i64,
    stage: &'static str,
    /// The first reason must contain this.
    why: &'static str,
}

fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            what: "VP at a 51-200 software company in the US who asked for a demo",
            email: "dana@northwind-analytics.io",
            fields: vec![
                ("job_title", json!("VP of Sales")),
                ("company", json!("Northwind Analytics")),
                ("company_size_min", json!(51)),
                ("company_size_max", json!(200)),
                ("country", json!("US")),
                ("industry", json!("Software")),
            ],
            events: vec![(FormSubmit, 1), (DemoRequest, 1)],
            fit: 60,
            engagement: 40,
            stage: "sql",
            why: "sql: fit 60 ≥ 30, demo_request within 90 days",
        },
        Profile {
            what: "student with a gmail address",
            email: "sam.student@gmail.com",
            fields: vec![("job_title", json!("Student")), ("country", json!("US"))],
            events: vec![(FormSubmit, 1)],
            fit: -5,
            engagement: 10,
            stage: "disqualified",
            why: "disqualified: student or intern",
        },
        Profile {
            what: "competitor's director asking for a demo",
            email: "lee@acme-rival.com",
            fields: vec![
                ("job_title", json!("Director of Marketing")),
                ("company", json!("Acme Rival")),
                ("company_size_min", json!(201)),
                ("country", json!("US")),
            ],
            events: vec![(DemoRequest, 1)],
            fit: 55,
            engagement: 30,
            stage: "disqualified",
            why: "disqualified: competitor domain (acme-rival.com)",
        },
        Profile {
            what: "info@ role address",
            email: "info@bluepeak-labs.com",
            fields: vec![
                ("company", json!("Bluepeak Labs")),
                ("company_size_min", json!(11)),
                ("country", json!("DE")),
            ],
            events: vec![(ContactRequest, 1)],
            fit: 20,
            engagement: 30,
            stage: "disqualified",
            why: "disqualified: role address (info@)",
        },
        Profile {
            what: "fits well, no activity yet: nurture",
            email: "chris@fjord-systems.no",
            fields: vec![
                ("job_title", json!("Head of Operations")),
                ("company", json!("Fjord Systems")),
                ("company_size_min", json!(201)),
                ("country", json!("Norway")),
                ("industry", json!("Software")),
            ],
            events: vec![],
            fit: 65,
            engagement: 0,
            stage: "nurture",
            why: "nurture: fit 65 ≥ 30",
        },
        Profile {
            what: "fits and engaged, no intent: mql",
            email: "alex@kestrel-ops.com",
            fields: vec![
                ("job_title", json!("IT Manager")),
                ("company", json!("Kestrel Ops")),
                ("company_size_min", json!(51)),
                ("country", json!("GB")),
            ],
            events: vec![(FormSubmit, 1), (ContentDownload, 1), (WebinarSignup, 1)],
            fit: 40,
            engagement: 25,
            stage: "mql",
            why: "mql: fit 40 ≥ 30, engagement 25 ≥ 25",
        },
        Profile {
            what: "very engaged, poor fit: stays a lead",
            email: "jo@pixelhut.com.br",
            fields: vec![("job_title", json!("Designer")), ("country", json!("BR"))],
            events: vec![(FormSubmit, 4), (EmailClick, 6), (DemoRequest, 1)],
            fit: 0,
            engagement: 70,
            stage: "lead",
            why: "lead: form_submit/demo_request ×5",
        },
        Profile {
            what: "good fit but the email bounced",
            email: "pat@orbitware.com",
            fields: vec![
                ("job_title", json!("VP Engineering")),
                ("company", json!("Orbitware")),
                ("company_size_min", json!(51)),
                ("country", json!("US")),
            ],
            events: vec![(FormSubmit, 1), (Bounce, 1)],
            fit: 50,
            engagement: 10,
            stage: "disqualified",
            why: "disqualified: email bounced",
        },
        Profile {
            what: "good fit but unsubscribed",
            email: "morgan@lumen-grid.com",
            fields: vec![
                ("job_title", json!("Director, Platform")),
                ("company", json!("Lumen Grid")),
                ("company_size_min", json!(1500)),
                ("country", json!("Canada")),
            ],
            events: vec![(WebinarSignup, 1), (Unsubscribe, 1)],
            fit: 45,
            engagement: 10,
            stage: "disqualified",
            why: "disqualified: unsubscribed",
        },
        Profile {
            what: "throwaway mailbox",
            email: "temp123@mailinator.com",
            fields: vec![],
            events: vec![(FormSubmit, 1)],
            fit: 0,
            engagement: 10,
            stage: "disqualified",
            why: "disqualified: disposable email domain (mailinator.com)",
        },
        Profile {
            what: "made-up address at example.com",
            email: "jane@example.com",
            fields: vec![("company", json!("Example"))],
            events: vec![(FormSubmit, 1)],
            fit: 5,
            engagement: 10,
            stage: "disqualified",
            why: "disqualified: reserved domain, not a real address (example.com)",
        },
        Profile {
            what: "engaged CTO meeting BANT 4 of 4: sql without a demo request",
            email: "robin@quantive.io",
            fields: vec![
                ("job_title", json!("CTO")),
                ("company", json!("Quantive")),
                ("company_size_min", json!(51)),
                ("country", json!("US")),
                ("custom.budget", json!("50k-100k")),
                ("custom.need", json!("replace spreadsheets")),
                ("custom.timeline", json!("This quarter")),
            ],
            events: vec![(FormSubmit, 1), (ContentDownload, 1), (WebinarSignup, 1)],
            fit: 50,
            engagement: 25,
            stage: "sql",
            why: "sql: fit 50 ≥ 30, engagement 25 ≥ 25, BANT 4 of 4 (budget, authority, need, timeline), 3 needed",
        },
        Profile {
            what: "newsletter reader who only opens emails: subscriber",
            email: "kim@harborline.com",
            fields: vec![("first_name", json!("Kim"))],
            events: vec![(EmailOpen, 1)],
            fit: 0,
            engagement: 1,
            stage: "subscriber",
            why: "subscriber: first stage",
        },
        Profile {
            what: "founder on gmail asking for a demo: free mail costs the fit for sql",
            email: "jamie.consults@gmail.com",
            fields: vec![
                ("job_title", json!("Founder")),
                ("company", json!("Jamie Consulting")),
                ("company_size_min", json!(1)),
                ("country", json!("US")),
            ],
            events: vec![(DemoRequest, 1)],
            fit: 20,
            engagement: 30,
            stage: "lead",
            why: "lead: demo_request",
        },
        Profile {
            what: "two title rules capped at 25",
            email: "ines@tessellate.de",
            fields: vec![
                ("job_title", json!("Director, Principal Engineer")),
                ("company", json!("Tessellate")),
                ("company_size_min", json!(201)),
                ("country", json!("Germany")),
                ("industry", json!("Fintech")),
            ],
            events: vec![],
            fit: 70,
            engagement: 0,
            stage: "nurture",
            why: "nurture: fit 70 ≥ 30",
        },
    ]
}

#[test]
fn profiles_get_the_expected_scores_and_stages_under_the_shipped_rules() {
    let rules = &*DEFAULT;
    let mut failures = Vec::new();
    for p in profiles() {
        let evs: Vec<Engagement> = p
            .events
            .iter()
            .flat_map(|(k, n)| events(p.email, *k, *n, 0.0))
            .collect();
        let d = new_lead(rules, p.email, &p.fields, evs, now());
        let got = (d.fit_score, d.engagement_score, d.stage.as_str());
        if got != (p.fit, p.engagement, p.stage) {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}; {:?} {:?}",
                p.what,
                (p.fit, p.engagement, p.stage),
                d.reasons,
                d.breakdown
            ));
        } else if !d.reasons[0].contains(p.why) {
            failures.push(format!(
                "{}: reasons {:?} lack {:?}",
                p.what, d.reasons, p.why
            ));
        }
        // The breakdown always adds up to the scores.
        let sum = |dim| -> f64 {
            d.breakdown
                .iter()
                .filter(|h| h.score == dim)
                .map(|h| h.points)
                .sum()
        };
        assert!(
            (sum(Dimension::Fit) - d.state.fit_score).abs() < 1e-9,
            "{}",
            p.what
        );
        assert!(
            (sum(Dimension::Engagement) - d.state.engagement_score).abs() < 1e-9,
            "{}",
            p.what
        );
        assert!(d.created && d.stage_changed && d.score_changed && d.fields_changed);
        assert_eq!(d.state.history.len(), 1, "{}", p.what);
        assert_eq!(d.state.history[0].from, None);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_breakdown_names_each_rule_and_cap() {
    let d = new_lead(
        &DEFAULT,
        "ines@tessellate.de",
        &[
            ("job_title", json!("Director, Principal Engineer")),
            ("company_size_min", json!(201)),
        ],
        events("ines@tessellate.de", EmailClick, 7, 0.0),
        now(),
    );
    let lines: Vec<(String, f64)> = d
        .breakdown
        .iter()
        .map(|h| (h.rule.clone(), h.points))
        .collect();
    assert_eq!(
        lines,
        [
            ("senior title".to_string(), 20.0),
            ("manager title".to_string(), 10.0),
            ("201-1000 employees".to_string(), 20.0),
            ("title cap 25".to_string(), -5.0),
            ("email click".to_string(), 14.0),
            ("email cap 10".to_string(), -4.0),
        ]
    );
    assert_eq!(
        d.breakdown[4].detail.as_deref(),
        Some("7 events in 90 days")
    );
    assert_eq!(
        d.summary,
        "Nurture: fit 45 (senior title +20, 201-1000 employees +20, manager title +10, …); \
         engagement 10"
    );
}

#[test]
fn engagement_accumulates_over_many_events_and_promotes_once_it_crosses_the_bar() {
    let rules = &*DEFAULT;
    let to = "alex@kestrel-ops.com";
    let fields = [
        ("job_title", json!("IT Manager")),
        ("company", json!("Kestrel Ops")),
        ("company_size_min", json!(51)),
        ("country", json!("GB")),
    ];
    let mut state: Option<LeadState> = None;
    let mut seen = Vec::new();
    for k in 1..=6usize {
        let evs = vec![
            Engagement {
                source: format!("download{k}"),
                ..ev(to, ContentDownload, 0.0)
            },
            Engagement {
                source: format!("click{k}"),
                ..ev(to, EmailClick, 0.0)
            },
        ];
        let patches = if k == 1 {
            vec![patch(to, &fields, 0.0, "typeform")]
        } else {
            vec![]
        };
        let d = qualify(rules, state.as_ref(), &patches, &evs, now()).unwrap();
        seen.push((d.engagement_score, d.stage.clone(), d.stage_changed));
        assert_eq!(d.state.engagement.count(ContentDownload), k as u64);
        state = Some(d.state);
    }
    let s = |x: &str| x.to_string();
    assert_eq!(
        seen,
        [
            (7, s("nurture"), true),
            (14, s("nurture"), false),
            (31, s("mql"), true),
            (38, s("mql"), false),
            (40, s("mql"), false),
            (40, s("mql"), false),
        ]
    );
    let history: Vec<(Option<String>, String)> = state
        .unwrap()
        .history
        .iter()
        .map(|c| (c.from.clone(), c.to.clone()))
        .collect();
    assert_eq!(
        history,
        [(None, s("nurture")), (Some(s("nurture")), s("mql"))]
    );
}

#[test]
fn engagement_halves_after_one_half_life() {
    let to = "dana@northwind-analytics.io";
    let d = new_lead(&DEFAULT, to, &[], vec![ev(to, DemoRequest, 0.0)], now());
    assert_eq!(d.state.engagement_score, 30.0);
    let later = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[],
        now() + TimeDelta::days(30),
    )
    .unwrap();
    assert_eq!(later.state.engagement_score, 15.0);
    let two = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[],
        now() + TimeDelta::days(60),
    )
    .unwrap();
    assert_eq!(two.state.engagement_score, 7.5);
    assert!(later.score_changed && !later.fields_changed && !later.created);
    // An event already 30 days old when it arrives counts half at once.
    let old = new_lead(&DEFAULT, to, &[], vec![ev(to, DemoRequest, 30.0)], now());
    assert_eq!(old.state.engagement_score, 15.0);
}

#[test]
fn a_lower_score_never_moves_the_lead_back() {
    let to = "alex@kestrel-ops.com";
    let d = new_lead(
        &DEFAULT,
        to,
        &[
            ("job_title", json!("IT Manager")),
            ("company", json!("Kestrel Ops")),
            ("company_size_min", json!(51)),
            ("country", json!("GB")),
        ],
        [
            ev(to, FormSubmit, 0.0),
            ev(to, ContentDownload, 0.0),
            ev(to, WebinarSignup, 0.0),
        ]
        .into(),
        now(),
    );
    assert_eq!(d.stage, "mql");
    // 90 days later engagement has decayed to 1/8, and a newer value lowers the fit.
    let at = now() + TimeDelta::days(90);
    let lower = patch(to, &[("country", json!("BR"))], -90.0, "tally");
    let d2 = qualify(&DEFAULT, Some(&d.state), &[lower], &[], at).unwrap();
    assert_eq!((d2.fit_score, d2.engagement_score), (30, 3));
    assert_eq!(d2.stage, "mql");
    assert!(!d2.stage_changed && d2.score_changed && d2.fields_changed);
    assert!(
        d2.reasons[0].contains("kept; a lead never moves backwards"),
        "{:?}",
        d2.reasons
    );
    assert_eq!(d2.state.history.len(), 1);
}

#[test]
fn disqualification_is_sticky() {
    let to = "morgan@lumen-grid.com";
    let d = new_lead(&DEFAULT, to, &[], vec![ev(to, Unsubscribe, 1.0)], now());
    assert_eq!(d.stage, "disqualified");
    let good = patch(
        to,
        &[
            ("job_title", json!("VP Sales")),
            ("company_size_min", json!(120)),
            ("country", json!("US")),
        ],
        0.0,
        "typeform",
    );
    let d2 = qualify(
        &DEFAULT,
        Some(&d.state),
        &[good],
        &[ev(to, DemoRequest, 0.0)],
        now() + TimeDelta::days(1),
    )
    .unwrap();
    assert_eq!(d2.stage, "disqualified");
    assert_eq!(d2.fit_score, 45);
    assert!(!d2.stage_changed);
    assert_eq!(d2.reasons[0], "disqualified: unsubscribed");
    let dq = d2.state.disqualification.as_ref().unwrap();
    assert_eq!(dq.since, now());
    assert_eq!(dq.primary().unwrap().code, DqCode::Unsubscribe);
    assert_eq!(d2.summary, "Disqualified: unsubscribed");
    assert!(matches!(
        apply_feedback(&DEFAULT, &d2.state, "mql", now()),
        Err(FeedbackError::Disqualified { .. })
    ));
}

#[test]
fn a_student_who_later_changes_title_stays_disqualified() {
    let to = "sam@northwind-analytics.io";
    let d = new_lead(
        &DEFAULT,
        to,
        &[("job_title", json!("Intern"))],
        vec![],
        now(),
    );
    assert_eq!(d.stage, "disqualified");
    let p = patch(to, &[("job_title", json!("VP Sales"))], -1.0, "typeform");
    let d2 = qualify(
        &DEFAULT,
        Some(&d.state),
        &[p],
        &[],
        now() + TimeDelta::days(1),
    )
    .unwrap();
    assert_eq!(d2.stage, "disqualified");
    assert_eq!(
        d2.state.disqualification.unwrap().reasons[0].detail,
        "student or intern"
    );
}

fn with_bant_threshold(n: usize) -> Rules {
    let text = EMBEDDED_RULES.replace("[bant]\nthreshold = 3", &format!("[bant]\nthreshold = {n}"));
    Rules::parse(&text, "bant.toml").unwrap()
}

#[test]
fn the_bant_threshold_decides_sql() {
    let to = "robin@quantive.io";
    let fields = [
        ("job_title", json!("CTO")),
        ("company_size_min", json!(51)),
        ("country", json!("US")),
        ("custom.need", json!("replace spreadsheets")),
        ("custom.budget", json!(5000)),
        ("custom.timeline", json!("next year")),
    ];
    let evs = || events(to, FormSubmit, 3, 0.0);
    let two = with_bant_threshold(2);
    let three = with_bant_threshold(3);
    let d2 = new_lead(&two, to, &fields, evs(), now());
    let d3 = new_lead(&three, to, &fields, evs(), now());
    assert_eq!((d2.fit_score, d2.engagement_score), (45, 30));
    let b = d2.bant.as_ref().unwrap();
    assert_eq!(
        (b.held.clone(), b.defined, b.met),
        (vec!["authority".into(), "need".into()], 4, true)
    );
    assert_eq!(d2.stage, "sql");
    assert_eq!(d3.stage, "mql");
    assert!(!d3.bant.unwrap().met);
    assert_ne!(two.version(), three.version());
    assert_eq!(three.version(), DEFAULT.version());
    // With the budget, three of four hold.
    let budget = patch(to, &[("custom.budget", json!("25,000"))], -1.0, "typeform");
    let d3b = qualify(&three, Some(&d3.state), &[budget], &[], now()).unwrap();
    assert_eq!(d3b.stage, "sql");
    assert!(d3b.summary.ends_with("; BANT 3/4"), "{}", d3b.summary);
}

#[test]
fn nurture_moves_on_to_mql_when_the_lead_engages() {
    let to = "chris@fjord-systems.no";
    let d = new_lead(
        &DEFAULT,
        to,
        &[
            ("job_title", json!("Head of Operations")),
            ("company_size_min", json!(201)),
        ],
        vec![],
        now(),
    );
    assert_eq!((d.stage.as_str(), d.fit_score), ("nurture", 40));
    let d2 = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[
            ev(to, WebinarSignup, 0.0),
            ev(to, FormSubmit, 0.0),
            ev(to, EmailReply, 0.0),
        ],
        now(),
    )
    .unwrap();
    assert_eq!((d2.stage.as_str(), d2.engagement_score), ("mql", 30));
    assert_eq!(d2.previous_stage.as_deref(), Some("nurture"));
    assert!(d2.stage_changed);
}

fn mql_lead(rules: &Rules, at: DateTime<Utc>) -> Decision {
    let to = "alex@kestrel-ops.com";
    let evs: Vec<Engagement> = [FormSubmit, ContentDownload, WebinarSignup]
        .iter()
        .map(|k| Engagement {
            at,
            ..ev(to, *k, 0.0)
        })
        .collect();
    let p = LeadPatch {
        at,
        ..patch(
            to,
            &[
                ("job_title", json!("IT Manager")),
                ("company", json!("Kestrel Ops")),
                ("company_size_min", json!(51)),
                ("country", json!("GB")),
            ],
            0.0,
            "typeform",
        )
    };
    qualify(rules, None, &[p], &evs, at).unwrap()
}

#[test]
fn the_recycle_rule_moves_a_quiet_mql_back_to_nurture_and_says_why() {
    let d = mql_lead(&DEFAULT, now());
    assert_eq!(d.stage, "mql");
    let early = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[],
        now() + TimeDelta::days(119),
    )
    .unwrap();
    assert_eq!(early.stage, "mql");
    // By then the download is outside its 90-day window: (10 + 10) × 0.5^(121/30) ≈ 1.2.
    let at = now() + TimeDelta::days(121);
    let d2 = qualify(&DEFAULT, Some(&d.state), &[], &[], at).unwrap();
    assert_eq!(d2.stage, "nurture");
    assert!(d2.stage_changed);
    assert_eq!(
        d2.reasons,
        ["recycled to nurture by rule \"gone quiet\": no activity for 121 days, engagement 1 < 5"]
    );
    let last = d2.state.history.last().unwrap();
    assert_eq!(
        (last.from.as_deref(), last.to.as_str(), last.cause),
        (Some("mql"), "nurture", ChangeCause::Recycle)
    );
    assert_eq!(d2.state.recycled_at, Some(at));
    assert!(d2.summary.ends_with("; recycled"), "{}", d2.summary);
    // New activity (newer than the recycle) brings it forward again.
    let to = "alex@kestrel-ops.com";
    let fresh = at + TimeDelta::minutes(1);
    let back = qualify(
        &DEFAULT,
        Some(&d2.state),
        &[],
        &[
            Engagement {
                at: fresh,
                ..ev(to, WebinarSignup, 0.0)
            },
            Engagement {
                at: fresh,
                ..ev(to, MeetingBooked, 0.0)
            },
        ],
        fresh,
    )
    .unwrap();
    assert_eq!(back.stage, "mql");
}

#[test]
fn sales_feedback_sets_a_stage_and_a_backward_move_waits_for_new_activity() {
    let to = "dana@northwind-analytics.io";
    let fields = [
        ("job_title", json!("VP of Sales")),
        ("company_size_min", json!(51)),
        ("country", json!("US")),
    ];
    let d = new_lead(&DEFAULT, to, &fields, vec![ev(to, DemoRequest, 0.0)], now());
    assert_eq!(d.stage, "sql");
    let at = now() + TimeDelta::hours(1);

    let accepted = apply_feedback(&DEFAULT, &d.state, "sal", at).unwrap();
    assert_eq!((accepted.stage.as_str(), accepted.stage_rank), ("sal", 5));
    assert!(accepted.stage_changed && !accepted.created);
    assert_eq!(
        accepted.state.history.last().unwrap().cause,
        ChangeCause::Feedback
    );
    assert!(
        accepted.summary.ends_with("; set by sales"),
        "{}",
        accepted.summary
    );

    // Sales rejects: back to nurture, and the demo request alone does not undo that.
    let rejected = apply_feedback(&DEFAULT, &d.state, "nurture", at).unwrap();
    assert_eq!(rejected.stage, "nurture");
    assert!(rejected
        .reasons
        .iter()
        .any(|r| r == "would move to sql, but waits for activity newer than its recycle"));
    let late = ev(to, FormSubmit, 2.0);
    let still = qualify(&DEFAULT, Some(&rejected.state), &[], &[late], at).unwrap();
    assert_eq!(still.stage, "nurture");
    let fresh = Engagement {
        at: at + TimeDelta::minutes(5),
        ..ev(to, EmailClick, 0.0)
    };
    let again = qualify(
        &DEFAULT,
        Some(&still.state),
        &[],
        &[fresh],
        at + TimeDelta::minutes(5),
    )
    .unwrap();
    assert_eq!(again.stage, "sql");

    assert_eq!(
        apply_feedback(&DEFAULT, &d.state, "won", at).unwrap_err(),
        FeedbackError::UnknownStage {
            stage: "won".into(),
            known: "subscriber, lead, nurture, mql, sql, sal, opportunity, customer, disqualified"
                .into()
        }
    );
    let junk = apply_feedback(&DEFAULT, &d.state, "disqualified", at).unwrap();
    assert_eq!(junk.stage, "disqualified");
    assert_eq!(junk.summary, "Disqualified: disqualified by sales");
}

#[test]
fn a_lead_in_sales_hands_is_not_moved_by_a_disqualifier_but_the_crm_is_told() {
    let to = "dana@northwind-analytics.io";
    let d = new_lead(&DEFAULT, to, &[], vec![ev(to, DemoRequest, 0.0)], now());
    let customer = apply_feedback(&DEFAULT, &d.state, "customer", now()).unwrap();
    let d2 = qualify(
        &DEFAULT,
        Some(&customer.state),
        &[],
        &[ev(to, Unsubscribe, 0.0)],
        now(),
    )
    .unwrap();
    assert_eq!(d2.stage, "customer");
    assert!(d2.reasons.iter().any(|r| r.contains(
        "disqualifier noted, stage kept because customer is in sales' hands: unsubscribed"
    )));
    let u = d2.crm_update(&DEFAULT, CrmKind::Hubspot, 7);
    assert_eq!(u.disqualified.as_deref(), Some("unsubscribed"));
    assert_eq!(u.stage_values["lifecyclestage"], "customer");
}

#[test]
fn a_recycle_rule_that_would_fire_at_once_blocks_the_promotion() {
    let text = EMBEDDED_RULES.replace(
        "from = [\"mql\", \"sql\"]\nto = \"nurture\"\ninactive_days = 120\nengagement_below = 5",
        "from = [\"sql\"]\nto = \"nurture\"\nwhen = { field = \"custom.timeline\", equals = \"next year\" }",
    );
    let rules = Rules::parse(&text, "t.toml").unwrap();
    let to = "dana@northwind-analytics.io";
    let fields = [
        ("job_title", json!("VP of Sales")),
        ("company_size_min", json!(51)),
    ];
    let d = new_lead(&rules, to, &fields, vec![ev(to, DemoRequest, 1.0)], now());
    assert_eq!(d.stage, "sql");
    let later = patch(
        to,
        &[("custom.timeline", json!("Next year"))],
        0.0,
        "typeform",
    );
    let d2 = qualify(&rules, Some(&d.state), &[later], &[], now()).unwrap();
    assert_eq!(d2.stage, "nurture");
    let fresh = now() + TimeDelta::minutes(1);
    let click = Engagement {
        at: fresh,
        ..ev(to, EmailClick, 0.0)
    };
    let d3 = qualify(&rules, Some(&d2.state), &[], &[click], fresh).unwrap();
    assert_eq!(d3.stage, "nurture");
    assert!(d3
        .reasons
        .iter()
        .any(|r| r
            == "would move to sql, but recycle rule \"gone quiet\" would take it straight back"));
}

/// The state without the path-dependent part (which intermediate stages were recorded).
fn outcome(mut s: LeadState) -> LeadState {
    s.history.clear();
    s
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[derive(Clone)]
enum Item {
    P(LeadPatch),
    E(Engagement),
}

fn run(rules: &Rules, items: &[Item]) -> LeadState {
    let mut state: Option<LeadState> = None;
    for it in items {
        let (p, e) = match it {
            Item::P(p) => (vec![p.clone()], vec![]),
            Item::E(e) => (vec![], vec![e.clone()]),
        };
        state = Some(qualify(rules, state.as_ref(), &p, &e, now()).unwrap().state);
    }
    state.unwrap()
}

#[test]
fn every_order_of_the_same_events_gives_the_same_lead() {
    let to = "casey@meridian-apps.com";
    let items = vec![
        Item::P(patch(
            to,
            &[("job_title", json!("Marketing Manager"))],
            5.0,
            "typeform",
        )),
        Item::P(patch(
            to,
            &[("job_title", json!("VP Marketing"))],
            2.0,
            "tally",
        )),
        Item::P(patch(
            to,
            &[
                ("company_size_min", json!(120)),
                ("country", json!("US")),
                ("company", json!("Meridian Apps")),
            ],
            4.0,
            "typeform",
        )),
        Item::E(ev(to, FormSubmit, 1.0)),
        Item::E(ev(to, MeetingBooked, 1.0)),
        // The same form submission delivered twice.
        Item::E(ev(to, FormSubmit, 1.0)),
    ];
    let baseline = run(&DEFAULT, &items);
    assert_eq!(baseline.stage, "mql");
    assert_eq!(baseline.fit_score, 50.0);
    assert!((baseline.engagement_score - 35.0 * 0.5f64.powf(1.0 / 30.0)).abs() < 1e-9);
    assert_eq!(baseline.engagement.count(FormSubmit), 1);
    assert_eq!(
        baseline.fields[&FieldName::parse("job_title").unwrap()].value,
        json!("VP Marketing")
    );
    let baseline = outcome(baseline);
    let perms = permutations(&items);
    assert_eq!(perms.len(), 720);
    for (i, order) in perms.iter().enumerate() {
        assert_eq!(outcome(run(&DEFAULT, order)), baseline, "permutation {i}");
    }
    // One call with everything at once agrees too.
    let (mut ps, mut es) = (vec![], vec![]);
    for it in &items {
        match it {
            Item::P(p) => ps.push(p.clone()),
            Item::E(e) => es.push(e.clone()),
        }
    }
    let once = qualify(&DEFAULT, None, &ps, &es, now()).unwrap();
    assert_eq!(outcome(once.state), baseline);
}

#[test]
fn every_order_ends_disqualified_with_the_same_reasons() {
    let to = "casey@meridian-apps.com";
    let items = vec![
        Item::P(patch(
            to,
            &[("job_title", json!("CEO")), ("company_size_min", json!(80))],
            3.0,
            "typeform",
        )),
        Item::E(ev(to, DemoRequest, 2.0)),
        Item::E(ev(to, Unsubscribe, 1.0)),
        Item::E(ev(to, Bounce, 0.5)),
    ];
    let baseline = outcome(run(&DEFAULT, &items));
    assert_eq!(baseline.stage, "disqualified");
    let codes: Vec<DqCode> = baseline
        .disqualification
        .as_ref()
        .unwrap()
        .reasons
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [DqCode::Bounce, DqCode::Unsubscribe]);
    for order in permutations(&items) {
        assert_eq!(outcome(run(&DEFAULT, &order)), baseline);
    }
}

#[test]
fn concurrent_events_for_one_lead_give_the_same_state_as_sequential_ones() {
    let to = "casey@meridian-apps.com";
    let mut items: Vec<Item> = vec![
        Item::P(patch(
            to,
            &[("job_title", json!("Head of Growth"))],
            3.0,
            "typeform",
        )),
        Item::P(patch(
            to,
            &[("company_size_min", json!(300)), ("country", json!("CA"))],
            2.0,
            "tally",
        )),
    ];
    items.extend(
        [
            FormSubmit,
            ContentDownload,
            ContentDownload,
            ContentDownload,
            EmailClick,
            WebinarSignup,
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Item::E(Engagement {
                source: format!("s{i}"),
                ..ev(to, *k, i as f64)
            })
        }),
    );
    let sequential = outcome(run(&DEFAULT, &items));
    for _ in 0..10 {
        // The pipeline's contract: updates to one lead are serialised (here by a mutex).
        let lead: Mutex<Option<LeadState>> = Mutex::new(None);
        std::thread::scope(|s| {
            for it in &items {
                let lead = &lead;
                s.spawn(move || {
                    let mut guard = lead.lock().unwrap();
                    let (p, e) = match it {
                        Item::P(p) => (vec![p.clone()], vec![]),
                        Item::E(e) => (vec![], vec![e.clone()]),
                    };
                    let d = qualify(&DEFAULT, guard.as_ref(), &p, &e, now()).unwrap();
                    *guard = Some(d.state);
                });
            }
        });
        let got = lead.into_inner().unwrap().unwrap();
        assert_eq!(outcome(got), sequential);
    }
    assert_eq!(sequential.stage, "mql");
}

#[test]
fn the_waterfall_file_orders_mql_then_sal_then_sql() {
    let names = |r: &Rules| -> Vec<String> { r.stages().iter().map(|s| s.name.clone()).collect() };
    let rank = |r: &Rules, n: &str| names(r).iter().position(|x| x == n).unwrap();
    let w = &*WATERFALL;
    assert!(rank(w, "mql") < rank(w, "sal") && rank(w, "sal") < rank(w, "sql"));
    let d = &*DEFAULT;
    assert!(rank(d, "mql") < rank(d, "sql") && rank(d, "sql") < rank(d, "sal"));
    assert!(!w.stage("sal").unwrap().is_automatic() && w.stage("sql").unwrap().is_automatic());

    let to = "robin@quantive.io";
    let fields = [
        ("job_title", json!("CTO")),
        ("company_size_min", json!(51)),
        ("country", json!("US")),
        ("custom.budget", json!(50000)),
        ("custom.need", json!("yes")),
        ("custom.timeline", json!("now")),
    ];
    let evs = || vec![ev(to, DemoRequest, 0.0)];
    // Default order: intent makes it an SQL straight away.
    assert_eq!(new_lead(&DEFAULT, to, &fields, evs(), now()).stage, "sql");
    // Waterfall: an MQL until sales accepts it, then an SQL because BANT holds.
    let m = new_lead(w, to, &fields, evs(), now());
    assert_eq!(m.stage, "mql");
    let accepted = apply_feedback(w, &m.state, "sal", now()).unwrap();
    assert_eq!(accepted.stage, "sql");
    let moves: Vec<(String, ChangeCause)> = accepted
        .state
        .history
        .iter()
        .map(|c| (c.to.clone(), c.cause))
        .collect();
    assert_eq!(
        moves,
        [
            ("mql".to_string(), ChangeCause::Rules),
            ("sal".to_string(), ChangeCause::Feedback),
            ("sql".to_string(), ChangeCause::Rules),
        ]
    );
    assert_eq!(
        w.stage_values("sql", CrmKind::Hubspot)["lifecyclestage"],
        "salesqualifiedlead"
    );
}

#[test]
fn the_rules_version_changes_with_the_file_and_is_recorded_in_the_history() {
    let v1 = DEFAULT.version().to_string();
    assert_eq!(v1.len(), 12);
    assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));
    let edited = Rules::parse(
        &format!("{EMBEDDED_RULES}\n# agreed 2026-03-01\n"),
        "r.toml",
    )
    .unwrap();
    assert_ne!(edited.version(), v1);
    assert_eq!(Rules::parse(EMBEDDED_RULES, "again").unwrap().version(), v1);

    let to = "chris@fjord-systems.no";
    let d = new_lead(&DEFAULT, to, &[("job_title", json!("CEO"))], vec![], now());
    assert_eq!(d.rules_version, v1);
    assert_eq!(d.state.history[0].rules_version, v1);
    let d2 = qualify(
        &edited,
        Some(&d.state),
        &[patch(to, &[("company_size_min", json!(60))], 0.0, "x")],
        &[ev(to, FormSubmit, 0.0), ev(to, DemoRequest, 0.0)],
        now(),
    )
    .unwrap();
    assert_eq!(d2.state.rules_version, edited.version());
    let h = &d2.state.history;
    assert_eq!(
        (h[0].rules_version.as_str(), h[1].rules_version.as_str()),
        (v1.as_str(), edited.version())
    );
}

#[test]
fn the_crm_update_carries_scores_stage_values_and_a_short_reason() {
    let to = "dana@northwind-analytics.io";
    let p = profiles().remove(0);
    let d = new_lead(
        &DEFAULT,
        to,
        &p.fields,
        vec![ev(to, FormSubmit, 0.0), ev(to, DemoRequest, 0.0)],
        now(),
    );
    let u = d.crm_update(&DEFAULT, CrmKind::Hubspot, 3);
    assert_eq!(u.email.as_str(), to);
    assert_eq!(u.version, 3);
    assert_eq!((u.stage.as_str(), u.stage_rank), ("sql", 4));
    assert_eq!(
        u.stage_values,
        BTreeMap::from([
            (
                "lifecyclestage".to_string(),
                "salesqualifiedlead".to_string()
            ),
            ("hs_lead_status".to_string(), "NEW".to_string()),
        ])
    );
    assert_eq!((u.fit_score, u.engagement_score, u.score), (60, 40, 100));
    assert_eq!(
        u.reason,
        "SQL: fit 60 (senior title +20, 51-200 employees +15, target country +10, …); \
         engagement 40; demo_request"
    );
    assert_eq!(u.fields[&FieldName::parse("country").unwrap()], json!("US"));
    assert_eq!(u.disqualified, None);
    assert_eq!(u.changes, [crate::outbox::Change::Created]);
    let sf = d.crm_update(&DEFAULT, CrmKind::Salesforce, 3);
    assert_eq!(sf.stage_values["Status"], "Open - Not Contacted");
    assert_eq!(
        d.crm_update(&DEFAULT, CrmKind::Pipedrive, 3).stage_values["label"],
        "Hot"
    );
    assert!(d
        .crm_update(&DEFAULT, CrmKind::DryRun, 3)
        .stage_values
        .is_empty());

    let later = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[ev(to, EmailClick, 0.0)],
        now(),
    )
    .unwrap();
    assert_eq!(
        later.crm_update(&DEFAULT, CrmKind::Hubspot, 4).changes,
        [crate::outbox::Change::ScoreChanged]
    );
    let same = qualify(&DEFAULT, Some(&later.state), &[], &[], now()).unwrap();
    assert!(same
        .crm_update(&DEFAULT, CrmKind::Hubspot, 5)
        .changes
        .is_empty());
}

#[test]
fn the_decision_serialises_for_leadgate_map() {
    let to = "dana@northwind-analytics.io";
    let d = new_lead(
        &DEFAULT,
        to,
        &[("job_title", json!("VP"))],
        vec![ev(to, EmailClick, 1.0)],
        now(),
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["stage"], "subscriber");
    assert_eq!(v["breakdown"][0]["rule"], "senior title");
    assert_eq!(v["breakdown"][0]["score"], "fit");
    // Decayed points are rounded for people: 2 × 0.5^(1/30).
    assert_eq!(v["breakdown"][1]["points"], json!(1.95));
    assert_eq!(v["state"]["stage"], "subscriber");
    let back: LeadState = serde_json::from_value(v["state"].clone()).unwrap();
    assert_eq!(back, d.state);
}

#[test]
fn inputs_must_describe_one_lead() {
    assert_eq!(
        qualify(&DEFAULT, None, &[], &[], now()).unwrap_err(),
        QualifyError::NoLead
    );
    let a = ev("a@acme-corp.io", FormSubmit, 0.0);
    let b = ev("b@acme-corp.io", FormSubmit, 0.0);
    let err = qualify(&DEFAULT, None, &[], &[a, b], now()).unwrap_err();
    assert_eq!(
        err,
        QualifyError::OtherLead {
            what: "engagement",
            index: 1
        }
    );
    // No personal data in the message (it may be logged).
    assert!(!err.to_string().contains('@'));
}

#[test]
fn a_stage_the_rules_no_longer_have_is_re_evaluated() {
    let to = "chris@fjord-systems.no";
    let mut d = new_lead(&DEFAULT, to, &[("job_title", json!("CEO"))], vec![], now());
    d.state.stage = "prospect".into();
    let d2 = qualify(
        &DEFAULT,
        Some(&d.state),
        &[],
        &[ev(to, FormSubmit, 0.0)],
        now(),
    )
    .unwrap();
    assert_eq!(d2.stage, "lead");
    assert!(d2.reasons[0].starts_with("stage \"prospect\" is not in rules"));
    assert_eq!(
        d2.state.history.last().unwrap().from.as_deref(),
        Some("prospect")
    );
}

#[test]
fn both_shipped_files_give_every_stage_its_crm_values() {
    for rules in [&*DEFAULT, &*WATERFALL] {
        for s in rules.stages() {
            assert!(
                s.crm_values(CrmKind::Hubspot)
                    .contains_key("lifecyclestage"),
                "{}",
                s.name
            );
            assert!(s.description.is_some(), "{}", s.name);
        }
        assert_eq!(rules.stages().last().unwrap().name, "disqualified");
    }
}
