//! Every signature scheme through the real HTTP endpoint: valid -> 202; wrong secret, tampered
//! body, missing header, malformed header, stale and future timestamp -> 401; the rotated second
//! secret -> 202; a redelivery -> 200 duplicate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use leadgate::ingest::verify::Outbound;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

use crate::support::{AppBuilder, TestApp, PUBLIC_URL};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// How a scheme is exercised.
struct Case {
    scheme: &'static str,
    /// Extra source options (TOML lines).
    options: &'static str,
    content_type: &'static str,
    body: fn(usize) -> Vec<u8>,
    /// Where the signature lives: a header to drop/garble, or None when it is in the body (Mailgun).
    signature_header: Option<&'static str>,
    /// Whether the body is covered by the signature (not for token/basic/mailgun).
    body_signed: bool,
    /// Whether a timestamp is signed and checked.
    timestamped: bool,
}

fn json_body(i: usize) -> Vec<u8> {
    format!(r#"{{"event_id":"ev-{i}","id":"ev-{i}","payload":{{"uri":"u-{i}","uid":"u-{i}","id":"s-{i}"}},"UniqueID":"{i}"}}"#).into_bytes()
}

fn mailgun_body(i: usize) -> Vec<u8> {
    format!(r#"{{"event-data":{{"event":"opened","id":"mg-{i}","recipient":"lead@example.com"}}}}"#)
        .into_bytes()
}

fn mandrill_body(i: usize) -> Vec<u8> {
    let events = format!(
        r#"[{{"event":"open","_id":"md-{i}","ts":1700000000,"msg":{{"email":"lead@example.com"}}}}]"#
    );
    format!("mandrill_events={}", urlencode(&events)).into_bytes()
}

fn sendgrid_body(i: usize) -> Vec<u8> {
    format!(r#"[{{"email":"lead@example.com","event":"open","sg_event_id":"sg-{i}","timestamp":1700000000}}]"#).into_bytes()
}

fn form_body(i: usize) -> Vec<u8> {
    format!("FormID=6606394&UniqueID={i}&email=lead%40example.com").into_bytes()
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn cases() -> Vec<Case> {
    let hmac = |scheme, header| Case {
        scheme,
        options: "",
        content_type: "application/json",
        body: json_body,
        signature_header: Some(header),
        body_signed: true,
        timestamped: false,
    };
    vec![
        hmac("typeform", "Typeform-Signature"),
        hmac("tally", "Tally-Signature"),
        Case { timestamped: true, ..hmac("webflow", "x-webflow-signature") },
        Case { timestamped: true, ..hmac("calendly", "Calendly-Webhook-Signature") },
        Case { timestamped: true, ..hmac("stripe", "Stripe-Signature") },
        Case { content_type: "application/x-www-form-urlencoded", body: form_body, ..hmac("formstack", "X-FS-Signature") },
        hmac("cal-com", "X-Cal-Signature-256"),
        Case { timestamped: true, ..hmac("klaviyo", "Klaviyo-Signature") },
        Case { timestamped: true, ..hmac("customer-io", "X-CIO-Signature") },
        hmac("meta", "X-Hub-Signature-256"),
        Case {
            options: "header = \"X-Slack-Signature\"\nprefix = \"v0=\"\ntemplate = \"v0:{timestamp}:{body}\"\ntimestamp_header = \"X-Slack-Request-Timestamp\"\n",
            timestamped: true,
            ..hmac("hmac", "X-Slack-Signature")
        },
        Case { timestamped: true, ..hmac("standard-webhooks", "webhook-signature") },
        Case { timestamped: true, ..hmac("hubspot", "X-HubSpot-Signature-v3") },
        Case { options: "version = \"v2\"\n", ..hmac("hubspot", "X-HubSpot-Signature") },
        Case {
            content_type: "application/x-www-form-urlencoded",
            body: mandrill_body,
            ..hmac("mandrill", "X-Mandrill-Signature")
        },
        Case { body: mailgun_body, signature_header: None, body_signed: false, timestamped: true, ..hmac("mailgun", "") },
        Case { body_signed: false, ..hmac("token", "X-Leadgate-Token") },
        Case { options: "username = \"leadgate\"\n", body_signed: false, ..hmac("basic", "Authorization") },
    ]
}

fn secret_for(case: &Case, which: &str) -> String {
    match case.scheme {
        // Standard Webhooks secrets are whsec_ + base64 of random bytes.
        "standard-webhooks" => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(format!("{which}-key-material-24b"))
        ),
        _ => format!("{which}-secret"),
    }
}

fn source_toml(case: &Case, name: &str, secret_env: &str) -> String {
    let token_header = if case.scheme == "token" {
        "header = \"X-Leadgate-Token\"\n"
    } else {
        ""
    };
    format!(
        "[[sources]]\nname = \"{name}\"\nscheme = \"{}\"\nsecret_env = {secret_env}\n{}{token_header}",
        case.scheme, case.options
    )
}

/// Signs like the provider would, with `secret`, at `now`.
fn sign(case: &Case, name: &str, secret: &str, body: Vec<u8>, now: SystemTime) -> Outbound {
    let cfg = AppBuilder::new()
        .toml(&source_toml(case, name, "\"SIGN\""))
        .env("SIGN", secret)
        .config(std::path::Path::new("/tmp"));
    let src = cfg.source(name).expect("signing source");
    let mut out = Outbound::new(
        format!("{PUBLIC_URL}/webhooks/{name}"),
        case.content_type,
        body,
    );
    out.now = now;
    src.verifier.sign(&mut out).expect("signs");
    out
}

async fn app_for(case: &Case, name: &str) -> TestApp {
    AppBuilder::new()
        .toml(&source_toml(case, name, "[\"S_NEW\", \"S_OLD\"]"))
        .env("S_NEW", &secret_for(case, "new"))
        .env("S_OLD", &secret_for(case, "old"))
        .spawn()
        .await
}

fn garble(out: &mut Outbound, header: &str) {
    out.set_header(header, "sha256=!!not-a-signature!!");
}

#[tokio::test]
async fn every_scheme_accepts_valid_deliveries_and_refuses_bad_ones_over_http() {
    for case in cases() {
        let name = format!("s{}", unique());
        let app = app_for(&case, &name).await;
        let label = format!("{} {}", case.scheme, case.options.trim());
        let now = SystemTime::now();

        // Valid, then the same delivery again.
        let valid = sign(
            &case,
            &name,
            &secret_for(&case, "new"),
            (case.body)(unique()),
            now,
        );
        let r = app.post(&name, &valid).await;
        assert_eq!(r.status, 202, "{label}: valid -> 202: {:?}", r.json);
        let again = app.post(&name, &valid).await;
        assert_eq!(
            (again.status, &again.json["duplicate"]),
            (200, &serde_json::json!(true)),
            "{label}: duplicate"
        );
        assert_eq!(
            again.json["id"], r.json["id"],
            "{label}: duplicate names the first event"
        );

        // The previous secret during rotation.
        let rotated = sign(
            &case,
            &name,
            &secret_for(&case, "old"),
            (case.body)(unique()),
            now,
        );
        assert_eq!(
            app.post(&name, &rotated).await.status,
            202,
            "{label}: rotated secret"
        );

        // A secret the source does not hold.
        let wrong = sign(
            &case,
            &name,
            &secret_for(&case, "wrong"),
            (case.body)(unique()),
            now,
        );
        let r = app.post(&name, &wrong).await;
        assert_eq!(r.status, 401, "{label}: wrong secret");
        assert!(
            ["invalid_signature", "invalid_credentials"].contains(&r.error()),
            "{label}: {}",
            r.error()
        );

        if case.body_signed {
            let mut tampered = sign(
                &case,
                &name,
                &secret_for(&case, "new"),
                (case.body)(unique()),
                now,
            );
            tampered.body = (case.body)(unique());
            let r = app.post(&name, &tampered).await;
            assert_eq!(
                (r.status, r.error()),
                (401, "invalid_signature"),
                "{label}: tampered body"
            );
        }

        match case.signature_header {
            Some(h) => {
                let mut missing = sign(
                    &case,
                    &name,
                    &secret_for(&case, "new"),
                    (case.body)(unique()),
                    now,
                );
                missing.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(h));
                let r = app.post(&name, &missing).await;
                assert_eq!(r.status, 401, "{label}: missing header");
                assert!(
                    ["missing_signature", "missing_credentials"].contains(&r.error()),
                    "{label}: {}",
                    r.error()
                );

                let mut bad = sign(
                    &case,
                    &name,
                    &secret_for(&case, "new"),
                    (case.body)(unique()),
                    now,
                );
                garble(&mut bad, h);
                let r = app.post(&name, &bad).await;
                assert_eq!(r.status, 401, "{label}: malformed header");
            }
            None => {
                // Mailgun: the signature is in the body.
                let good = sign(
                    &case,
                    &name,
                    &secret_for(&case, "new"),
                    (case.body)(unique()),
                    now,
                );
                let mut v: serde_json::Value = serde_json::from_slice(&good.body).unwrap();
                v["signature"]["signature"] = "zz-not-hex".into();
                let mut bad = good.clone();
                bad.body = serde_json::to_vec(&v).unwrap();
                let r = app.post(&name, &bad).await;
                assert_eq!(
                    (r.status, r.error()),
                    (401, "invalid_signature"),
                    "{label}: malformed signature"
                );
                v.as_object_mut().unwrap().remove("signature");
                bad.body = serde_json::to_vec(&v).unwrap();
                let r = app.post(&name, &bad).await;
                assert_eq!(
                    (r.status, r.error()),
                    (401, "missing_signature"),
                    "{label}: missing signature"
                );
            }
        }

        if case.timestamped {
            for (when, what) in [
                (now - Duration::from_secs(400), "stale"),
                (now + Duration::from_secs(400), "future"),
            ] {
                let out = sign(
                    &case,
                    &name,
                    &secret_for(&case, "new"),
                    (case.body)(unique()),
                    when,
                );
                let r = app.post(&name, &out).await;
                assert_eq!(
                    (r.status, r.error()),
                    (401, "stale_timestamp"),
                    "{label}: {what} timestamp"
                );
            }
        }
        assert_eq!(
            app.count_events(),
            2,
            "{label}: only the two valid deliveries are stored"
        );
    }
}

#[tokio::test]
async fn sendgrid_ecdsa_deliveries_verify_with_the_configured_public_key() {
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let public = key.verifying_key().to_public_key_der().unwrap();
    let public_b64 = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
    let app = AppBuilder::new()
        .toml("[[sources]]\nname = \"sendgrid\"\nscheme = \"sendgrid\"\npublic_key_env = \"SG_KEY\"\n")
        .env("SG_KEY", &public_b64)
        .spawn()
        .await;
    let signed = |k: &p256::ecdsa::SigningKey, body: Vec<u8>, ts: i64| {
        let mut msg = ts.to_string().into_bytes();
        msg.extend_from_slice(&body);
        let sig: p256::ecdsa::Signature = k.sign(&msg);
        let mut out = Outbound::new("", "application/json", body);
        out.set_header(
            "X-Twilio-Email-Event-Webhook-Signature",
            base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
        );
        out.set_header("X-Twilio-Email-Event-Webhook-Timestamp", ts.to_string());
        out
    };
    let now = chrono::Utc::now().timestamp();
    let body = sendgrid_body(unique());
    let ok = signed(&key, body.clone(), now);
    assert_eq!(app.post("sendgrid", &ok).await.status, 202);
    let dup = app.post("sendgrid", &ok).await;
    assert_eq!(
        (dup.status, &dup.json["duplicate"]),
        (200, &serde_json::json!(true))
    );
    let r = app
        .post("sendgrid", &signed(&other, sendgrid_body(unique()), now))
        .await;
    assert_eq!(
        (r.status, r.error()),
        (401, "invalid_signature"),
        "another key"
    );
    let mut tampered = signed(&key, sendgrid_body(unique()), now);
    tampered.body = sendgrid_body(unique());
    assert_eq!(
        app.post("sendgrid", &tampered).await.error(),
        "invalid_signature"
    );
    let mut missing = signed(&key, sendgrid_body(unique()), now);
    missing.headers.retain(|(k, _)| !k.contains("Signature"));
    assert_eq!(
        app.post("sendgrid", &missing).await.error(),
        "missing_signature"
    );
    let stale = app
        .post(
            "sendgrid",
            &signed(&key, sendgrid_body(unique()), now - 400),
        )
        .await;
    assert_eq!((stale.status, stale.error()), (401, "stale_timestamp"));
    let future = app
        .post(
            "sendgrid",
            &signed(&key, sendgrid_body(unique()), now + 400),
        )
        .await;
    assert_eq!((future.status, future.error()), (401, "stale_timestamp"));
    assert_eq!(app.count_events(), 1);
}
