//! The shipped mappings against realistic provider payloads (golden files), their own
//! `[[test]]` cases, and the `check` / `map` commands as an admin runs them.
//!
//! Each fixture under `tests/fixtures/<provider>/` is the raw body exactly as the provider sends
//! it (`.json`, `.form` for urlencoded, `.multipart`); it is decoded as ingest decodes it, mapped
//! with `mappings/<provider>.toml`, and compared with `<name>.expected.json`, the exact `Mapped`
//! JSON. `UPDATE_GOLDEN=1 cargo test --test it mapping` rewrites the golden files: review every
//! change by hand before committing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use leadgate::config::{Config, EnvVars};
use leadgate::ingest::decode;
use leadgate::mapping::{guess_content_type, MappingSet};

/// Every shipped mapping; each is a source of the same name in the test settings.
const SHIPPED: &[&str] = &[
    "typeform",
    "tally",
    "jotform",
    "webflow",
    "hubspot",
    "mailchimp",
    "mandrill",
    "mailgun",
    "sendgrid",
    "postmark",
    "calendly",
    "formstack",
    "cal-com",
    "unbounce",
    "generic",
];

/// (source, fixture): each fixture has a golden `*.expected.json` beside it.
const GOLDEN: &[(&str, &str)] = &[
    ("typeform", "typeform/form_response.json"),
    ("typeform", "typeform/form_response_partial_answers.json"),
    ("tally", "tally/form_response.json"),
    ("jotform", "jotform/submission.multipart"),
    ("jotform", "jotform/submission_missing_answers.multipart"),
    ("webflow", "webflow/form_submission.json"),
    ("hubspot", "hubspot/workflow_contact.json"),
    ("mailchimp", "mailchimp/subscribe.form"),
    ("mailchimp", "mailchimp/profile.form"),
    ("mailchimp", "mailchimp/upemail.form"),
    ("mailchimp", "mailchimp/unsubscribe.form"),
    ("mailchimp", "mailchimp/cleaned.form"),
    ("mailchimp", "mailchimp/cleaned_abuse.form"),
    ("mandrill", "mandrill/events.form"),
    ("mailgun", "mailgun/clicked.json"),
    ("mailgun", "mailgun/failed_permanent.json"),
    ("sendgrid", "sendgrid/events.json"),
    ("postmark", "postmark/bounce.json"),
    ("postmark", "postmark/inbound.json"),
    ("calendly", "calendly/invitee_created.json"),
    ("calendly", "calendly/invitee_canceled.json"),
    ("formstack", "formstack/submission.form"),
    ("cal-com", "cal-com/booking_created.json"),
    ("unbounce", "unbounce/form_submission.form"),
    ("generic", "generic/contact_form.json"),
];

/// The received time of every golden event (the lead's time when the payload has none).
const RECEIVED_AT: &str = "2026-11-20T12:00:00Z";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Settings with one source per shipped mapping. The scheme does not matter to mapping;
/// `typeform` is used for all because it needs nothing but a secret.
fn config() -> Config {
    let mut text = String::new();
    for name in SHIPPED {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nscheme = \"typeform\"\nsecret_env = \"S\"\nmapping = \"mappings/{name}.toml\"\n"
        ));
    }
    let env: EnvVars = BTreeMap::from([("S".to_string(), "x".to_string())]);
    Config::from_toml(&text, "test.toml", root(), &env).expect("test settings are valid")
}

fn shipped() -> (Config, MappingSet) {
    let config = config();
    let set = MappingSet::load(&config).unwrap_or_else(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        panic!("shipped mappings do not load:\n{}", lines.join("\n"))
    });
    (config, set)
}

fn golden_path(fixture: &Path) -> PathBuf {
    let stem = fixture.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    fixture.with_file_name(format!("{stem}.expected.json"))
}

#[test]
fn every_shipped_mapping_maps_its_fixtures_to_the_golden_output() {
    let (config, set) = shipped();
    let received_at: DateTime<Utc> = RECEIVED_AT.parse().unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (source, fixture) in GOLDEN {
        let path = root().join("tests/fixtures").join(fixture);
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let content_type = guess_content_type(&path, &body).expect("fixture extension");
        let limits = &config.source(source).expect("source").decode;
        let value = decode::decode(Some(&content_type), &body, limits)
            .unwrap_or_else(|e| panic!("{fixture} does not decode: {e}"))
            .value;
        let mapped = set
            .map(source, &value, received_at)
            .unwrap_or_else(|e| panic!("{fixture} is unmappable: {e}"));
        let got = serde_json::to_value(&mapped).unwrap();
        let golden = golden_path(&path);
        if update {
            let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
            std::fs::write(&golden, text).unwrap();
            continue;
        }
        let want: serde_json::Value = match std::fs::read_to_string(&golden) {
            Ok(t) => {
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", golden.display()))
            }
            Err(e) => panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden.display()),
        };
        if got != want {
            mismatches.push(format!(
                "{fixture}: got\n{}\n",
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_shipped_mapping_has_a_golden_fixture() {
    for name in SHIPPED {
        assert!(
            GOLDEN.iter().any(|(s, _)| s == name),
            "mappings/{name}.toml has no golden fixture"
        );
    }
}

#[test]
fn the_shipped_mappings_pass_their_own_test_cases() {
    let (_, set) = shipped();
    assert!(
        set.test_count() >= SHIPPED.len(),
        "{} tests",
        set.test_count()
    );
    let failures: Vec<String> = set.run_tests().iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
