//! File-level tests: loading, `check` messages, routing, `when`/`for_each`, `[[test]]` cases.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;
use crate::config::EnvVars;
use crate::lead::EngagementKind;

/// A temporary directory with a settings file whose sources map with the given files.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Dir(d)
    }

    /// Settings with one source `src` per `(name, mapping)` pair.
    fn config(&self, sources: &[(&str, Option<&str>)]) -> Config {
        let mut text = String::new();
        for (name, mapping) in sources {
            text.push_str(&format!(
                "[[sources]]\nname = \"{name}\"\nscheme = \"typeform\"\nsecret_env = \"S\"\n"
            ));
            if let Some(m) = mapping {
                text.push_str(&format!("mapping = \"{m}\"\n"));
            }
        }
        let env: EnvVars = BTreeMap::from([("S".to_string(), "x".to_string())]);
        Config::from_toml(&text, "leadgate.toml", self.0.path(), &env).unwrap()
    }

    fn load(&self, mapping: &str) -> Result<MappingSet, Vec<MappingError>> {
        MappingSet::load(&self.config(&[("src", Some(mapping))]))
    }

    fn errors(&self, mapping: &str) -> Vec<String> {
        self.load(mapping)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }
}

fn t0() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

const FORM: &str = r#"
description = "a small form"

[[lead]]
email = ["$.answers.work_email", "$.answers.email"]
at = "$.submitted_at"

[lead.fields]
first_name = ["$.answers.first_name", { select = "$.answers.name", transform = [{ split_name = "first" }] }]
last_name = ["$.answers.last_name", { select = "$.answers.name", transform = [{ split_name = "last" }] }]
company_size_min = { select = "$.answers.size", transform = [{ range = "min" }] }
company_size_max = { select = "$.answers.size", transform = [{ range = "max" }] }
phone = { select = "$.answers.phone", transform = ["phone"], on_error = "skip" }
domain = { select = ["$.answers.website", "$.answers.work_email", "$.answers.email"], transform = ["domain"] }
lead_source = { value = "web form" }
custom.timeline = "$.answers.timeline"

[[engagement]]
kind = "form_submit"
email = ["$.answers.work_email", "$.answers.email"]
at = "$.submitted_at"
detail.form_id = "$.form_id"
"#;

