//! Bad input, black box: one app with a source per signature scheme, and a table of hostile or
//! broken deliveries. Every case asserts the exact status and JSON error code of the contract, a
//! body of exactly `{"error", "message"}`, that the answer echoes no secret, signature or payload,
//! and that the inbox is unchanged. One case is a replay the contract answers `200` duplicate
//! (a Mailgun token reused): it is marked so and must store nothing either.
//!
//! The request path is body limit -> verify -> decode -> persist, so a case about the BODY carries a
//! valid signature (it proves the decoder refuses it), and a case about the signature carries a
//! well-formed body (it proves the verifier refuses it).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use leadgate::ingest::verify::Outbound;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use sha1::Sha1;
use sha2::Sha256;

use crate::support::{AppBuilder, TestApp, PUBLIC_URL};

// ---- the app under test ----

const TF_SECRET: &str = "tf-secret-Kx81qZ";
const STRIPE_SECRET: &str = "whsec_stripe-secret-P0o9";
/// Standard Webhooks keys are base64 after `whsec_`: this is `std-webhooks-key-bytes-24b`.
const SW_SECRET: &str = "whsec_c3RkLXdlYmhvb2tzLWtleS1ieXRlcy0yNGI=";
const HS_SECRET: &str = "hs-app-secret-3b5d7f";
const MANDRILL_SECRET: &str = "mandrill-key-Vv21Ry";
const MAILGUN_SECRET: &str = "key-mailgun-signing-9Hh3";
const TOKEN_SECRET: &str = "url-token-Wq4Pz8sLm2";
const BASIC_SECRET: &str = "basic-password-Jd7Tn3";
const SLACK_SECRET: &str = "slack-signing-secret-e4R";

/// Never to appear in an answer.
const SECRETS: &[&str] = &[
    TF_SECRET,
    STRIPE_SECRET,
    SW_SECRET,
    "std-webhooks-key-bytes-24b",
    HS_SECRET,
    MANDRILL_SECRET,
    MAILGUN_SECRET,
    TOKEN_SECRET,
    BASIC_SECRET,
    SLACK_SECRET,
];

/// Payload content every body carries where it can; never to appear in an answer.
const EMAIL: &str = "bad.input.probe@example.com";
const NAME: &str = "Quillfeather";

const SOURCES: &str = r#"
[[sources]]
name = "typeform"
scheme = "typeform"
secret_env = "TF"

[[sources]]
name = "tiny"
scheme = "typeform"
secret_env = "TF"
body_limit_bytes = 4096

[[sources]]
name = "big"
scheme = "typeform"
secret_env = "TF"
body_limit_bytes = 8388608

[[sources]]
name = "stripe"
scheme = "stripe"
secret_env = "STRIPE"

[[sources]]
name = "sw"
scheme = "standard-webhooks"
secret_env = "SW"

[[sources]]
name = "hubspot"
scheme = "hubspot"
secret_env = "HS_APP"

[[sources]]
name = "mandrill"
scheme = "mandrill"
secret_env = "MANDRILL"

[[sources]]
name = "mailgun"
scheme = "mailgun"
secret_env = "MAILGUN"

[[sources]]
name = "sendgrid"
scheme = "sendgrid"
public_key_env = "SG_KEY"

[[sources]]
name = "token"
scheme = "token"
secret_env = "TOKEN"

[[sources]]
name = "basic"
scheme = "basic"
secret_env = "BASIC"

[[sources]]
name = "slack"
scheme = "hmac"
secret_env = "SLACK"
header = "X-Slack-Signature"
prefix = "v0="
template = "v0:{timestamp}:{body}"
timestamp_header = "X-Slack-Request-Timestamp"
"#;

fn sendgrid_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("test key")
}

async fn app() -> TestApp {
    let public = sendgrid_key()
        .verifying_key()
        .to_public_key_der()
        .expect("public key");
    AppBuilder::new()
        .toml(SOURCES)
        .env("TF", TF_SECRET)
        .env("STRIPE", STRIPE_SECRET)
        .env("SW", SW_SECRET)
        .env("HS_APP", HS_SECRET)
        .env("MANDRILL", MANDRILL_SECRET)
        .env("MAILGUN", MAILGUN_SECRET)
        .env("SG_KEY", &b64(public.as_bytes()))
        .env("TOKEN", TOKEN_SECRET)
        .env("BASIC", BASIC_SECRET)
        .env("SLACK", SLACK_SECRET)
        .spawn()
        .await
}

// ---- requests ----

/// A request exactly as it goes on the wire (header values as bytes: some cases send non-ASCII).
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    /// Path and query.
    path: String,
    content_type: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Sent with `Transfer-Encoding: chunked` (no Content-Length), over a raw socket.
    chunked: bool,
}

impl Req {
    /// A prepared (signed) request to `/webhooks/{source}`, with its query.
    fn of(source: &str, out: &Outbound) -> Req {
        let query = out.query();
        Req {
            method: "POST",
            path: if query.is_empty() {
                format!("/webhooks/{source}")
            } else {
                format!("/webhooks/{source}?{query}")
            },
            content_type: Some(out.content_type.clone()),
            headers: out
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect(),
            body: out.body.clone(),
            chunked: false,
        }
    }

