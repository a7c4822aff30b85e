//! The ingest contract over HTTP: status codes, JSON error bodies, dedupe, limits, concurrency.

use base64::Engine;
use hmac::{Hmac, Mac};
use leadgate::ingest::verify::Outbound;
use sha2::Sha256;

use crate::support::{fixture, AppBuilder, TestApp};

const TYPEFORM: &str = r#"
[[sources]]
name = "typeform"
scheme = "typeform"
secret_env = ["TF_NEW", "TF_OLD"]
body_limit_bytes = 4096
"#;

async fn typeform_app() -> TestApp {
    AppBuilder::new()
        .toml(TYPEFORM)
        .env("TF_NEW", "new-secret")
        .env("TF_OLD", "old-secret")
        .spawn()
        .await
}

/// Signs like Typeform does, independently of leadgate's own code: sha256=<base64 HMAC>.
fn typeform_signed(secret: &str, body: &[u8]) -> Outbound {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut out = Outbound::new("", "application/json", body.to_vec());
    out.set_header("Typeform-Signature", format!("sha256={sig}"));
    out
}

#[tokio::test]
async fn a_signed_typeform_delivery_is_stored_byte_for_byte_and_acknowledged_with_202() {
    let app = typeform_app().await;
    let body = fixture("typeform/form_response.json");
    let r = app
        .post("typeform", &typeform_signed("new-secret", &body))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("evt_"));

    let c = rusqlite::Connection::open(app.db_path()).unwrap();
    let (stored, key): (Vec<u8>, String) = c
        .query_row("SELECT body, dedupe_key FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(stored, body);
    assert_eq!(
        key, "01HZX8F7Q2R3T4V5W6X7Y8Z9A0",
        "Typeform's event_id is the dedupe key"
    );
}

#[tokio::test]
async fn a_redelivery_gets_200_duplicate_and_stores_nothing_new() {
    let app = typeform_app().await;
    let body = fixture("typeform/form_response.json");
    let first = app
        .post("typeform", &typeform_signed("new-secret", &body))
        .await;
    let again = app
        .post("typeform", &typeform_signed("new-secret", &body))
        .await;
    assert_eq!(first.status, 202);
    assert_eq!(again.status, 200);
    assert_eq!(again.json["duplicate"], true);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(app.count_events(), 1);
}

#[tokio::test]
async fn the_previous_secret_still_verifies_during_rotation() {
    let app = typeform_app().await;
    let r = app
        .post(
            "typeform",
            &typeform_signed("old-secret", br#"{"event_id":"rot-1"}"#),
        )
        .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn bad_signatures_get_401_with_a_json_error_that_echoes_no_secret() {
    let app = typeform_app().await;
    let body = br#"{"event_id":"x"}"#;
    let wrong = app
        .post("typeform", &typeform_signed("not-the-secret", body))
        .await;
    assert_eq!((wrong.status, wrong.error()), (401, "invalid_signature"));

    let mut tampered = typeform_signed("new-secret", body);
    tampered.body = br#"{"event_id":"y"}"#.to_vec();
    let t = app.post("typeform", &tampered).await;
    assert_eq!((t.status, t.error()), (401, "invalid_signature"));

    let mut missing = typeform_signed("new-secret", body);
    missing.headers.clear();
    let m = app.post("typeform", &missing).await;
    assert_eq!((m.status, m.error()), (401, "missing_signature"));

    let mut garbled = typeform_signed("new-secret", body);
    garbled.set_header("Typeform-Signature", "sha256=%%%not-base64");
    let g = app.post("typeform", &garbled).await;
    assert_eq!((g.status, g.error()), (401, "invalid_signature"));

    for r in [&wrong, &t, &m, &g] {
        let text = r.json.to_string();
        assert!(r.json["message"].is_string());
        assert!(
            !text.contains("new-secret") && !text.contains("old-secret"),
            "{text}"
        );
    }
    assert_eq!(app.count_events(), 0);
}

#[tokio::test]
async fn an_unknown_source_is_404_and_unknown_paths_are_json_404s() {
    let app = typeform_app().await;
    let r = app
        .post("nope", &typeform_signed("new-secret", b"{}"))
        .await;
    assert_eq!((r.status, r.error()), (404, "unknown_source"));
    let r = app.get("/nowhere").await;
    assert_eq!((r.status, r.error()), (404, "not_found"));
}

#[tokio::test]
async fn a_body_over_the_source_limit_is_413_before_verification() {
    let app = typeform_app().await;
    let big = format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(5000));
    let r = app
        .post("typeform", &typeform_signed("new-secret", big.as_bytes()))
        .await;
    assert_eq!((r.status, r.error()), (413, "body_too_large"));
    assert_eq!(app.count_events(), 0);
}

#[tokio::test]
async fn undecodable_and_unsupported_bodies_get_400_and_415() {
    let app = typeform_app().await;
    let bad = app
        .post(
            "typeform",
            &typeform_signed("new-secret", b"{\"event_id\": "),
        )
        .await;
    assert_eq!((bad.status, bad.error()), (400, "invalid_body"));
    let mut text = typeform_signed("new-secret", br#"{"event_id":"t"}"#);
    text.content_type = "text/plain".into();
    let r = app.post("typeform", &text).await;
    assert_eq!((r.status, r.error()), (415, "unsupported_media_type"));
    assert_eq!(app.count_events(), 0);
}

#[tokio::test]
async fn a_flood_over_the_source_rate_limit_gets_429_with_retry_after() {
    let app = AppBuilder::new()
        .toml(
            r#"
[[sources]]
name = "typeform"
scheme = "typeform"
secret_env = "TF"
rate_limit = { requests = 3, per_secs = 60 }
"#,
        )
        .env("TF", "s")
        .spawn()
        .await;
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..5 {
        let r = app
            .post(
                "typeform",
                &typeform_signed("s", format!(r#"{{"event_id":"r{i}"}}"#).as_bytes()),
            )
            .await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(statuses, vec![202, 202, 202, 429, 429]);
    let last = last.unwrap();
    assert_eq!(last.error(), "rate_limited");
    let retry: u64 = last.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "one token per 20 s: {retry}");
}

#[tokio::test]
async fn url_validation_gets_200_only_where_the_provider_needs_it() {
    let app = AppBuilder::new()
        .toml(TYPEFORM)
        .toml("[[sources]]\nname = \"mailchimp\"\nscheme = \"token\"\nsecret_env = \"MC\"\n")
        .env("TF_NEW", "a")
        .env("TF_OLD", "b")
        .env("MC", "tok")
        .spawn()
        .await;
    assert_eq!(app.get("/webhooks/mailchimp").await.status, 200);
    let r = app.get("/webhooks/typeform").await;
    assert_eq!((r.status, r.error()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn two_hundred_concurrent_signed_deliveries_are_all_acknowledged_and_stored_once() {
    let app = std::sync::Arc::new(typeform_app().await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = std::sync::Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"event_id":"c-{i}","form_response":{{"form_id":"f"}}}}"#);
            app.post("typeform", &typeform_signed("new-secret", body.as_bytes()))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 202, "{:?}", r.json);
        ids.insert(r.json["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(app.count_events(), 200);
}

#[tokio::test]
async fn probes_answer_and_metrics_count_outcomes() {
    let app = typeform_app().await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    app.post(
        "typeform",
        &typeform_signed("new-secret", br#"{"event_id":"m1"}"#),
    )
    .await;
    let text = app.metrics_text().await;
    assert!(
        text.contains("leadgate_webhooks_accepted_total{source=\"typeform\"}"),
        "{text}"
    );
}
