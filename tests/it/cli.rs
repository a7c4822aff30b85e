//! The `leadgate` binary's commands, run as a user would.

use std::process::Command;

use crate::support::{fixture, AppBuilder};

fn leadgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leadgate"))
}

#[tokio::test]
async fn send_signs_a_payload_like_the_provider_and_the_service_accepts_it() {
    let app = AppBuilder::new()
        .toml("[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TYPEFORM_SECRET\"\n")
        .env("TYPEFORM_SECRET", "quick-start")
        .spawn()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("leadgate.toml");
    std::fs::write(&cfg, "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TYPEFORM_SECRET\"\n").unwrap();
    let payload = dir.path().join("tf.json");
    std::fs::write(&payload, fixture("typeform/form_response.json")).unwrap();
    let url = format!("{}/webhooks/typeform", app.base);
    let run = move |secret: &str| {
        leadgate()
            .arg("--config")
            .arg(&cfg)
            .args(["send", "--source", "typeform", "--payload"])
            .arg(&payload)
            .args(["--url", &url])
            .env("TYPEFORM_SECRET", secret)
            .output()
            .unwrap()
    };
    let out =
        tokio::task::spawn_blocking(move || (run("quick-start"), run("quick-start"), run("wrong")))
            .await
            .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.0.status.success(), "{}", text(&out.0));
    assert!(text(&out.0).starts_with("202 "), "{}", text(&out.0));
    assert!(text(&out.1).starts_with("200 ") && text(&out.1).contains("\"duplicate\":true"));
    assert!(!out.2.status.success());
    assert!(text(&out.2).starts_with("401 "));
    assert_eq!(app.count_events(), 1);
}