    fn set(mut self, name: &str, value: impl Into<Vec<u8>>) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }

    fn content_type(mut self, ct: Option<&str>) -> Req {
        self.content_type = ct.map(str::to_string);
        self
    }

    fn path(mut self, path: impl Into<String>) -> Req {
        self.path = path.into();
        self
    }

    fn method(mut self, m: &'static str) -> Req {
        self.method = m;
        self
    }

    fn chunked(mut self) -> Req {
        self.chunked = true;
        self
    }
}

/// What came back, raw.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

async fn send(app: &TestApp, r: &Req) -> Answer {
    if r.chunked {
        return send_chunked(app, r).await;
    }
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).expect("method");
    let mut req = app
        .client
        .request(method, format!("{}{}", app.base, r.path))
        .body(r.body.clone());
    if let Some(ct) = &r.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct.as_str());
    }
    for (k, v) in &r.headers {
        let v = reqwest::header::HeaderValue::from_bytes(v).expect("header value");
        req = req.header(k.as_str(), v);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Answer {
        status,
        content_type,
        text: res.text().await.unwrap_or_default(),
    }
}

/// HTTP/1.1 with a chunked body and no Content-Length, so the limit is enforced while reading.
async fn send_chunked(app: &TestApp, r: &Req) -> Answer {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n",
        r.method, r.path
    );
    if let Some(ct) = &r.content_type {
        let _ = write!(head, "Content-Type: {ct}\r\n");
    }
    let mut wire = head.into_bytes();
    for (k, v) in &r.headers {
        wire.extend_from_slice(format!("{k}: ").as_bytes());
        wire.extend_from_slice(v);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    for chunk in r.body.chunks(1024) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");

    let port = app.port;
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        // The server may answer before reading everything; a failed write is then not an error.
        let _ = s.write_all(&wire);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    })
    .await
    .expect("raw request");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let text = if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        content_type: header("content-type"),
        text,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---- signing ----

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Signs `body` as the source's provider would, for `url`, at `at` (leadgate's own signer).
fn sign_for(
    app: &TestApp,
    source: &str,
    url: &str,
    ct: &str,
    body: &[u8],
    at: SystemTime,
) -> Outbound {
    let s = app.config.source(source).expect("source configured");
    let mut out = Outbound::new(url, ct, body.to_vec());
    out.now = at;
    s.verifier.sign(&mut out).expect("source signs");
    out
}

/// A validly signed request to `source` (its public URL, now).
fn signed(app: &TestApp, source: &str, ct: &str, body: &[u8]) -> Req {
    signed_at(app, source, ct, body, now())
}

fn signed_at(app: &TestApp, source: &str, ct: &str, body: &[u8], at: SystemTime) -> Req {
    let url = format!("{PUBLIC_URL}/webhooks/{source}");
    Req::of(source, &sign_for(app, source, &url, ct, body, at))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha1>::new_from_slice(key).expect("hmac key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SendGrid: base64 DER ECDSA P-256 over `timestamp + body`.
fn sendgrid(key: &p256::ecdsa::SigningKey, body: &[u8], ts: i64) -> Req {
    let mut msg = ts.to_string().into_bytes();
    msg.extend_from_slice(body);
    let sig: p256::ecdsa::Signature = key.sign(&msg);
    let out = {
        let mut o = Outbound::new("", "application/json", body.to_vec());
        o.set_header(
            "X-Twilio-Email-Event-Webhook-Signature",
            b64(sig.to_der().as_bytes()),
        );
        o.set_header("X-Twilio-Email-Event-Webhook-Timestamp", ts.to_string());
        o
    };
    Req::of("sendgrid", &out)
}

// ---- bodies ----

fn json_body(id: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","id":"{id}","form_response":{{"hidden":{{"email":"{EMAIL}","name":"{NAME}"}}}}}}"#
    )
    .into_bytes()
}

fn form_body() -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("email", EMAIL)
        .append_pair("name", NAME)
        .finish()
        .into_bytes()
}

fn mandrill_body() -> Vec<u8> {
    let events = format!(
        r#"[{{"event":"open","_id":"md-1","ts":1700000000,"msg":{{"email":"{EMAIL}","subject":"{NAME}"}}}}]"#
    );
    form_urlencoded::Serializer::new(String::new())
        .append_pair("mandrill_events", &events)
        .finish()
        .into_bytes()
}

fn mailgun_body(id: &str) -> Vec<u8> {
    format!(
        r#"{{"event-data":{{"event":"opened","id":"{id}","recipient":"{EMAIL}","name":"{NAME}"}}}}"#
    )
    .into_bytes()
}

const B: &str = "leadgateBoundary7MA4YWxk";