#[test]
fn a_form_maps_to_a_lead_and_a_submission() {
    let d = Dir::new(&[("m.toml", FORM)]);
    let set = d.load("m.toml").unwrap();
    let ev = json!({
        "form_id": "f1",
        "submitted_at": "2026-11-20T10:16:41Z",
        "answers": {"email": " Kin@Example.COM ", "name": "Kin Lee", "size": "1,001-5,000",
                    "phone": "not a phone", "timeline": "Q1"}
    });
    let m = set.map("src", &ev, t0()).unwrap();
    assert_eq!(m.leads.len(), 1);
    let lead = &m.leads[0];
    assert_eq!(lead.email.as_str(), "kin@example.com");
    assert_eq!(
        lead.at,
        "2026-11-20T10:16:41Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(lead.source, "src");
    let fields = serde_json::to_value(&lead.fields).unwrap();
    assert_eq!(
        fields,
        json!({
            "first_name": "Kin", "last_name": "Lee",
            "company_size_min": 1001, "company_size_max": 5000,
            "domain": "example.com", "lead_source": "web form", "custom.timeline": "Q1"
        })
    );
    assert_eq!(m.engagements.len(), 1);
    assert_eq!(m.engagements[0].kind, EngagementKind::FormSubmit);
    assert_eq!(m.engagements[0].detail["form_id"], "f1");
}

#[test]
fn without_a_provider_time_the_received_time_is_used() {
    let d = Dir::new(&[("m.toml", FORM)]);
    let set = d.load("m.toml").unwrap();
    let m = set
        .map("src", &json!({"answers": {"email": "a@b.io"}}), t0())
        .unwrap();
    assert_eq!(m.leads[0].at, t0());
    assert_eq!(m.engagements[0].at, t0());
}

#[test]
fn unmappable_reasons_name_the_key_but_never_the_data() {
    let d = Dir::new(&[("m.toml", FORM)]);
    let set = d.load("m.toml").unwrap();
    let e = set
        .map("src", &json!({"answers": {"name": "Kin Lee"}}), t0())
        .unwrap_err();
    assert_eq!(e.to_string(), "m.toml: lead.email: no selector matched");
    let e = set
        .map(
            "src",
            &json!({"answers": {"email": "kin.lee(at)example"}}),
            t0(),
        )
        .unwrap_err();
    assert_eq!(e.key, "lead.email");
    assert_eq!(
        e.reason,
        "not a valid email address: not of the form name@example.com"
    );
    assert!(!e.to_string().contains("kin"));
    let e = set
        .map(
            "src",
            &json!({"answers": {"email": "a@b.io", "size": "Kin's team"}}),
            t0(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.toml: lead.fields.company_size_max: not a size range like 51-200, 1,001-5,000, 10000+ or <10"
    );
    let e = set.map("other", &json!({}), t0()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sources.other.mapping: this source has no mapping"
    );
}

const EVENTS: &str = r#"
[[engagement]]
kind = "email_click"
for_each = "$"
when = { select = "@.event", equals = "click" }
email = "@.email"
at = "@.timestamp"
detail.url = { select = "@.url", transform = [{ regex = "^[^?#]*" }] }

[[engagement]]
kind = "bounce"
for_each = "$[*]"
when = { select = "@.event", one_of = ["bounce", "dropped"] }
email = "@.email"
at = "@.timestamp"
"#;

#[test]
fn for_each_and_when_turn_a_batch_into_engagements() {
    let d = Dir::new(&[("m.toml", EVENTS)]);
    let set = d.load("m.toml").unwrap();
    let batch = json!([
        {"event": "processed", "email": "a@x.io", "timestamp": 1700000000},
        {"event": "click", "email": "a@x.io", "timestamp": 1700000100, "url": "https://x.io/pricing?e=a@x.io"},
        {"event": "dropped", "email": "b@x.io", "timestamp": 1700000200},
        {"event": "click", "email": "c@x.io", "timestamp": 1700000300, "url": "https://x.io/"}
    ]);
    let m = set.map("src", &batch, t0()).unwrap();
    let got: Vec<(&str, &str, String)> = m
        .engagements
        .iter()
        .map(|e| (e.kind.as_str(), e.email.as_str(), e.at.to_rfc3339()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "email_click",
                "a@x.io",
                "2023-11-14T22:15:00+00:00".to_string()
            ),
            (
                "email_click",
                "c@x.io",
                "2023-11-14T22:18:20+00:00".to_string()
            ),
            ("bounce", "b@x.io", "2023-11-14T22:16:40+00:00".to_string()),
        ]
    );
    assert_eq!(m.engagements[0].detail["url"], "https://x.io/pricing");
    assert!(m.leads.is_empty());

    // A bad item names itself, not its data.
    let bad = json!([{"event": "click", "email": "", "timestamp": 1}, {"event": "click", "timestamp": 1}]);
    let e = set.map("src", &bad, t0()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.toml: engagement[0].email: selector matched nothing (item 0)"
    );
}

const ROUTER: &str = r#"
[route]
by = "$.event"
cases = { "invitee.created" = "routes/created.toml", "invitee.canceled" = "routes/canceled.toml" }
"#;
const CREATED: &str = r#"
[[lead]]
email = "$.payload.email"
[[engagement]]
kind = "meeting_booked"
email = "$.payload.email"
"#;
const CANCELED: &str = r#"
[[lead]]
email = "$.payload.email"
fields.custom.meeting = { value = "canceled" }
"#;

#[test]
fn a_route_picks_the_mapping_by_a_discriminator() {
    let d = Dir::new(&[
        ("calendly.toml", ROUTER),
        ("routes/created.toml", CREATED),
        ("routes/canceled.toml", CANCELED),
    ]);
    let set = d.load("calendly.toml").unwrap();
    let created = json!({"event": "invitee.created", "payload": {"email": "a@x.io"}});
    let m = set.map("src", &created, t0()).unwrap();
    assert_eq!((m.leads.len(), m.engagements.len()), (1, 1));
    let canceled = json!({"event": "invitee.canceled", "payload": {"email": "a@x.io"}});
    let m = set.map("src", &canceled, t0()).unwrap();
    assert_eq!((m.leads.len(), m.engagements.len()), (1, 0));
    assert_eq!(m.leads[0].fields.values().next(), Some(&json!("canceled")));
    let other = json!({"event": "invitee_no_show.created", "payload": {"email": "a@x.io"}});
    let e = set.map("src", &other, t0()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "calendly.toml: route: no case for this value of route.by, and no default"
    );
    let e = set.map("src", &json!({}), t0()).unwrap_err();
    assert_eq!(
        e.reason,
        "route.by matched nothing, and there is no default"
    );

    // A failure inside the routed file names that file.
    let e = set
        .map("src", &json!({"event": "invitee.created"}), t0())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "routes/created.toml: lead.email: selector matched nothing"
    );
}

