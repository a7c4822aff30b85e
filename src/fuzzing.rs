//! Entry points for fuzzing: one function per target, each taking arbitrary bytes. The cargo-fuzz
//! targets in `fuzz/fuzz_targets/` are one-line wrappers around these, and `tests/fuzz_corpus.rs`
//! replays the checked-in corpus (`fuzz/corpus/<target>/`) through the same functions, so plain
//! `cargo test` (CI) guards every input the fuzzer ever needed — including fixed crashes.
//!
//! They live in the library (hidden from the docs, never called by the service) rather than in the
//! fuzz crate because the root test cannot depend on that crate, which sits outside the workspace;
//! as a module of the crate they may also use `pub(crate)` helpers without widening the API.
//!
//! A panic here is a finding: either the service panicked on input, or one of the asserted
//! invariants between two code paths broke (e.g. the one-pass JSON check accepting a body that the
//! full decode refuses).

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::MappingSettings;
use crate::ingest::decode::{self, nested_deeper_than, BodyKind, EventIdPath, Limits};
use crate::ingest::verify::{self, Inbound, Outbound, SchemeOptions, Secret, Verifier};
use crate::mapping::{guess_content_type, MappingSet};

/// The names of the targets, as directories under `fuzz/corpus/`.
pub const TARGETS: &[&str] = &["decode", "signature", "mapping"];

/// Runs `data` through the entry point of `target`; false for an unknown target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "decode" => decode(data),
        "signature" => signature(data),
        "mapping" => mapping(data),
        _ => return false,
    }
    true
}

/// Splits off the first line (without `\r\n` / `\n`) and the rest.
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            data[..i].strip_suffix(b"\r").unwrap_or(&data[..i]),
            &data[i + 1..],
        ),
        None => (data, &[]),
    }
}

// ---- decode ----

/// Input: the `Content-Type` header on the first line (an empty line means no header), the body
/// after it. Runs [`decode::decode`] and [`decode::check`] (with no event-id path, a plain one
/// and a general one) under the default limits and tight ones, plus [`decode::form_pairs`].
///
/// Invariants: `check` accepts exactly the bodies `decode` accepts, with the same kind of error
/// and, for forms and multipart, the same value; a decoded JSON body is within the depth limit.
pub fn decode(data: &[u8]) {
    let (ct, body) = first_line(data);
    let Ok(ct) = std::str::from_utf8(ct) else {
        return;
    };
    let ct = (!ct.is_empty()).then_some(ct);
    let tight = Limits {
        max_fields: 8,
        max_depth: 3,
        ..Limits::default()
    };
    for limits in [&Limits::default(), &tight] {
        let decoded = decode::decode(ct, body, limits);
        if let Ok(d) = &decoded {
            if d.kind == BodyKind::Json {
                assert!(
                    !nested_deeper_than(&d.value, limits.max_depth),
                    "decoded JSON deeper than max_depth {}",
                    limits.max_depth
                );
            }
        }
        for path in event_id_paths() {
            let checked = decode::check(ct, body, limits, path);
            match (&decoded, &checked) {
                (Ok(d), Ok(c)) => {
                    assert_eq!(d.kind, c.kind, "check and decode disagree on the kind");
                    if d.kind != BodyKind::Json {
                        assert_eq!(c.payload.as_ref(), Some(&d.value), "check payload differs");
                    }
                }
                (Err(d), Err(c)) => assert_eq!(
                    std::mem::discriminant(d),
                    std::mem::discriminant(c),
                    "check and decode fail differently: {d:?} vs {c:?}"
                ),
                (d, c) => panic!(
                    "check and decode disagree (path {path:?}): decode {:?}, check {:?}",
                    d.as_ref().map(|d| d.kind),
                    c.as_ref().map(|c| c.kind)
                ),
            }
        }
    }
    let _ = decode::form_pairs(body);
}

/// No event id, the plain paths providers use, and a query that needs the general JSONPath.
fn event_id_paths() -> [Option<&'static EventIdPath>; 4] {
    static PATHS: OnceLock<[EventIdPath; 3]> = OnceLock::new();
    let [a, b, c] = PATHS.get_or_init(|| {
        ["$.event_id", "$.payload[0]['id']", "$..id"].map(|p| match EventIdPath::parse(p) {
            Ok(path) => path,
            Err(e) => panic!("fuzz event-id path {p:?}: {e}"),
        })
    });
    [None, Some(a), Some(b), Some(c)]
}