#[test]
fn check_names_the_file_key_and_reason_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    // A mistake in the file is an error even where the source's secret is not set...
    std::fs::write(
        &cfg,
        "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"NOT_SET_ANYWHERE\"\nbody_limit_bytes = 0\n",
    )
    .unwrap();
    let check = |cfg: &std::path::Path| {
        leadgate()
            .arg("--config")
            .arg(cfg)
            .arg("check")
            .env_remove("NOT_SET_ANYWHERE")
            .output()
            .unwrap()
    };
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: sources[0].body_limit_bytes: must be at least 1"),
        "{err}"
    );

    // ...while the unset secret itself is the environment's business: a warning naming it.
    let unset = dir.path().join("unset.toml");
    std::fs::write(
        &unset,
        "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .unwrap();
    let out = check(&unset);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "warning: {path}: sources[0].secret_env: environment variable NOT_SET_ANYWHERE is not set (source \"tf\"); `leadgate serve` refuses to start without it"
                .replace("{path}", &unset.display().to_string())
                .as_str()
        ),
        "{said}"
    );

    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = leadgate()
        .arg("--config")
        .arg(&ok)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_settings_check_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = leadgate()
        .current_dir(root)
        .arg("--config")
        .arg(format!("{root}/leadgate.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A contact form of a realistic, qualifying lead, for the `generic` mapping.
const CONTACT_FORM: &str = r#"{"form": "contact", "submission_id": "sub_map_vs_wire_1",
  "submitted_at": "2026-11-20T13:05:00+01:00",
  "contact": {"email": "lise.meitner@fission-instruments.io", "first_name": "Lise",
              "last_name": "Meitner", "company": "Fission Instruments GmbH",
              "title": "Head of Sales Operations", "company_size": "201-500", "country": "de"},
  "answers": {"timeline": "Within 3 months"}}"#;

/// Headers the HTTP client adds to every request (README: `map` shows all the others).
const TRANSPORT: &[&str] = &["host", "content-length", "accept", "user-agent"];

/// Whether a previewed JSON value matches what was sent: equal, except that a `<...>`
/// placeholder (an id the CRM assigns, a label id) matches any value.
fn matches(preview: &serde_json::Value, sent: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (preview, sent) {
        (Value::String(p), _) if p.starts_with('<') && p.ends_with('>') => true,
        (Value::Array(p), Value::Array(s)) => {
            p.len() == s.len() && p.iter().zip(s).all(|(p, s)| matches(p, s))
        }
        (Value::Object(p), Value::Object(s)) => {
            p.len() == s.len()
                && p.iter()
                    .all(|(k, v)| s.get(k).is_some_and(|sv| matches(v, sv)))
        }
        _ => preview == sent,
    }
}

#[tokio::test]
async fn map_prints_exactly_the_requests_each_connector_sends() {
    // Issue 11, item 6: map's requests were written apart from the ones sent (Pipedrive's lacked
    // the content-type header). Every connector: map's output against the captured traffic of
    // the same lead, delivered by the running service.
    use fake_crm::{FakeHubSpot, FakePipedrive, FakeReceiver, FakeSalesforce};

    let hubspot = FakeHubSpot::start().await;
    let salesforce = FakeSalesforce::start().await;
    let pipedrive = FakePipedrive::start().await;
    let receiver = FakeReceiver::start().await;
    let source = format!(
        "[[sources]]\nname = \"forms\"\nscheme = \"token\"\nsecret_env = \"FORMS_TOKEN\"\nmapping = \"{}/mappings/generic.toml\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    /// A connector: its kind, `[crm]` keys, credential variables, and what its fake captured.
    type Connector<'a> = (
        &'static str,
        String,
        Vec<(&'static str, String)>,
        Box<dyn Fn() -> Vec<fake_crm::Arrival> + 'a>,
    );
    let connectors: Vec<Connector<'_>> = vec![
        (
            "hubspot",
            format!("kind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"", hubspot.base_url),
            vec![("HS", hubspot.token())],
            Box::new(|| hubspot.arrivals()),
        ),
        (
            "salesforce",
            format!(
                "kind = \"salesforce\"\nbase_url = \"{}\"\nclient_id_env = \"SF_ID\"\nclient_secret_env = \"SF_SECRET\"",
                salesforce.base_url
            ),
            vec![("SF_ID", "sf-client".into()), ("SF_SECRET", "sf-secret".into())],
            Box::new(|| salesforce.arrivals()),
        ),
        (
            "pipedrive",
            format!("kind = \"pipedrive\"\nbase_url = \"{}\"\ntoken_env = \"PD\"", pipedrive.base_url),
            vec![("PD", "pd-test-token".into())],
            Box::new(|| pipedrive.arrivals()),
        ),
        (
            "webhook",
            format!(
                "kind = \"webhook\"\nurl = \"{}/hooks/leads\"\nsecret_env = \"WH\"",
                receiver.base_url
            ),
            vec![("WH", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())],
            Box::new(|| receiver.received()),
        ),
    ];
    for (kind, crm, vars, captured) in connectors {
        let crm = format!("[crm]\n{crm}\npoll_interval_ms = 50\n");
        // What `leadgate map` says would be sent.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leadgate.toml"), format!("{source}{crm}")).unwrap();
        std::fs::write(dir.path().join("lead.json"), CONTACT_FORM).unwrap();
        let mut cmd = leadgate();
        cmd.current_dir(dir.path())
            .args(["map", "--source", "forms", "--payload", "lead.json"])
            .env_remove("LEADGATE_CONFIG");
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["crm"]["withheld"], serde_json::json!([]), "{kind}");
        let previews = printed["crm"]["requests"].as_array().unwrap().clone();
        assert!(!previews.is_empty(), "{kind}: {printed}");

        // What the service sends for the same lead.
        let mut app = AppBuilder::new()
            .toml(&source)
            .toml(&crm)
            .env("FORMS_TOKEN", "t0k");
        for (k, v) in &vars {
            app = app.env(k, v);
        }
        let app = app.spawn().await;
        let mut post = leadgate::ingest::verify::Outbound::new(
            "?token=t0k",
            "application/json",
            CONTACT_FORM.as_bytes().to_vec(),
        );
        post.method = "POST".into();
        assert_eq!(app.post("forms", &post).await.status, 202, "{kind}");
        let last = previews.last().unwrap();
        let last_path = reqwest::Url::parse(last["url"].as_str().unwrap())
            .unwrap()
            .path()
            .to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !captured()
            .iter()
            .any(|w| w.method == last["method"] && w.path == last_path)
        {
            assert!(std::time::Instant::now() < deadline, "{kind}: nothing sent");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }

        let wire = captured();
        for p in &previews {
            let url = reqwest::Url::parse(p["url"].as_str().unwrap()).unwrap();
            let sent = wire
                .iter()
                .find(|w| {
                    w.method == p["method"]
                        && w.path == url.path()
                        && w.query == url.query().unwrap_or("")
                })
                .unwrap_or_else(|| panic!("{kind}: {p} was not sent as previewed: {wire:?}"));
            let shown: Vec<(String, String)> = p["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        h[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let on_wire: Vec<&(String, String)> = sent
                .headers
                .iter()
                .filter(|(k, _)| !TRANSPORT.contains(&k.as_str()))
                .collect();
            let mut shown_names: Vec<&str> = shown.iter().map(|(k, _)| k.as_str()).collect();
            let mut wire_names: Vec<&str> = on_wire.iter().map(|(k, _)| k.as_str()).collect();
            shown_names.sort_unstable();
            wire_names.sort_unstable();
            assert_eq!(shown_names, wire_names, "{kind}: headers of {}", p["url"]);
            for (name, value) in &shown {
                let got = &on_wire.iter().find(|(k, _)| k == name).unwrap().1;
                match value.split_once("<redacted>") {
                    Some((prefix, _)) => assert!(
                        got.starts_with(prefix) && got.len() > prefix.len(),
                        "{kind}: {name}"
                    ),
                    None if value.starts_with('<') => assert!(!got.is_empty()),
                    None => assert_eq!(value, got, "{kind}: {name}"),
                }
            }
            let body: serde_json::Value = if sent.body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&sent.body).unwrap()
            };
            let mut shown_body = p["body"].clone();
            if kind == "webhook" {
                // The decision's time: map decides now, the service when it processes the event.
                shown_body["timestamp"] = body["timestamp"].clone();
            }
            assert!(
                matches(&shown_body, &body),
                "{kind}: body of {}\nmap:  {shown_body}\nsent: {body}",
                p["url"]
            );
        }
    }
}