#[test]
fn a_route_default_catches_the_rest_and_routes_do_not_nest() {
    let d = Dir::new(&[
        (
            "r.toml",
            "[route]\nby = \"$.form_id\"\ncases = { a = \"x.toml\" }\ndefault = \"y.toml\"\n",
        ),
        ("x.toml", "[[lead]]\nemail = \"$.a\"\n"),
        ("y.toml", "[[lead]]\nemail = \"$.b\"\n"),
        (
            "nested.toml",
            "[route]\nby = \"$.k\"\ndefault = \"r.toml\"\n",
        ),
    ]);
    let set = d.load("r.toml").unwrap();
    let m = set
        .map("src", &json!({"form_id": "zzz", "b": "b@x.io"}), t0())
        .unwrap();
    assert_eq!(m.leads[0].email.as_str(), "b@x.io");
    let errs = d.errors("nested.toml");
    assert_eq!(
        errs,
        vec![
            "nested.toml: route.default: r.toml has errors (listed under its name)",
            "r.toml: route: a file reached through a route must map, not route again",
        ]
    );
}

// ---- `leadgate check` messages: exact text ----

#[test]
fn check_names_an_unknown_transform() {
    let d = Dir::new(&[(
        "m.toml",
        "[[lead]]\nemail = \"$.email\"\n[lead.fields]\nphone = { select = \"$.phone\", transform = [\"e164\"] }\n",
    )]);
    assert_eq!(
        d.errors("m.toml"),
        vec!["m.toml: lead.fields.phone.transform[0]: unknown transform \"e164\"; known transforms are trim, lower, upper, split_name, email, phone, domain, number, boolean, range, lookup, default, template, join, regex, datetime, tally_options"]
    );
}

#[test]
fn check_names_an_invalid_jsonpath() {
    let d = Dir::new(&[(
        "m.toml",
        "[[lead]]\nemail = \"$.email\"\n[lead.fields]\ncompany = \"$.answers[?@.field.ref == ]\"\n",
    )]);
    assert_eq!(
        d.errors("m.toml"),
        vec![format!(
            "m.toml: lead.fields.company: \"$.answers[?@.field.ref == ]\" is not a valid JSONPath: {}",
            serde_json_path::JsonPath::parse("$.answers[?@.field.ref == ]").unwrap_err()
        )]
    );
}

#[test]
fn check_names_an_unknown_field() {
    let d = Dir::new(&[(
        "m.toml",
        "[[lead]]\nemail = \"$.email\"\n[lead.fields]\njobtitle = \"$.title\"\n",
    )]);
    let errs = d.errors("m.toml");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("m.toml: lead.fields.jobtitle: unknown field \"jobtitle\"; known fields are first_name, last_name, company, job_title,"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].ends_with(", or custom.<name> for your own"),
        "{}",
        errs[0]
    );
}

#[test]
fn check_names_a_missing_email_selector() {
    let d = Dir::new(&[(
        "m.toml",
        "[[lead]]\n[lead.fields]\ncompany = \"$.company\"\n",
    )]);
    assert_eq!(
        d.errors("m.toml"),
        vec!["m.toml: lead.email: missing: every output needs an email selector (the lead's key)"]
    );
}

#[test]
fn check_reports_every_error_in_a_file_not_just_the_first() {
    let d = Dir::new(&[(
        "m.toml",
        r#"
[[lead]]
email = "$.email"
[lead.fields]
jobtitle = "$.title"
phone = { select = "$.phone[", transform = ["e164"] }

[[engagement]]
kind = "click"
when = { select = "@.event", equal = "click" }

[[engagement]]
kind = "email_open"
email = "@.email"
for_each = "$.events["
"#,
    )]);
    let errs = d.errors("m.toml");
    let keys: Vec<&str> = errs.iter().map(|e| e.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "lead.fields.jobtitle",
            "lead.fields.phone.select",
            "lead.fields.phone.transform[0]",
            "engagement[0].kind",
            "engagement[0].when",
            "engagement[0].email",
            "engagement[1].for_each",
        ],
        "{errs:#?}"
    );
}

#[test]
fn check_names_structural_mistakes_and_syntax_errors() {
    let d = Dir::new(&[
        (
            "typo.toml",
            "[[lead]]\nemail = \"$.email\"\n[lead.feilds]\ncompany = \"$.c\"\n",
        ),
        ("syntax.toml", "[[lead]]\nemail = \"$.email\n"),
        ("empty.toml", "description = \"nothing yet\"\n"),
    ]);
    let e = d.errors("typo.toml");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("typo.toml: lead[0].feilds: unknown field `feilds`"),
        "{}",
        e[0]
    );
    let e = d.errors("syntax.toml");
    assert!(e[0].starts_with("syntax.toml: line 2: "), "{}", e[0]);
    assert_eq!(
        d.errors("empty.toml"),
        vec!["empty.toml: maps nothing: add [[lead]] or [[engagement]] blocks, or a [route]"]
    );
}