// ---- signature ----

/// The clock of every signature check: 2023-11-14T22:13:20Z. Seeds sign with this time.
pub const NOW_SECS: u64 = 1_700_000_000;

/// The base URL sources are configured under (`public_url`).
const PUBLIC_URL: &str = "https://leads.example.com/webhooks/";

/// The public key of SendGrid's published test vector (`eventwebhook.spec.js`).
const SENDGRID_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

/// One verifier per scheme (and per option set that parses differently), by source name.
fn verifiers() -> &'static [(&'static str, Box<dyn Verifier>)] {
    static VERIFIERS: OnceLock<Vec<(&'static str, Box<dyn Verifier>)>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let opts = |f: fn(&mut SchemeOptions)| {
            let mut o = SchemeOptions::default();
            f(&mut o);
            o
        };
        let plain = SchemeOptions::default();
        let sources: Vec<(&'static str, &'static str, SchemeOptions, &'static str)> = vec![
            // Slack's v0 scheme as a generic HMAC instance (its published signing secret).
            (
                "hmac",
                "hmac",
                opts(|o| {
                    o.header = Some("X-Slack-Signature".into());
                    o.prefix = Some("v0=".into());
                    o.template = Some("v0:{timestamp}:{body}".into());
                    o.timestamp_header = Some("X-Slack-Request-Timestamp".into());
                }),
                "8f742231b10e8888abcd99yyyzzz85a5",
            ),
            // Every other template part, SHA-1 and base64, a millisecond timestamp and an id.
            (
                "hmac-full",
                "hmac",
                opts(|o| {
                    o.header = Some("X-Signature".into());
                    o.algorithm = Some("sha1".into());
                    o.encoding = Some("base64".into());
                    o.template = Some("{method} {url}\n{id}.{timestamp}.{body}".into());
                    o.timestamp_header = Some("X-Timestamp".into());
                    o.timestamp_unit = Some("ms".into());
                    o.id_header = Some("X-Request-Id".into());
                }),
                "hmac-full-secret",
            ),
            ("typeform", "typeform", plain.clone(), "typeform-secret"),
            ("tally", "tally", plain.clone(), "tally-secret"),
            ("webflow", "webflow", plain.clone(), "webflow-secret"),
            ("formstack", "formstack", plain.clone(), "formstack-secret"),
            ("cal-com", "cal-com", plain.clone(), "cal-com-secret"),
            ("klaviyo", "klaviyo", plain.clone(), "klaviyo-secret"),
            (
                "customer-io",
                "customer-io",
                plain.clone(),
                "customer-io-secret",
            ),
            ("meta", "meta", plain.clone(), "meta-app-secret"),
            ("stripe", "stripe", plain.clone(), "whsec_test_secret"),
            (
                "calendly",
                "calendly",
                plain.clone(),
                "calendly-signing-key",
            ),
            (
                "standard-webhooks",
                "standard-webhooks",
                plain.clone(),
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            (
                "hubspot",
                "hubspot",
                plain.clone(),
                "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            ),
            (
                "hubspot-v2",
                "hubspot",
                opts(|o| o.version = Some("v2".into())),
                "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            ),
            (
                "hubspot-v1",
                "hubspot",
                opts(|o| o.version = Some("v1".into())),
                "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
            ),
            ("mandrill", "mandrill", plain.clone(), "test-key"),
            ("mailgun", "mailgun", plain.clone(), "mailgun-signing-key"),
            (
                "sendgrid",
                "sendgrid",
                opts(|o| o.public_key = Some(SENDGRID_PUBLIC_KEY.into())),
                "",
            ),
            ("token", "token", plain.clone(), "s3cret-token"),
            (
                "token-header",
                "token",
                opts(|o| o.header = Some("Authorization".into())),
                "s3cret-token",
            ),
            ("basic", "basic", plain, "basic-password"),
        ];
        sources
            .into_iter()
            .map(|(name, scheme, o, secret)| {
                let secrets = if secret.is_empty() {
                    Vec::new()
                } else {
                    vec![Secret::new(secret)]
                };
                match verify::build(scheme, &o, secrets) {
                    Ok(v) => (name, v),
                    Err(e) => panic!("fuzz source {name}: {e}"),
                }
            })
            .collect()
    })
}

/// Input: a raw HTTP/1.1 request. The request line is `METHOD /webhooks/<source>[?query] ...`,
/// where `<source>` names one of the configured verifiers above (`stripe`, `hubspot-v2`, ...);
/// header lines follow until an empty line, then the body. Header lines that are not valid
/// header names/values are dropped, as the HTTP server would refuse them.
///
/// Runs that source's `verify` against the request at [`NOW_SECS`], which parses its signature
/// headers (or body fields) with every scheme's own code. Then, as a property: the same method,
/// URL, content type and body signed by the scheme's `sign` (what `leadgate send` does) must
/// verify.
pub fn signature(data: &[u8]) {
    let (line, mut rest) = first_line(data);
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let mut words = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path.rsplit('/').next().unwrap_or_default();
    let Some((name, verifier)) = verifiers().iter().find(|(n, _)| *n == name) else {
        return;
    };

    let mut headers = HeaderMap::new();
    loop {
        let (header, after) = first_line(rest);
        rest = after;
        if header.is_empty() {
            break;
        }
        let Some(colon) = header.iter().position(|b| *b == b':') else {
            continue;
        };
        let (k, v) = (&header[..colon], header[colon + 1..].trim_ascii());
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim_ascii()),
            HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    let body = rest;
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let url = format!("{PUBLIC_URL}{name}");
    let inbound = Inbound {
        method,
        url: &url,
        url_is_exact: false,
        query,
        headers: &headers,
        body,
        now,
    };
    let _ = verifier.verify(&inbound);
    sign_then_verify(verifier.as_ref(), &inbound);
}

/// Whatever a scheme signs, it verifies.
fn sign_then_verify(verifier: &dyn Verifier, req: &Inbound<'_>) {
    let content_type = req
        .header(CONTENT_TYPE.as_str())
        .unwrap_or("application/json");
    let mut out = Outbound {
        method: req.method.to_string(),
        url: req.signed_url().into_owned(),
        headers: Vec::new(),
        content_type: content_type.to_string(),
        body: req.body.to_vec(),
        now: req.now,
    };
    if verifier.sign(&mut out).is_err() {
        return;
    }
    let mut headers = HeaderMap::new();
    let sent = out.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (k, v) in sent.chain([("content-type", out.content_type.as_str())]) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) else {
            panic!("{}: sign wrote an invalid header {k:?}", verifier.scheme());
        };
        headers.append(name, value);
    }
    let (url, query) = out.url.split_once('?').unwrap_or((out.url.as_str(), ""));
    let signed = Inbound {
        method: &out.method,
        url,
        url_is_exact: false,
        query,
        headers: &headers,
        body: &out.body,
        now: out.now,
    };
    if let Err(e) = verifier.verify(&signed) {
        panic!(
            "{}: a request it signed does not verify: {e}",
            verifier.scheme()
        );
    }
}