/// A multipart body from (part headers after the disposition's name, value) pairs.
fn multipart(parts: &[(&str, &[u8])], closed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (head, value) in parts {
        out.extend_from_slice(
            format!("--{B}\r\nContent-Disposition: form-data; {head}\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if closed {
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    }
    out
}

fn multipart_ct() -> String {
    format!("multipart/form-data; boundary={B}")
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

// ---- the table ----

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Refused with this status and error code.
    Refused(u16, &'static str),
    /// A redelivery of an already stored event: `200 {"duplicate": true}` naming it, nothing stored.
    Duplicate(String),
}

struct Case {
    name: String,
    req: Req,
    expect: Expect,
}

fn refused(name: impl Into<String>, status: u16, code: &'static str, req: Req) -> Case {
    Case {
        name: name.into(),
        req,
        expect: Expect::Refused(status, code),
    }
}

/// A delivery signed 400 s before and 400 s after now: both outside the 300 s replay window.
fn outside_window(
    app: &TestApp,
    scheme: &str,
    source: &str,
    late: &[u8],
    early: &[u8],
) -> [Case; 2] {
    let t = now();
    let off = Duration::from_secs(400);
    [
        refused(
            format!("{scheme}: replayed 400 s late"),
            401,
            "stale_timestamp",
            signed_at(app, source, JSON, late, t - off),
        ),
        refused(
            format!("{scheme}: signed 400 s in the future"),
            401,
            "stale_timestamp",
            signed_at(app, source, JSON, early, t + off),
        ),
    ]
}

/// Bad signatures and credentials, scheme by scheme: 401 with the reason's code.
fn verify_cases(app: &TestApp, mailgun_first: &Req, mailgun_id: &str) -> Vec<Case> {
    let t = now();
    let old = t - Duration::from_secs(400);
    let body = json_body("sig-1");
    let other = json_body("sig-2");
    let tf = |b: &[u8]| signed(app, "typeform", JSON, b);
    let tf_header = |mac: Vec<u8>| format!("sha256={}", b64(&mac));
    let right_mac = hmac_sha256(TF_SECRET.as_bytes(), &[&body]);
    let right_sig = tf_header(right_mac.clone());

    let stripe_ok = signed(app, "stripe", JSON, &body);
    let stripe_ts = unix(t).to_string();
    let stripe_mac = hex::encode(hmac_sha256(
        STRIPE_SECRET.as_bytes(),
        &[stripe_ts.as_bytes(), b".", &body],
    ));

    let sw_ok = signed(app, "sw", JSON, &body);
    let sw_key = base64::engine::general_purpose::STANDARD
        .decode(SW_SECRET.trim_start_matches("whsec_"))
        .expect("sw key");
    let sw_id = sw_ok.header("webhook-id");
    let sw_ts = sw_ok.header("webhook-timestamp");

    let hs_url = format!("{PUBLIC_URL}/webhooks/hubspot");
    let hs_secs = unix(t).to_string();
    let hs_secs_sig = b64(&hmac_sha256(
        HS_SECRET.as_bytes(),
        &[b"POST", hs_url.as_bytes(), &body, hs_secs.as_bytes()],
    ));

    let md_url = format!("{PUBLIC_URL}/webhooks/mandrill");
    let md_events = String::from_utf8(mandrill_body()).expect("ascii");
    let md_value = form_urlencoded::parse(md_events.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .expect("mandrill_events");
    let md_sha256 = b64(&hmac_sha256(
        MANDRILL_SECRET.as_bytes(),
        &[md_url.as_bytes(), b"mandrill_events", md_value.as_bytes()],
    ));
    // The right key and data under SHA-1 is what Mandrill sends; prove the helper agrees.
    let md_sha1 = b64(&hmac_sha1(
        MANDRILL_SECRET.as_bytes(),
        &[md_url.as_bytes(), b"mandrill_events", md_value.as_bytes()],
    ));
    assert_eq!(
        md_sha1,
        signed(app, "mandrill", FORM, &mandrill_body()).header("X-Mandrill-Signature"),
        "the test's Mandrill signature matches leadgate's"
    );

    let mut mg_reused: serde_json::Value =
        serde_json::from_slice(&mailgun_first.body).expect("mailgun JSON");
    mg_reused["event-data"]["event"] = "clicked".into();
    mg_reused["event-data"]["recipient"] = "someone.else@example.com".into();
    let mut mg_swapped: serde_json::Value =
        serde_json::from_slice(&signed(app, "mailgun", JSON, &mailgun_body("mg-2")).body)
            .expect("mailgun JSON");
    mg_swapped["signature"]["token"] = "b".repeat(50).into();

    let slack_ts = unix(t).to_string();
    let slack_sha1 = hex::encode(hmac_sha1(
        SLACK_SECRET.as_bytes(),
        &[b"v0:", slack_ts.as_bytes(), b":", &body],
    ));

    let other_key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("other key");
    let token_path = "/webhooks/token";
    let basic =
        |user: &str, pass: &str| format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()));
    let base = |src: &str| Req::of(src, &Outbound::new("", JSON, body.clone()));

    let mut cases = vec![
        // Typeform: sha256=<base64 HMAC of the body>.
        refused(
            "typeform: forged with another secret",
            401,
            "invalid_signature",
            tf(&body).set(
                "Typeform-Signature",
                tf_header(hmac_sha256(b"guessed-secret", &[&body])),
            ),
        ),
        refused(
            "typeform: signature truncated by 4 characters",
            401,
            "invalid_signature",
            tf(&body).set("Typeform-Signature", &right_sig[..right_sig.len() - 4]),
        ),
        refused(
            "typeform: signature truncated to half",
            401,
            "invalid_signature",
            tf(&body).set("Typeform-Signature", &right_sig[..right_sig.len() / 2]),
        ),
        refused(
            "typeform: empty signature after the prefix",
            401,
            "invalid_signature",
            tf(&body).set("Typeform-Signature", "sha256="),
        ),
        refused(
            "typeform: hex where base64 is expected",
            401,
            "invalid_signature",
            tf(&body).set(
                "Typeform-Signature",
                format!("sha256={}", hex::encode(&right_mac)),
            ),
        ),
        refused(
            "typeform: HMAC-SHA1 where SHA-256 is expected",
            401,
            "invalid_signature",
            tf(&body).set(
                "Typeform-Signature",
                format!("sha1={}", b64(&hmac_sha1(TF_SECRET.as_bytes(), &[&body]))),
            ),
        ),
        refused(
            "typeform: SHA-1 MAC under the sha256= prefix",
            401,
            "invalid_signature",
            tf(&body).set(
                "Typeform-Signature",
                tf_header(hmac_sha1(TF_SECRET.as_bytes(), &[&body])),
            ),
        ),
        refused(
            "typeform: right MAC without its prefix",
            401,
            "invalid_signature",
            tf(&body).set("Typeform-Signature", b64(&right_mac)),
        ),
        refused(
            "typeform: signature of another body",
            401,
            "invalid_signature",
            tf(&body).body(other.clone()),
        ),
        refused(
            "typeform: signature header missing",
            401,
            "missing_signature",
            tf(&body).without("Typeform-Signature"),
        ),
        refused(
            "typeform: non-ASCII bytes in the signature header",
            401,
            "invalid_signature",
            tf(&body).set("Typeform-Signature", b"sha256=\xff\xfe\xfd".to_vec()),
        ),
        // Stripe: t=<s>,v1=<hex HMAC of "t.body">.
        refused(
            "stripe: only a v0= (test mode) signature",
            401,
            "invalid_signature",
            stripe_ok
                .clone()
                .set("Stripe-Signature", format!("t={stripe_ts},v0={stripe_mac}")),
        ),
        refused(
            "stripe: no t= timestamp",
            401,
            "invalid_signature",
            stripe_ok
                .clone()
                .set("Stripe-Signature", format!("v1={stripe_mac}")),
        ),
        refused(
            "stripe: timestamp changed after signing",
            401,
            "invalid_signature",
            stripe_ok.clone().set(
                "Stripe-Signature",
                format!("t={},v1={stripe_mac}", unix(t) - 10),
            ),
        ),
        refused(
            "stripe: signature of another body",
            401,
            "invalid_signature",
            stripe_ok.clone().body(other.clone()),
        ),
        // Standard Webhooks: v1,<base64 HMAC of "id.ts.body"> with the decoded key.
        refused(
            "standard-webhooks: webhook-id header missing",
            401,
            "missing_signature",
            sw_ok.clone().without("webhook-id"),
        ),
        refused(
            "standard-webhooks: replayed under a new webhook-id",
            401,
            "invalid_signature",
            sw_ok.clone().set("webhook-id", "msg_replayed_under_new_id"),
        ),
        refused(
            "standard-webhooks: only a v1a (Ed25519) entry",
            401,
            "invalid_signature",
            sw_ok
                .clone()
                .set("webhook-signature", format!("v1a,{}", b64(&[1u8; 64]))),
        ),
        refused(
            "standard-webhooks: HMAC keyed with the whsec_ text, not its bytes",
            401,
            "invalid_signature",
            sw_ok.clone().set(
                "webhook-signature",
                format!(
                    "v1,{}",
                    b64(&hmac_sha256(
                        SW_SECRET.as_bytes(),
                        &[sw_id.as_bytes(), b".", sw_ts.as_bytes(), b".", &body]
                    ))
                ),
            ),
        ),
        refused(
            "standard-webhooks: right key, signature of another body",
            401,
            "invalid_signature",
            sw_ok.clone().set(
                "webhook-signature",
                format!(
                    "v1,{}",
                    b64(&hmac_sha256(
                        &sw_key,
                        &[sw_id.as_bytes(), b".", sw_ts.as_bytes(), b".", &other]
                    ))
                ),
            ),
        ),
        // HubSpot v3: base64 HMAC of method + URL + body + ms timestamp.
        refused(
            "hubspot v3: signed for another URL",
            401,
            "invalid_signature",
            Req::of(
                "hubspot",
                &sign_for(
                    app,
                    "hubspot",
                    &format!("{PUBLIC_URL}/webhooks/typeform"),
                    JSON,
                    &body,
                    t,
                ),
            ),
        ),
        refused(
            "hubspot v3: signed with a query the request lacks",
            401,
            "invalid_signature",
            Req::of(
                "hubspot",
                &sign_for(
                    app,
                    "hubspot",
                    &format!("{hs_url}?portalId=62515"),
                    JSON,
                    &body,
                    t,
                ),
            )
            .path("/webhooks/hubspot"),
        ),
        refused(
            "hubspot v3: timestamp in seconds, not milliseconds",
            401,
            "stale_timestamp",
            base("hubspot")
                .set("X-HubSpot-Request-Timestamp", hs_secs.clone())
                .set("X-HubSpot-Signature-v3", hs_secs_sig),
        ),
        refused(
            "hubspot v3: timestamp header missing",
            401,
            "missing_signature",
            signed(app, "hubspot", JSON, &body).without("X-HubSpot-Request-Timestamp"),
        ),
        // Mandrill: base64 HMAC-SHA1 of the URL and the sorted POST fields.
        refused(
            "mandrill: HMAC-SHA256 where SHA-1 is expected",
            401,
            "invalid_signature",
            signed(app, "mandrill", FORM, &mandrill_body()).set("X-Mandrill-Signature", md_sha256),
        ),
        refused(
            "mandrill: signed for another URL",
            401,
            "invalid_signature",
            Req::of(
                "mandrill",
                &sign_for(
                    app,
                    "mandrill",
                    &format!("{PUBLIC_URL}/webhooks/mandrill/"),
                    FORM,
                    &mandrill_body(),
                    t,
                ),
            ),
        ),
        refused(
            "mandrill: a field added after signing",
            401,
            "invalid_signature",
            {
                let r = signed(app, "mandrill", FORM, &mandrill_body());
                let mut b = r.body.clone();
                b.extend_from_slice(b"&extra=1");
                r.body(b)
            },
        ),
        refused(
            "mandrill: signature header missing",
            401,
            "missing_signature",
            signed(app, "mandrill", FORM, &mandrill_body()).without("X-Mandrill-Signature"),
        ),
        // Mailgun: the signature (timestamp, token, HMAC) travels in the body.
        refused(
            "mailgun: token swapped after signing",
            401,
            "invalid_signature",
            base("mailgun").body(serde_json::to_vec(&mg_swapped).expect("json")),
        ),
        refused(
            "mailgun: no signature object",
            401,
            "missing_signature",
            base("mailgun").body(mailgun_body("mg-5")),
        ),
        Case {
            name: "mailgun: a stored delivery's token reused with another body".into(),
            req: base("mailgun").body(serde_json::to_vec(&mg_reused).expect("json")),
            expect: Expect::Duplicate(mailgun_id.to_string()),
        },
        // SendGrid: ECDSA P-256 over timestamp + body.
        refused(
            "sendgrid: signed by another key",
            401,
            "invalid_signature",
            sendgrid(&other_key, &body, unix(t)),
        ),
        refused(
            "sendgrid: replayed 400 s late",
            401,
            "stale_timestamp",
            sendgrid(&sendgrid_key(), &body, unix(old)),
        ),
        refused(
            "sendgrid: signature is not DER",
            401,
            "invalid_signature",
            sendgrid(&sendgrid_key(), &body, unix(t))
                .set("X-Twilio-Email-Event-Webhook-Signature", b64(&right_mac)),
        ),
        refused(
            "sendgrid: signature of another body",
            401,
            "invalid_signature",
            sendgrid(&sendgrid_key(), &body, unix(t)).body(other.clone()),
        ),
        // Token in the query.
        refused(
            "token: wrong token",
            401,
            "invalid_credentials",
            base("token").path(format!("{token_path}?token=not-{TOKEN_SECRET}")),
        ),
        refused(
            "token: token missing",
            401,
            "missing_credentials",
            base("token").path(token_path),
        ),
        refused(
            "token: right token under another parameter",
            401,
            "missing_credentials",
            base("token").path(format!("{token_path}?key={TOKEN_SECRET}")),
        ),
        // HTTP Basic.
        refused(
            "basic: wrong password",
            401,
            "invalid_credentials",
            base("basic").set("Authorization", basic("leadgate", "wrong-password")),
        ),
        refused(
            "basic: right password, wrong user",
            401,
            "invalid_credentials",
            base("basic").set("Authorization", basic("admin", BASIC_SECRET)),
        ),
        refused(
            "basic: the password as a Bearer token",
            401,
            "missing_credentials",
            base("basic").set("Authorization", format!("Bearer {BASIC_SECRET}")),
        ),
        refused(
            "basic: credentials that are not base64",
            401,
            "invalid_credentials",
            base("basic").set("Authorization", "Basic %%%not-base64%%%"),
        ),
        refused(
            "basic: credentials without a colon",
            401,
            "invalid_credentials",
            base("basic").set(
                "Authorization",
                format!("Basic {}", b64(BASIC_SECRET.as_bytes())),
            ),
        ),
        refused(
            "basic: no Authorization header",
            401,
            "missing_credentials",
            base("basic"),
        ),
        // Generic HMAC (Slack-style v0=<hex> over "v0:ts:body").
        refused(
            "hmac: HMAC-SHA1 where SHA-256 is expected",
            401,
            "invalid_signature",
            signed(app, "slack", JSON, &body).set("X-Slack-Signature", format!("v0={slack_sha1}")),
        ),
        refused(
            "hmac: timestamp header missing",
            401,
            "missing_signature",
            signed(app, "slack", JSON, &body).without("X-Slack-Request-Timestamp"),
        ),
        refused(
            "hmac: timestamp that is not a number",
            401,
            "invalid_signature",
            signed(app, "slack", JSON, &body).set("X-Slack-Request-Timestamp", "yesterday"),
        ),
    ];
    // Every scheme that signs a timestamp (Mailgun's tokens must differ: they are replay keys).
    for (scheme, source, late, early) in [
        ("stripe", "stripe", body.clone(), body.clone()),
        ("standard-webhooks", "sw", body.clone(), body.clone()),
        ("hubspot v3", "hubspot", body.clone(), body.clone()),
        (
            "mailgun",
            "mailgun",
            mailgun_body("mg-3"),
            mailgun_body("mg-4"),
        ),
        ("hmac", "slack", body.clone(), body.clone()),
    ] {
        cases.extend(outside_window(app, scheme, source, &late, &early));
    }
    cases
}

/// Bodies the decoder must refuse, each validly signed; and the limit, which comes first.
fn body_cases(app: &TestApp) -> Vec<Case> {
    let tf = |ct: &str, b: &[u8]| signed(app, "typeform", ct, b);
    // Well-formed, so only the nesting is wrong.
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)).into_bytes();
    let just_too_deep = format!("{}{}", "[".repeat(65), "]".repeat(65)).into_bytes();
    let deep_form = format!("a{}=1", "[x]".repeat(10_000)).into_bytes();
    let many_fields = {
        let mut s = String::new();
        for i in 0..100_000 {
            let _ = write!(s, "k{i}=1&");
        }
        assert!(s.len() < 1_048_576, "under the default body limit");
        s.into_bytes()
    };
    // A one-letter boundary keeps 100,000 parts under the `big` source's 8 MiB limit.
    let many_parts = {
        let mut out = String::new();
        for i in 0..100_000 {
            let _ = write!(
                out,
                "--b\r\nContent-Disposition: form-data; name=\"k{i}\"\r\n\r\n1\r\n"
            );
        }
        out.push_str("--b--\r\n");
        assert!(out.len() < 8 << 20, "under the big source's limit");
        out.into_bytes()
    };
    let too_big = {
        let mut b = json_body("big-1");
        let pad = 4097 - b.len();
        b.extend(vec![b' '; pad]);
        b
    };
    let mut utf16_odd: Vec<u8> =
        r#"{"email":"x"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    utf16_odd.push(b'{');
    let email_name = format!(r#"{{"email":"{EMAIL}","name":"{NAME}""#);

    vec![
        // Size: the limit is checked before anything else.
        refused(
            "limit: body one byte over, Content-Length declared",
            413,
            "body_too_large",
            signed(app, "tiny", JSON, &too_big),
        ),
        refused(
            "limit: body over, chunked without Content-Length",
            413,
            "body_too_large",
            signed(app, "tiny", JSON, &too_big).chunked(),
        ),
        refused(
            "limit: body over with a forged signature (limit before verify)",
            413,
            "body_too_large",
            signed(app, "tiny", JSON, &too_big).set("Typeform-Signature", "sha256=AAAA"),
        ),
        // Empty and broken JSON.
        refused("json: empty body", 400, "invalid_body", tf(JSON, b"")),
        refused(
            "json: whitespace only",
            400,
            "invalid_body",
            tf(JSON, b" \r\n\t "),
        ),
        refused(
            "json: truncated",
            400,
            "invalid_body",
            tf(JSON, &json_body("trunc")[..40]),
        ),
        refused(
            "json: unterminated object",
            400,
            "invalid_body",
            tf(JSON, email_name.as_bytes()),
        ),
        refused(
            "json: trailing comma",
            400,
            "invalid_body",
            tf(
                JSON,
                format!(r#"{{"email":"{EMAIL}","name":"{NAME}",}}"#).as_bytes(),
            ),
        ),
        refused(
            "json: trailing garbage after the value",
            400,
            "invalid_body",
            tf(JSON, format!(r#"{{"email":"{EMAIL}"}} {NAME}"#).as_bytes()),
        ),
        refused(
            "json: single quotes",
            400,
            "invalid_body",
            tf(JSON, format!("{{'email':'{EMAIL}'}}").as_bytes()),
        ),
        refused("json: invalid UTF-8 in a string", 400, "invalid_body", {
            let mut b = format!(r#"{{"email":"{EMAIL}","name":"Ren"#).into_bytes();
            b.extend_from_slice(b"\xe9\"}");
            tf(JSON, &b)
        }),
        refused(
            "json: UTF-16 declared, odd number of bytes",
            400,
            "invalid_body",
            tf("application/json; charset=utf-16le", &utf16_odd),
        ),
        refused(
            "json: 10,000 nested arrays (no stack overflow)",
            400,
            "invalid_body",
            tf(JSON, &deep_arrays),
        ),
        refused(
            "json: 10,000 nested objects",
            400,
            "invalid_body",
            tf(JSON, &deep_objects),
        ),
        refused(
            "json: 65 levels, one over the limit",
            400,
            "invalid_body",
            tf(JSON, &just_too_deep),
        ),
        // Mailgun signs only its token, so the verifier accepts this; the decoder refuses it.
        refused(
            "mailgun: 10,000 nested arrays beside a valid signature",
            400,
            "invalid_body",
            {
                let mut b = signed(app, "mailgun", JSON, &mailgun_body("mg-deep"));
                let mut v = b.body.clone();
                v.pop(); // the closing brace
                v.extend_from_slice(br#","deep":"#);
                v.extend_from_slice(&deep_arrays);
                v.push(b'}');
                b.body = v;
                b
            },
        ),
        // Forms.
        refused(
            "form: invalid UTF-8 in a value",
            400,
            "invalid_body",
            tf(FORM, &[form_body(), b"&city=K%F6ln".to_vec()].concat()),
        ),
        refused(
            "form: invalid UTF-8 in a name",
            400,
            "invalid_body",
            tf(FORM, b"na\xffme=x&a=1"),
        ),
        refused(
            "form: a name nested 10,000 levels",
            400,
            "invalid_body",
            tf(FORM, &deep_form),
        ),
        refused(
            "form: 100,000 fields (limit 10,000)",
            400,
            "invalid_body",
            tf(FORM, &many_fields),
        ),
        // Multipart.
        refused(
            "multipart: no boundary parameter",
            400,
            "invalid_body",
            tf(
                "multipart/form-data",
                &multipart(&[("name=\"email\"", EMAIL.as_bytes())], true),
            ),
        ),
        refused(
            "multipart: empty boundary parameter",
            400,
            "invalid_body",
            tf(
                "multipart/form-data; boundary=\"\"",
                &multipart(&[("name=\"email\"", EMAIL.as_bytes())], true),
            ),
        ),
        refused("multipart: unterminated part", 400, "invalid_body", {
            let mut b = multipart(&[("name=\"email\"", EMAIL.as_bytes())], false);
            b.extend_from_slice(
                format!("--{B}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{NAME}")
                    .as_bytes(),
            );
            tf(&multipart_ct(), &b)
        }),
        refused(
            "multipart: body does not use the declared boundary",
            400,
            "invalid_body",
            tf(
                "multipart/form-data; boundary=SomethingElse",
                &multipart(&[("name=\"email\"", EMAIL.as_bytes())], true),
            ),
        ),
        refused(
            "multipart: part headers never end",
            400,
            "invalid_body",
            tf(
                &multipart_ct(),
                format!("--{B}\r\nContent-Disposition: form-data; name=\"email\"\r\n{EMAIL}")
                    .as_bytes(),
            ),
        ),
        refused(
            "multipart: unknown _charset_ field",
            415,
            "unsupported_media_type",
            tf(
                &multipart_ct(),
                &multipart(
                    &[
                        ("name=\"_charset_\"", EMAIL.as_bytes()),
                        ("name=\"name\"", NAME.as_bytes()),
                    ],
                    true,
                ),
            ),
        ),
        refused(
            "multipart: unknown charset on a part",
            415,
            "unsupported_media_type",
            tf(
                &multipart_ct(),
                &multipart(
                    &[(
                        &format!("name=\"name\"\r\nContent-Type: text/plain; charset={NAME}"),
                        b"x",
                    )],
                    true,
                ),
            ),
        ),
        refused(
            "multipart: invalid UTF-8 in a text part",
            400,
            "invalid_body",
            tf(
                &multipart_ct(),
                &multipart(
                    &[
                        ("name=\"email\"", EMAIL.as_bytes()),
                        ("name=\"name\"", b"Ren\xe9"),
                    ],
                    true,
                ),
            ),
        ),
        refused(
            "multipart: 100,000 parts (limit 10,000)",
            400,
            "invalid_body",
            signed(app, "big", "multipart/form-data; boundary=b", &many_parts),
        ),
        // Content types.
        refused(
            "content type: text/plain",
            415,
            "unsupported_media_type",
            tf("text/plain", &json_body("ct-1")),
        ),
        refused(
            "content type: application/xml",
            415,
            "unsupported_media_type",
            tf(
                "application/xml",
                format!("<lead><email>{EMAIL}</email></lead>").as_bytes(),
            ),
        ),
        refused(
            "content type: missing",
            415,
            "unsupported_media_type",
            tf(JSON, &json_body("ct-2")).content_type(None),
        ),
        refused(
            "content type: unknown charset",
            415,
            "unsupported_media_type",
            tf("application/json; charset=klingon", &json_body("ct-3")),
        ),
        refused(
            "content type: not a media type",
            415,
            "unsupported_media_type",
            tf("json please", &json_body("ct-4")),
        ),
    ]
}

/// Routing: unknown sources and methods other than POST.
fn route_cases(app: &TestApp) -> Vec<Case> {
    let ok = signed(app, "typeform", JSON, &json_body("route-1"));
    vec![
        refused(
            "route: unknown source",
            404,
            "unknown_source",
            ok.clone().path("/webhooks/typeforms"),
        ),
        refused(
            "route: unknown source, 200-character name",
            404,
            "unknown_source",
            ok.clone().path(format!("/webhooks/{}", "x".repeat(200))),
        ),
        refused(
            "route: unknown source with an encoded slash",
            404,
            "unknown_source",
            ok.clone().path("/webhooks/..%2Ftypeform"),
        ),
        refused(
            "route: GET on an unknown source",
            404,
            "unknown_source",
            ok.clone()
                .method("GET")
                .path("/webhooks/nope")
                .body(Vec::new()),
        ),
        refused(
            "method: PUT",
            405,
            "method_not_allowed",
            ok.clone().method("PUT"),
        ),
        refused(
            "method: DELETE",
            405,
            "method_not_allowed",
            ok.clone().method("DELETE").body(Vec::new()),
        ),
        refused(
            "method: PATCH",
            405,
            "method_not_allowed",
            ok.clone().method("PATCH"),
        ),
        refused(
            "method: GET where the provider checks no URL",
            405,
            "method_not_allowed",
            ok.clone().method("GET").body(Vec::new()),
        ),
    ]
}

/// Why an answer breaks the contract for `case`, if it does.
fn check(case: &Case, a: &Answer, before: i64, after: i64) -> Vec<String> {
    let mut wrong = Vec::new();
    if after != before {
        wrong.push(format!("the inbox changed: {before} -> {after} events"));
    }
    let json: serde_json::Value = serde_json::from_str(&a.text).unwrap_or_default();
    match &case.expect {
        Expect::Refused(status, code) => {
            if a.status != *status {
                wrong.push(format!("status {} (expected {status})", a.status));
            }
            let keys: Vec<&str> = json
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if keys != ["error", "message"] || !json["message"].is_string() {
                wrong.push(format!(
                    "body is not {{\"error\", \"message\"}}: {}",
                    a.text
                ));
            }
            if json["error"] != *code {
                wrong.push(format!("error {} (expected {code})", json["error"]));
            }
            if !a.content_type.starts_with("application/json") {
                wrong.push(format!("content type {:?}", a.content_type));
            }
        }
        Expect::Duplicate(id) => {
            if (a.status, &json["duplicate"], &json["id"])
                != (200, &serde_json::json!(true), &serde_json::json!(id))
            {
                wrong.push(format!(
                    "expected 200 duplicate of {id}, got {} {}",
                    a.status, a.text
                ));
            }
        }
    }
    // Nothing the sender sent that could be sensitive comes back.
    let mut never: Vec<String> = SECRETS.iter().map(|s| s.to_string()).collect();
    never.extend([EMAIL.to_string(), NAME.to_string()]);
    for (k, v) in &case.req.headers {
        let v = String::from_utf8_lossy(v).into_owned();
        if v.len() >= 8 && !k.eq_ignore_ascii_case("content-type") {
            never.push(v);
        }
    }
    if let Some((_, q)) = case.req.path.split_once('?') {
        never.extend(
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
    }
    let body = String::from_utf8_lossy(&case.req.body).into_owned();
    if body.trim().len() >= 12 {
        never.push(body.trim().to_string());
    }
    // Case-insensitively: a parser may have lower-cased what it quotes.
    let answer = a.text.to_lowercase();
    for n in never.iter().filter(|n| !n.is_empty()) {
        if answer.contains(&n.to_lowercase()) {
            wrong.push(format!("the answer echoes {n:?}: {}", a.text));
        }
    }
    wrong
}

async fn run(app: &TestApp, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before = app.count_events();
        let a = send(app, &case.req).await;
        let after = app.count_events();
        for w in check(case, &a, before, after) {
            failures.push(format!("{}: {w}", case.name));
        }
    }
    failures
}

#[tokio::test]
async fn hostile_and_broken_deliveries_are_refused_with_the_contract_status_and_nothing_stored() {
    let app = app().await;

    // One stored Mailgun delivery, whose token a later case reuses.
    let first = signed(&app, "mailgun", JSON, &mailgun_body("mg-1"));
    let a = send(&app, &first).await;
    assert_eq!(
        a.status, 202,
        "the valid Mailgun delivery is stored: {}",
        a.text
    );
    let first_id = serde_json::from_str::<serde_json::Value>(&a.text).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(app.count_events(), 1);

    let mut cases = verify_cases(&app, &first, &first_id);
    cases.extend(body_cases(&app));
    cases.extend(route_cases(&app));
    let refusals = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refused(..)))
        .count();
    assert!(refusals >= 40, "{refusals} refusal cases");
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let failures = run(&app, &cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases broke the contract:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        app.count_events(),
        1,
        "only the one valid delivery is stored"
    );

    // The app is still healthy after all of it.
    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_json_object_with_100k_keys_under_the_body_limit_is_accepted() {
    // Only form and multipart bodies have a field limit; a JSON body is stored as it came and is
    // bounded by the body limit alone. This one is explicitly ACCEPTED.
    let app = app().await;
    let mut body = String::from(r#"{"event_id":"many-keys""#);
    for i in 0..100_000 {
        let _ = write!(body, r#","k{i}":1"#);
    }
    body.push('}');
    let a = send(&app, &signed(&app, "big", JSON, body.as_bytes())).await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(app.count_events(), 1);
}