#[test]
fn a_missing_mapping_file_names_the_source() {
    let d = Dir::new(&[]);
    let errs =
        MappingSet::load(&d.config(&[("typeform", Some("mappings/typeform.toml"))])).unwrap_err();
    assert_eq!(
        errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["leadgate.toml: sources.typeform.mapping: mappings/typeform.toml does not exist"]
    );
}

#[test]
fn sources_without_a_mapping_have_none_and_shared_files_load_once() {
    let d = Dir::new(&[("m.toml", FORM)]);
    let set =
        MappingSet::load(&d.config(&[("a", Some("m.toml")), ("b", Some("m.toml")), ("c", None)]))
            .unwrap();
    assert_eq!(set.sources(), vec!["a", "b"]);
    assert!(!set.has_mapping("c"));
    assert_eq!(set.suites.len(), 1);
}

// ---- [[test]] cases ----

const WITH_TESTS: &str = r#"
[[lead]]
email = "$.email"
at = "$.at"
[lead.fields]
first_name = { select = "$.name", transform = [{ split_name = "first" }] }
company_size_min = { select = "$.size", transform = [{ range = "min" }] }
custom.plan = "$.plan"

[[engagement]]
kind = "form_submit"
email = "$.email"

[[test]]
name = "full answers"
json = '{"email": "Ada@X.io", "name": "Ada Lovelace", "size": "51-200", "plan": "pro", "at": "2026-11-20T10:00:00Z"}'
[[test.lead]]
email = "ada@x.io"
at = 2026-11-20T10:00:00Z
first_name = "Ada"
company_size_min = 51
custom.plan = "pro"
[[test.engagement]]
kind = "form_submit"
at = 2000-01-01T00:00:00Z

[[test]]
name = "missing optional answers"
body = "email=kin%40x.io"
content_type = "application/x-www-form-urlencoded"
received_at = 2026-11-21T00:00:00Z
[[test.lead]]
at = 2026-11-21T00:00:00Z
absent = ["first_name", "company_size_min", "custom.plan"]
[[test.engagement]]
kind = "form_submit"

[[test]]
name = "no email"
json = '{"name": "Ada"}'
unmappable = "lead.email: selector matched nothing"
"#;

#[test]
fn test_cases_in_a_file_pass_when_the_mapping_does_what_they_say() {
    let d = Dir::new(&[("m.toml", WITH_TESTS)]);
    let set = d.load("m.toml").unwrap();
    assert_eq!(set.test_count(), 3);
    assert_eq!(set.run_tests(), vec![]);
}

#[test]
fn failing_test_cases_say_what_differs() {
    let broken = WITH_TESTS
        .replace(
            "transform = [{ split_name = \"first\" }]",
            "transform = [{ split_name = \"last\" }]",
        )
        .replace(
            "unmappable = \"lead.email: selector matched nothing\"",
            "unmappable = \"lead.email: nope\"",
        )
        .replace("custom.plan = \"$.plan\"", "custom.plan = \"$.name\"");
    let d = Dir::new(&[("m.toml", &broken)]);
    let set = d.load("m.toml").unwrap();
    let got: Vec<String> = set.run_tests().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "m.toml: test \"full answers\": lead[0].custom.plan: expected \"pro\", got \"Ada Lovelace\"",
            "m.toml: test \"full answers\": lead[0].first_name: expected \"Ada\", got \"Lovelace\"",
            "m.toml: test \"no email\": expected unmappable \"lead.email: nope\", got unmappable \"lead.email: selector matched nothing\"",
        ]
    );
}

#[test]
fn malformed_test_cases_are_check_errors() {
    let d = Dir::new(&[(
        "m.toml",
        r#"
[[lead]]
email = "$.email"
[[test]]
name = "no payload"
[[test]]
name = "bad file"
payload = "missing.json"
[[test]]
name = "bad expectations"
json = '{"email": "a@b.io"}'
[[test.lead]]
jobtitle = "x"
[[test.engagement]]
kind = "click"
"#,
    )]);
    let errs = d.errors("m.toml");
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert_eq!(
        errs[0],
        "m.toml: test[0]: give the event as payload (a file), json or body"
    );
    assert!(
        errs[1].starts_with("m.toml: test[1].payload: cannot read "),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("m.toml: test[2].lead[0].jobtitle: unknown field"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3]
            .starts_with("m.toml: test[2].engagement[0].kind: unknown engagement kind \"click\""),
        "{}",
        errs[3]
    );
}