// ---- mapping ----

/// When mapped events were received, for payloads that carry no time of their own.
fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW_SECS as i64, 0).unwrap_or_default()
}

/// Every shipped mapping in `mappings/`, loaded once, by source name (the file's stem).
fn mappings() -> &'static [MappingSet] {
    static SETS: OnceLock<Vec<MappingSet>> = OnceLock::new();
    SETS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let settings = MappingSettings {
            default_phone_region: "US".into(),
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let source = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("source");
                MappingSet::load_file(source, path, &settings)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
            })
            .collect()
    })
}

/// Input: a webhook body as a provider sends it — JSON, urlencoded, or multipart starting with its
/// boundary line (the content type is guessed as `leadgate map` guesses a payload file's). The
/// decoded payload is mapped by every shipped mapping (`mappings/*.toml`) and each result
/// serialised as `leadgate map` prints it.
pub fn mapping(data: &[u8]) {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    let kind = match first {
        Some(b'{' | b'[') => "json",
        Some(b'-') => "multipart",
        _ => "form",
    };
    let guess = guess_content_type(std::path::Path::new(&format!("payload.{kind}")), data);
    let Ok(decoded) = decode::decode(guess.as_deref(), data, &Limits::default()) else {
        return;
    };
    let value: Value = decoded.value;
    for set in mappings() {
        for source in set.sources() {
            if let Ok(mapped) = set.map(source, &value, received_at()) {
                if let Err(e) = serde_json::to_string(&mapped) {
                    panic!("{source}: the mapped result does not serialise: {e}");
                }
            }
        }
    }
}
