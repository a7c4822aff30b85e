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

#[test]
fn the_root_settings_file_wires_its_sources_to_the_shipped_mappings() {
    let env: EnvVars = [
        "TYPEFORM_SECRET",
        "TALLY_SECRET",
        "CALENDLY_SIGNING_KEY",
        "MAILCHIMP_WEBHOOK_TOKEN",
    ]
    .into_iter()
    .map(|k| (k.to_string(), "x".to_string()))
    .collect();
    let config = Config::load(Some(&root().join("leadgate.toml")), &env).unwrap();
    let set = MappingSet::load(&config).unwrap_or_else(|errs| {
        panic!(
            "{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(
        set.sources(),
        vec!["calendly", "mailchimp", "tally", "typeform"]
    );
}

// ---- the commands, as an admin runs them ----

fn leadgate(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(dir)
        .args(args)
        .env("TF_SECRET", "x")
        .env_remove("LEADGATE_CONFIG")
        .output()
        .expect("leadgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A settings file with one source `forms` whose mapping is `mapping`.
fn admin_dir(mapping: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leadgate.toml"),
        "[[sources]]\nname = \"forms\"\nscheme = \"typeform\"\nsecret_env = \"TF_SECRET\"\nmapping = \"mappings/forms.toml\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("mappings/forms.toml"), mapping).unwrap();
    dir
}

const BROKEN: &str = r#"
[[lead]]
[lead.fields]
jobtitle = "$.job"
phone = { select = "$.phone", transform = ["e164"] }
company = "$.answers[?@.ref == ]"
"#;

#[test]
fn check_on_a_broken_mapping_prints_each_error_and_exits_1() {
    let dir = admin_dir(BROKEN);
    let (code, stdout, stderr) = leadgate(dir.path(), &["check"]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let jsonpath_error = serde_json_path::JsonPath::parse("$.answers[?@.ref == ]").unwrap_err();
    assert_eq!(
        lines,
        vec![
            "error: mappings/forms.toml: lead.email: missing: every output needs an email selector (the lead's key)".to_string(),
            format!("error: mappings/forms.toml: lead.fields.company: \"$.answers[?@.ref == ]\" is not a valid JSONPath: {jsonpath_error}"),
            format!("error: mappings/forms.toml: lead.fields.jobtitle: unknown field \"jobtitle\"; known fields are {}, or custom.<name> for your own", leadgate::lead::KNOWN_FIELDS.join(", ")),
            "error: mappings/forms.toml: lead.fields.phone.transform[0]: unknown transform \"e164\"; known transforms are trim, lower, upper, split_name, email, phone, domain, number, boolean, range, lookup, default, template, join, regex, datetime, tally_options".to_string(),
            "4 error(s)".to_string(),
        ]
    );
}

const WITH_A_TEST: &str = r#"
[[lead]]
email = "$.email"
[lead.fields]
company = "$.company"

[[test]]
name = "company"
json = '{"email": "a@example.com", "company": "Acme"}'
[[test.lead]]
company = "Acme"
"#;

#[test]
fn check_runs_the_mapping_tests_and_fails_on_a_wrong_expectation() {
    let dir = admin_dir(WITH_A_TEST);
    let (code, stdout, stderr) = leadgate(dir.path(), &["check"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("1 mapping tests passed"), "{stdout}");

    // The admin changes the mapping; its test says what broke.
    let dir =
        admin_dir(&WITH_A_TEST.replace("company = \"$.company\"", "company = \"$.organisation\""));
    let (code, _, stderr) = leadgate(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.lines().next(),
        Some("error: mappings/forms.toml: test \"company\": lead[0].company: expected \"Acme\", got nothing")
    );
}

#[test]
fn check_also_checks_mapping_files_given_on_the_command_line() {
    let dir = admin_dir(WITH_A_TEST);
    std::fs::write(
        dir.path().join("mappings/new.toml"),
        "[[lead]]\nemail = \"$.email[\"\n",
    )
    .unwrap();
    let (code, _, stderr) = leadgate(dir.path(), &["check", "mappings/new.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(
            "error: mappings/new.toml: lead.email: \"$.email[\" is not a valid JSONPath"
        ),
        "{stderr}"
    );
}

#[test]
fn map_prints_the_mapped_lead_of_a_payload_file() {
    let (code, stdout, stderr) = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(root())
        .args([
            "map",
            "--source",
            "mailchimp",
            "--payload",
            "tests/fixtures/mailchimp/subscribe.form",
        ])
        .env("MAILCHIMP_WEBHOOK_TOKEN", "x")
        .env_remove("LEADGATE_CONFIG")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/mailchimp/subscribe.expected.json"))
            .unwrap(),
    )
    .unwrap();
    // The payload carries its own time (fired_at), so the output equals the golden file.
    assert_eq!(printed["mapped"], golden);
    assert_eq!(printed["source"], "mailchimp");
}

#[test]
fn map_reports_an_unmappable_payload_and_exits_1() {
    let dir = admin_dir(WITH_A_TEST);
    std::fs::write(dir.path().join("no-email.json"), r#"{"company": "Acme"}"#).unwrap();
    let (code, stdout, _) = leadgate(
        dir.path(),
        &["map", "--source", "forms", "--payload", "no-email.json"],
    );
    assert_eq!(code, 1);
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["mapped"], serde_json::Value::Null);
    assert_eq!(
        printed["unmappable"],
        "mappings/forms.toml: lead.email: selector matched nothing"
    );
}

/// `leadgate check` on `settings` (with `mapping` as `mappings/forms.toml`) without the
/// process's secrets, as in the shell of CI or of an admin's laptop.
fn check_without_secrets(settings: &str, mapping: &str) -> (i32, String, String) {
    let dir = admin_dir(mapping);
    std::fs::write(dir.path().join("leadgate.toml"), settings).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(dir.path())
        .arg("check")
        .env_remove("TF_SECRET")
        .env_remove("LEADGATE_CONFIG")
        .output()
        .expect("leadgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_mapping_of_a_source_whose_secret_is_unset() {
    // Issue 11, item 1: an optional source with its secret unset had its mapping skipped, so a
    // broken mapping passed `check`.
    for optional in ["optional = true\n", ""] {
        let settings = format!("[[sources]]\nname = \"forms\"\nscheme = \"typeform\"\nsecret_env = \"TF_SECRET\"\nmapping = \"mappings/forms.toml\"\n{optional}");
        let (code, stdout, stderr) =
            check_without_secrets(&settings, "[[lead]]\nemail = \"$.e[\"\n");
        assert_eq!(code, 1, "{optional:?}: stdout: {stdout}\nstderr: {stderr}");
        assert!(
            stderr.starts_with(
                "error: mappings/forms.toml: lead.email: \"$.e[\" is not a valid JSONPath"
            ),
            "{stderr}"
        );
        // The unset variable is reported, as a warning naming the key and the variable.
        assert!(
            stdout.contains("warning: leadgate.toml: sources[0].secret_env: environment variable TF_SECRET is not set"),
            "{stdout}"
        );
    }
}

#[test]
fn check_passes_without_secrets_and_runs_every_mapping_test() {
    let (code, stdout, stderr) = check_without_secrets(
        "[[sources]]\nname = \"forms\"\nscheme = \"typeform\"\nsecret_env = \"TF_SECRET\"\nmapping = \"mappings/forms.toml\"\n\
         [crm]\nkind = \"hubspot\"\ntoken_env = \"HS_TOKEN_NOT_SET\"\n",
        WITH_A_TEST,
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("(1 sources, 1 with a mapping; 1 mapping tests passed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: leadgate.toml: crm.token_env: environment variable HS_TOKEN_NOT_SET is not set"),
        "{stdout}"
    );
}

#[test]
fn check_without_secrets_still_checks_the_scheme_options() {
    let (code, _, stderr) = check_without_secrets(
        "[[sources]]\nname = \"forms\"\nscheme = \"hmac\"\nsecret_env = \"TF_SECRET\"\nheader = \"X-Sig\"\nalgorithm = \"md5\"\nmapping = \"mappings/forms.toml\"\n",
        WITH_A_TEST,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("error: leadgate.toml: sources[0].algorithm:"),
        "{stderr}"
    );
}

/// Every lead of every golden fixture, qualified as a new lead by the shipped rules: what the
/// quick start's `leadgate map` would say about it.
fn fixture_decisions() -> Vec<(String, leadgate::qualify::Decision)> {
    let (config, set) = shipped();
    let rules = leadgate::qualify::Rules::load(None).expect("shipped rules load");
    let at: DateTime<Utc> = RECEIVED_AT.parse().unwrap();
    let mut out = Vec::new();
    for (source, fixture) in GOLDEN {
        let path = root().join("tests/fixtures").join(fixture);
        let body = std::fs::read(&path).unwrap();
        let content_type = guess_content_type(&path, &body).unwrap();
        let limits = &config.source(source).unwrap().decode;
        let value = decode::decode(Some(&content_type), &body, limits)
            .unwrap()
            .value;
        let mapped = set.map(source, &value, at).unwrap();
        for (_, (patches, engagements)) in leadgate::pipeline::by_lead(mapped) {
            let d = leadgate::qualify::qualify(&rules, None, &patches, &engagements, at).unwrap();
            out.push((fixture.to_string(), d));
        }
    }
    out
}

#[test]
fn no_fixture_lead_is_disqualified_for_a_reserved_domain() {
    // Issue 11, item 9: most fixtures used `.example` addresses, which the shipped rules
    // disqualify, so `map` on them showed nothing would reach the CRM.
    let decisions = fixture_decisions();
    assert!(decisions.len() >= GOLDEN.len(), "{}", decisions.len());
    for (fixture, d) in &decisions {
        let reasons = d
            .state
            .disqualification
            .iter()
            .flat_map(|dq| dq.reasons.iter())
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert!(
            !reasons.iter().any(|r| r.starts_with("reserved domain")),
            "{fixture}: {reasons:?}"
        );
    }
    // And most of them would reach the CRM (the others bounced, complained or unsubscribed).
    let config = config();
    let rules = leadgate::qualify::Rules::load(None).unwrap();
    let sent = decisions
        .iter()
        .filter(|(_, d)| {
            leadgate::pipeline::crm_update_for(d, &rules, &config.crm, 1, false).is_ok()
        })
        .count();
    assert!(sent * 2 > decisions.len(), "{sent} of {}", decisions.len());
}

#[test]
fn map_says_why_nothing_is_sent_for_a_disqualified_lead() {
    // The quick start's payload, from a reserved domain: nothing is sent, and map says why.
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(
        std::fs::read(root().join("tests/fixtures/typeform/form_response.json")).unwrap(),
    )
    .unwrap()
    .replace("ada.lovelace@analytical-engines.io", "ada@shop.example.com");
    let payload = dir.path().join("reserved.json");
    std::fs::write(&payload, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(root())
        .args(["map", "--source", "typeform", "--payload"])
        .arg(&payload)
        .env_remove("LEADGATE_CONFIG")
        .env_remove("TYPEFORM_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["crm"]["requests"], serde_json::json!([]));
    let withheld = &printed["crm"]["withheld"];
    assert_eq!(withheld[0]["email"], "ada@shop.example.com");
    let reason = withheld[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("disqualified (reserved domain, not a real address (shop.example.com))"),
        "{reason}"
    );
}