#[test]
fn routed_files_tests_run_too() {
    let created = format!(
        "{CREATED}\n[[test]]\nname = \"created\"\njson = '{{\"payload\": {{\"email\": \"a@x.io\"}}}}'\n[[test.lead]]\nemail = \"b@x.io\"\n[[test.engagement]]\nkind = \"meeting_booked\"\n"
    );
    let d = Dir::new(&[
        ("calendly.toml", ROUTER),
        ("routes/created.toml", &created),
        ("routes/canceled.toml", CANCELED),
    ]);
    let set = d.load("calendly.toml").unwrap();
    let got: Vec<String> = set.run_tests().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec!["routes/created.toml: test \"created\": lead[0].email: expected \"b@x.io\", got \"a@x.io\""]
    );
}

// ---- sharing and stored events ----

#[test]
fn a_mapping_set_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<MappingSet>();
    shared::<std::sync::Arc<MappingSet>>();
}

#[test]
fn stored_events_give_back_the_json_ingest_decoded() {
    use crate::store::{EventId, EventStatus};
    let form = StoredEvent {
        id: EventId(1),
        source: "src".into(),
        dedupe_key: "k".into(),
        received_at_ms: 1_700_000_000_123,
        content_type: "application/x-www-form-urlencoded".into(),
        body: bytes::Bytes::from_static(b"email=a%40b.io"),
        payload: Some(r#"{"email":"a@b.io"}"#.into()),
        status: EventStatus::Received,
        status_reason: None,
    };
    assert_eq!(event_value(&form).unwrap(), json!({"email": "a@b.io"}));
    assert_eq!(
        event_received_at(&form).timestamp_millis(),
        1_700_000_000_123
    );
    let latin1 = StoredEvent {
        content_type: "application/json; charset=iso-8859-1".into(),
        body: bytes::Bytes::from_static(b"{\"name\":\"Ren\xE9\",\"email\":\"a@b.io\"}"),
        payload: None,
        ..form.clone()
    };
    assert_eq!(event_value(&latin1).unwrap()["name"], json!("René"));

    let d = Dir::new(&[("m.toml", "[[lead]]\nemail = \"$.email\"\n")]);
    let set = d.load("m.toml").unwrap();
    let m = set.map_event(&latin1).unwrap();
    assert_eq!(m.leads[0].at, event_received_at(&latin1));
    let broken = StoredEvent {
        payload: Some("{".into()),
        ..form
    };
    let e = set.map_event(&broken).unwrap_err();
    assert_eq!(e.key, "payload");
}

#[test]
fn load_file_checks_one_file_on_its_own() {
    let d = Dir::new(&[("m.toml", WITH_TESTS)]);
    let settings = MappingSettings {
        default_phone_region: "GB".into(),
    };
    let set = MappingSet::load_file("m", &d.0.path().join("m.toml"), &settings).unwrap();
    assert_eq!(set.run_tests(), vec![]);
    let bad = MappingSettings {
        default_phone_region: "XX".into(),
    };
    let e = MappingSet::load_file("m", Path::new("m.toml"), &bad).unwrap_err();
    assert_eq!(e[0].key, "mapping.default_phone_region");
}

#[test]
fn a_stored_event_refused_by_a_broken_mapping_maps_once_the_mapping_is_fixed() {
    use crate::store::{EventId, EventStatus};
    // The form renamed its email question; the mapping still looks for the old name.
    let event = StoredEvent {
        id: EventId(7),
        source: "src".into(),
        dedupe_key: "k7".into(),
        received_at_ms: 1_795_170_000_000,
        content_type: "application/json".into(),
        body: bytes::Bytes::from_static(br#"{"work_email": "ada@example.com", "company": "Acme"}"#),
        payload: None,
        status: EventStatus::Received,
        status_reason: None,
    };
    let broken = Dir::new(&[(
        "m.toml",
        "[[lead]]\nemail = \"$.email\"\nfields.company = \"$.company\"\n",
    )]);
    let e = broken
        .load("m.toml")
        .unwrap()
        .map_event(&event)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.toml: lead.email: selector matched nothing"
    );

    let fixed = Dir::new(&[(
        "m.toml",
        "[[lead]]\nemail = [\"$.email\", \"$.work_email\"]\nfields.company = \"$.company\"\n",
    )]);
    let m = fixed.load("m.toml").unwrap().map_event(&event).unwrap();
    assert_eq!(m.leads[0].email.as_str(), "ada@example.com");
    assert_eq!(m.leads[0].at, event_received_at(&event));
}
