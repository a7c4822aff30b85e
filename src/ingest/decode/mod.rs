//! Body decoding: JSON, `application/x-www-form-urlencoded` (PHP bracket keys) and
//! `multipart/form-data`, in the request's charset, into one JSON value.
//!
//! The rules, in the order they apply:
//! - The `Content-Type` is parsed with `mime` (case-insensitive, parameters honoured).
//!   `application/json`, `text/json` and any `+json` suffix are JSON;
//!   `application/x-www-form-urlencoded` is a form; `multipart/form-data` needs a `boundary`.
//!   Anything else is [`DecodeError::Unsupported`], no header is [`DecodeError::MissingContentType`].
//! - The `charset` parameter picks the text encoding (UTF-8 when absent), looked up with
//!   `encoding_rs` (WHATWG labels, so `iso-8859-1` means windows-1252). An unknown label is
//!   `Unsupported`. Decoding is strict: bytes that are not valid in the charset are
//!   [`DecodeError::Malformed`], never replaced by U+FFFD.
//! - A byte-order mark wins over the declared charset, as in the WHATWG decode algorithm: a UTF-8
//!   BOM is skipped, and a UTF-16 BOM switches a JSON body to UTF-16.
//! - An empty or whitespace-only body is `Malformed("empty body")`.
//! - Error messages never quote the body; at most they give a position.

mod form;
mod multipart;
mod scan;

pub use self::scan::{EventIdPath, PlainPath};

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};
use mime::Mime;
use serde_json::Value;

/// What kind of body arrived; JSON bodies are stored once (raw), others also as decoded JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Multipart,
}

/// Bounds that keep a hostile body from costing much.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most fields a form or multipart body may carry.
    pub max_fields: usize,
    /// Deepest bracket-key or JSON nesting accepted.
    pub max_depth: usize,
    /// Form/multipart fields whose text is itself JSON and is parsed in place.
    pub json_fields: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_fields: 10_000,
            max_depth: 64,
            json_fields: vec![
                "rawRequest".into(),
                "mandrill_events".into(),
                "data.json".into(),
            ],
        }
    }
}

#[derive(Debug)]
pub struct Decoded {
    pub value: Value,
    pub kind: BodyKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// -> 415
    #[error("unsupported content type {0:?}; expected application/json, application/x-www-form-urlencoded or multipart/form-data")]
    Unsupported(String),
    /// -> 415
    #[error("missing Content-Type header")]
    MissingContentType,
    /// -> 400
    #[error("{0}")]
    Malformed(String),
}

impl DecodeError {
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        DecodeError::Malformed(msg.into())
    }
}

/// serde_json refuses input nested 128 levels deep or more, so a `max_depth` of 127 or above
/// needs no check of ours.
const SERDE_JSON_MAX_DEPTH: usize = 127;

/// At most this much of an unparseable `Content-Type` header is quoted back in an error.
const MAX_QUOTED_TYPE: usize = 100;

/// What ingest needs to know about a body before storing it.
#[derive(Debug)]
pub struct Checked {
    pub kind: BodyKind,
    /// The decoded value of a form or multipart body (a JSON body is stored as it came).
    pub payload: Option<Value>,
    /// The string or number at the source's event-id path.
    pub event_id: Option<String>,
}

/// Checks a body as [`decode`] would and finds its event id, building the value only when it
/// has to be stored (forms, multipart) or the id path needs it. A UTF-8 JSON body with a plain
/// id path is checked in one pass over its bytes ([`scan`]).
pub fn check(
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
    event_id: Option<&EventIdPath>,
) -> Result<Checked, DecodeError> {
    let (mime, kind, charset) = classify(content_type, body)?;
    if kind == BodyKind::Json {
        let (json, charset) = sniff_bom(body, charset);
        let plain = match event_id {
            None => Some(None),
            Some(EventIdPath::Plain(p)) => Some(Some(p)),
            Some(EventIdPath::General(_)) => None,
        };
        if let (true, Some(path)) = (charset == UTF_8, plain) {
            let id = scan::scan(json, limits.max_depth, path).map_err(|e| match e {
                scan::ScanError::Json(e) => json_error(&e),
                scan::ScanError::TooDeep => too_deep(limits),
            })?;
            return Ok(Checked {
                kind,
                payload: None,
                event_id: id,
            });
        }
        let value = decode_json(json, charset, limits)?;
        return Ok(Checked {
            kind,
            payload: None,
            event_id: event_id.and_then(|p| p.find(&value)),
        });
    }
    let value = decode_classified(&mime, kind, charset, body, limits)?.value;
    Ok(Checked {
        kind,
        event_id: event_id.and_then(|p| p.find(&value)),
        payload: Some(value),
    })
}

/// The content type, body kind and charset of a request, and the empty-body check.
fn classify(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Mime, BodyKind, &'static Encoding), DecodeError> {
    let raw_type = content_type.ok_or(DecodeError::MissingContentType)?;
    let mime = parse_type(raw_type)?;
    let kind = body_kind(&mime)?;
    let charset = charset(&mime)?;
    if is_blank(body) {
        return Err(DecodeError::malformed("empty body"));
    }
    Ok((mime, kind, charset))
}

fn too_deep(limits: &Limits) -> DecodeError {
    DecodeError::Malformed(format!(
        "JSON nested deeper than {} levels",
        limits.max_depth
    ))
}

/// The body turned into one JSON value, following the content type and charset of the request.
pub fn decode(
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let (mime, kind, charset) = classify(content_type, body)?;
    decode_classified(&mime, kind, charset, body, limits)
}

fn decode_classified(
    mime: &Mime,
    kind: BodyKind,
    charset: &'static Encoding,
    body: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    match kind {
        BodyKind::Json => {
            let (body, charset) = sniff_bom(body, charset);
            let value = decode_json(body, charset, limits)?;
            Ok(Decoded { value, kind })
        }
        BodyKind::Form => {
            let (body, charset) = sniff_bom(body, charset);
            // A form in UTF-16 is first turned into UTF-8 text; its `%XX` escapes are then read
            // as UTF-8, which is what the WHATWG form encoding uses in place of UTF-16.
            let value = if charset == UTF_16LE || charset == UTF_16BE {
                let text = transcode(body, charset)?;
                form::decode(text.as_bytes(), UTF_8, limits)?
            } else {
                form::decode(body, charset, limits)?
            };
            Ok(Decoded { value, kind })
        }
        BodyKind::Multipart => {
            let boundary = mime
                .get_param(mime::BOUNDARY)
                .map(|b| b.as_str())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| DecodeError::malformed("multipart/form-data without a boundary"))?;
            let value = multipart::decode(body, boundary, charset, limits)?;
            Ok(Decoded { value, kind })
        }
    }
}

/// The decoded `key=value` pairs of a urlencoded body, in order (Mandrill signs them sorted).
///
/// `+` is a space and `%XX` escapes are bytes; both names and values must then be UTF-8. A UTF-8
/// BOM is skipped and empty pieces (`a=1&&b=2`) are ignored, exactly as [`decode`] does.
pub fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    form::raw_pairs(body)
        .enumerate()
        .map(|(i, (name, value))| {
            Ok((
                form::field_text(name, UTF_8, i, "name")?,
                form::field_text(value, UTF_8, i, "value")?,
            ))
        })
        .collect()
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn quote_type(raw: &str) -> String {
    match raw.char_indices().nth(MAX_QUOTED_TYPE) {
        Some((cut, _)) => format!("{}...", &raw[..cut]),
        None => raw.to_string(),
    }
}

/// The parsed `Content-Type`. The `mime` crate refuses whitespace before a `;`, which RFC 9110
/// allows, so a failed parse is retried with the parameters re-joined. A header that still does
/// not parse is `Malformed` when its type is one we decode (the parameters are broken, e.g.
/// `boundary=""`), and `Unsupported` otherwise.
fn parse_type(raw: &str) -> Result<mime::Mime, DecodeError> {
    let raw = raw.trim();
    if let Ok(m) = raw.parse() {
        return Ok(m);
    }
    let rejoined = raw
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(m) = rejoined.parse() {
        return Ok(m);
    }
    let essence = raw.split(';').next().unwrap_or_default().trim();
    match essence.parse::<mime::Mime>().map(|m| body_kind(&m)) {
        Ok(Ok(_)) => Err(DecodeError::malformed(format!(
            "invalid {} parameters in Content-Type",
            essence.to_ascii_lowercase()
        ))),
        _ => Err(DecodeError::Unsupported(quote_type(raw))),
    }
}

/// The kind of body a `Content-Type` announces, as the decoder reads it (for signers that must
/// shape a body the way the decoder will take it).
pub fn kind_of(content_type: &str) -> Result<BodyKind, DecodeError> {
    body_kind(&parse_type(content_type)?)
}

fn body_kind(mime: &mime::Mime) -> Result<BodyKind, DecodeError> {
    let (top, sub) = (mime.type_(), mime.subtype());
    if (sub == mime::JSON && (top == mime::APPLICATION || top == mime::TEXT))
        || mime.suffix() == Some(mime::JSON)
    {
        Ok(BodyKind::Json)
    } else if top == mime::APPLICATION && sub == mime::WWW_FORM_URLENCODED {
        Ok(BodyKind::Form)
    } else if top == mime::MULTIPART && sub == mime::FORM_DATA {
        Ok(BodyKind::Multipart)
    } else {
        Err(DecodeError::Unsupported(mime.essence_str().to_string()))
    }
}

/// The encoding named by the `charset` parameter; UTF-8 when there is none.
fn charset(mime: &mime::Mime) -> Result<&'static Encoding, DecodeError> {
    match mime.get_param(mime::CHARSET) {
        None => Ok(UTF_8),
        Some(label) => encoding_for(label.as_str()).ok_or_else(|| {
            DecodeError::Unsupported(format!("{}; charset={label}", mime.essence_str()))
        }),
    }
}

/// A WHATWG charset label; the "replacement" encoding (which only yields U+FFFD) is refused.
pub(crate) fn encoding_for(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label(label.as_bytes()).filter(|e| *e != encoding_rs::REPLACEMENT)
}

fn is_blank(body: &[u8]) -> bool {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    body.iter().all(u8::is_ascii_whitespace)
}

/// Skips a byte-order mark; the encoding it names wins over the declared one.
fn sniff_bom<'a>(body: &'a [u8], declared: &'static Encoding) -> (&'a [u8], &'static Encoding) {
    match Encoding::for_bom(body) {
        Some((enc, len)) => (body.get(len..).unwrap_or_default(), enc),
        None => (body, declared),
    }
}

/// Strictly decodes text in a charset other than UTF-8.
fn transcode<'a>(body: &'a [u8], charset: &'static Encoding) -> Result<Cow<'a, str>, DecodeError> {
    charset
        .decode_without_bom_handling_and_without_replacement(body)
        .ok_or_else(|| DecodeError::Malformed(format!("body is not valid {}", charset.name())))
}

fn decode_json(
    body: &[u8],
    charset: &'static Encoding,
    limits: &Limits,
) -> Result<Value, DecodeError> {
    let parsed = if charset == UTF_8 {
        // Straight from the bytes: serde_json checks the UTF-8 itself, without copying.
        serde_json::from_slice(body)
    } else {
        let text = transcode(body, charset)?;
        if text.trim().is_empty() {
            return Err(DecodeError::malformed("empty body"));
        }
        serde_json::from_str(&text)
    };
    let value: Value = parsed.map_err(|e| json_error(&e))?;
    if nested_deeper_than(&value, limits.max_depth) {
        return Err(too_deep(limits));
    }
    Ok(value)
}

/// `invalid JSON at line L column C: <what>`. serde_json's messages name only the kind of
/// mistake (never the input), so they are kept, without the position it appends itself.
fn json_error(e: &serde_json::Error) -> DecodeError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&position).unwrap_or(&full);
    DecodeError::Malformed(format!(
        "invalid JSON at line {} column {}: {what}",
        e.line(),
        e.column()
    ))
}

/// Whether `value` nests arrays/objects more than `max` levels (`{}` is one level, a string
/// none). A walk over the parsed value: it costs a fraction of the parse that built it, and is
/// skipped when serde_json's own recursion limit is already the tighter bound. The recursion is
/// bounded by that limit too.
pub(crate) fn nested_deeper_than(value: &Value, max: usize) -> bool {
    fn exceeds(v: &Value, budget: usize) -> bool {
        match v {
            Value::Array(items) => budget == 0 || items.iter().any(|x| exceeds(x, budget - 1)),
            Value::Object(map) => budget == 0 || map.values().any(|x| exceeds(x, budget - 1)),
            _ => false,
        }
    }
    max < SERDE_JSON_MAX_DEPTH && exceeds(value, max)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn ok(ct: &str, body: &[u8]) -> Decoded {
        decode(Some(ct), body, &limits()).expect("decodes")
    }

    fn err(ct: &str, body: &[u8]) -> DecodeError {
        decode(Some(ct), body, &limits()).expect_err("must not decode")
    }

    fn malformed(ct: &str, body: &[u8]) -> String {
        match err(ct, body) {
            DecodeError::Malformed(m) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[test]
    fn mailchimp_subscribe_form_builds_the_documented_nested_object() {
        let body = "type=subscribe&fired_at=2009-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp&data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2&data%5Bip_opt%5D=10.20.10.30&data%5Bip_signup%5D=10.20.10.30";
        let d = ok(FORM, body.as_bytes());
        assert_eq!(d.kind, BodyKind::Form);
        assert_eq!(
            d.value,
            json!({
                "type": "subscribe",
                "fired_at": "2009-03-26 21:35:57",
                "data": {
                    "id": "8a25ff1d98",
                    "list_id": "a6b5da1054",
                    "email": "api@mailchimp.com",
                    "email_type": "html",
                    "merges": {
                        "EMAIL": "api@mailchimp.com",
                        "FNAME": "Mailchimp",
                        "LNAME": "API",
                        "INTERESTS": "Group1,Group2"
                    },
                    "ip_opt": "10.20.10.30",
                    "ip_signup": "10.20.10.30"
                }
            })
        );
    }

    #[test]
    fn mandrill_events_json_array_is_parsed_in_place() {
        let events = r#"[{"event":"send","msg":{"email":"lead@example.com","subject":"Hi","tags":["trial"]},"_id":"abc","ts":1700000000}]"#;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("mandrill_events", events)
            .finish();
        let d = ok("application/x-www-form-urlencoded", body.as_bytes());
        assert_eq!(
            d.value,
            json!({"mandrill_events": [{
                "event": "send",
                "msg": {"email": "lead@example.com", "subject": "Hi", "tags": ["trial"]},
                "_id": "abc",
                "ts": 1700000000
            }]})
        );
    }

    #[test]
    fn form_pairs_of_mandrill_body_are_decoded_in_arrival_order() {
        let body = b"mandrill_events=%5B%7B%22event%22%3A%22send%22%7D%5D&b=x+y%2Bz&a=";
        assert_eq!(
            form_pairs(body).unwrap(),
            vec![
                ("mandrill_events".into(), r#"[{"event":"send"}]"#.into()),
                ("b".into(), "x y+z".into()),
                ("a".into(), String::new()),
            ]
        );
    }

    #[test]
    fn form_pairs_refuse_invalid_utf8_without_quoting_it() {
        let e = form_pairs(b"ok=1&name=Ren%E9").unwrap_err();
        assert_eq!(
            e,
            DecodeError::malformed("field 2 value is not valid UTF-8")
        );
    }

    #[test]
    fn unbounce_data_json_values_are_arrays_after_parsing() {
        let data = r#"{"email":["test@test.com"],"full_name":["Kin Lee"],"ip_address":["1.1.1.1"],"page_uuid":["a1b2c3"],"variant":["a"],"time_submitted":["10:57 PM UTC"],"date_submitted":["2023-06-06"]}"#;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("page_id", "a1b2c3")
            .append_pair("page_name", "Demo landing page")
            .append_pair("page_url", "https://example.com/demo")
            .append_pair("variant", "a")
            .append_pair("data.json", data)
            .append_pair("data.xml", "<?xml version=\"1.0\"?><form_data/>")
            .finish();
        let d = ok(
            "application/x-www-form-urlencoded; charset=UTF-8",
            body.as_bytes(),
        );
        assert_eq!(
            d.value,
            json!({
                "page_id": "a1b2c3",
                "page_name": "Demo landing page",
                "page_url": "https://example.com/demo",
                "variant": "a",
                "data.json": {
                    "email": ["test@test.com"],
                    "full_name": ["Kin Lee"],
                    "ip_address": ["1.1.1.1"],
                    "page_uuid": ["a1b2c3"],
                    "variant": ["a"],
                    "time_submitted": ["10:57 PM UTC"],
                    "date_submitted": ["2023-06-06"]
                },
                "data.xml": "<?xml version=\"1.0\"?><form_data/>"
            })
        );
    }

    #[test]
    fn formstack_captured_delivery_is_a_flat_object() {
        let d = ok(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"FormID=6606394&UniqueID=1500877919&HandshakeKey=test",
        );
        assert_eq!(
            d.value,
            json!({"FormID": "6606394", "UniqueID": "1500877919", "HandshakeKey": "test"})
        );
    }

    #[test]
    fn activecampaign_contact_fields_nest_under_contact() {
        let body = "type=subscribe&date_time=2024-01-05T10%3A00%3A00-06%3A00&initiated_by=admin&list=3&contact%5Bid%5D=42&contact%5Bemail%5D=kin%40example.com&contact%5Bfirst_name%5D=Kin&contact%5Btags%5D=webinar%2C+trial&contact%5Bfields%5D%5Bcompany_size%5D=50-200";
        assert_eq!(
            ok(FORM, body.as_bytes()).value,
            json!({
                "type": "subscribe",
                "date_time": "2024-01-05T10:00:00-06:00",
                "initiated_by": "admin",
                "list": "3",
                "contact": {
                    "id": "42",
                    "email": "kin@example.com",
                    "first_name": "Kin",
                    "tags": "webinar, trial",
                    "fields": {"company_size": "50-200"}
                }
            })
        );
    }

    #[test]
    fn latin1_form_percent_escapes_are_read_in_the_declared_charset() {
        let d = ok(
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            b"name=Ren%E9+M%FCller&city=K%F6ln&price=%80+5",
        );
        // WHATWG maps the iso-8859-1 label to windows-1252, so 0x80 is the euro sign.
        assert_eq!(
            d.value,
            json!({"name": "René Müller", "city": "Köln", "price": "€ 5"})
        );
    }

    #[test]
    fn invalid_utf8_in_a_form_is_a_400_not_a_lossy_string() {
        assert_eq!(
            malformed(FORM, b"email=a%40b.c&name=Ren%E9"),
            "field 2 value is not valid UTF-8"
        );
        assert_eq!(
            malformed(FORM, b"na\xFFme=x"),
            "field 1 name is not valid UTF-8"
        );
    }

    #[test]
    fn json_bodies_decode_with_kind_json() {
        let d = ok(
            "application/json",
            br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]"#,
        );
        assert_eq!(d.kind, BodyKind::Json);
        assert_eq!(
            d.value,
            json!([{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 123}])
        );
    }

    #[test]
    fn content_type_is_case_insensitive_and_json_suffixes_count() {
        for ct in [
            "APPLICATION/JSON; Charset=UTF-8",
            "application/vnd.api+json",
            "application/cloudevents+json; charset=utf-8",
            "text/json",
            "  application/json  ",
            "application/json;",
            "application/json ; charset=utf-8",
            "application/json;charset=utf-8;",
        ] {
            assert_eq!(ok(ct, br#"{"a":1}"#).value, json!({"a": 1}), "{ct}");
        }
    }

    #[test]
    fn bad_json_reports_the_position_but_not_the_body() {
        let m = malformed("application/json", b"{\"token\":\"s3cr3t-value\",}");
        assert_eq!(m, "invalid JSON at line 1 column 25: trailing comma");
        assert!(!m.contains("s3cr3t"));
        let m = malformed("application/json", b"{\n  \"email\": \"kin@example.com\"\n");
        assert!(m.starts_with("invalid JSON at line 3 column 0: EOF"), "{m}");
        assert!(!m.contains("kin@"));
    }

    #[test]
    fn invalid_utf8_in_json_is_malformed() {
        let m = malformed("application/json", b"{\"name\":\"Ren\xE9\"}");
        assert!(m.starts_with("invalid JSON at line 1 column"), "{m}");
    }

    #[test]
    fn json_in_latin1_and_utf16_is_transcoded() {
        let d = ok(
            "application/json; charset=iso-8859-1",
            b"{\"name\":\"Ren\xE9\"}",
        );
        assert_eq!(d.value, json!({"name": "René"}));

        let utf16: Vec<u8> = "{\"name\":\"Zoë\"}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let d = ok("application/json; charset=utf-16", &utf16);
        assert_eq!(d.value, json!({"name": "Zoë"}));
    }

    #[test]
    fn byte_order_marks_are_skipped_and_win_over_the_label() {
        let d = ok("application/json", b"\xEF\xBB\xBF{\"a\":\"\xC3\xA9\"}");
        assert_eq!(d.value, json!({"a": "é"}));

        let mut utf16be = vec![0xFE, 0xFF];
        utf16be.extend("{\"a\":1}".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(
            ok("application/json; charset=utf-8", &utf16be).value,
            json!({"a": 1})
        );

        assert_eq!(ok(FORM, b"\xEF\xBB\xBFa=1").value, json!({"a": "1"}));
        assert_eq!(
            form_pairs(b"\xEF\xBB\xBFa=1").unwrap(),
            vec![("a".into(), "1".into())]
        );
    }

    #[test]
    fn unsupported_and_missing_content_types_are_415_kinds() {
        assert_eq!(
            err("text/plain", b"hello"),
            DecodeError::Unsupported("text/plain".into())
        );
        assert_eq!(
            err("Application/XML; charset=utf-8", b"<a/>"),
            DecodeError::Unsupported("application/xml".into())
        );
        assert_eq!(
            err("not a type", b"{}"),
            DecodeError::Unsupported("not a type".into())
        );
        assert_eq!(
            decode(None, b"{}", &limits()).unwrap_err(),
            DecodeError::MissingContentType
        );
    }

    #[test]
    fn unknown_charsets_are_unsupported() {
        assert_eq!(
            err("application/json; charset=klingon", b"{}"),
            DecodeError::Unsupported("application/json; charset=klingon".into())
        );
        // The WHATWG "replacement" encoding would turn every body into U+FFFD.
        assert!(matches!(
            err("application/json; charset=iso-2022-kr", b"{}"),
            DecodeError::Unsupported(_)
        ));
    }

    #[test]
    fn empty_and_blank_bodies_are_malformed() {
        for body in [&b""[..], b"   \r\n\t", b"\xEF\xBB\xBF "] {
            assert_eq!(malformed("application/json", body), "empty body");
            assert_eq!(malformed(FORM, body), "empty body");
        }
        let blank16: Vec<u8> = "  ".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(
            malformed("application/json; charset=utf-16le", &blank16),
            "empty body"
        );
    }

    #[test]
    fn json_deeper_than_the_limit_is_refused() {
        let strict = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let fine = decode(Some("application/json"), br#"{"a":[{"b":1}]}"#, &strict);
        assert!(fine.is_ok());
        let e = decode(Some("application/json"), br#"{"a":[{"b":[]}]}"#, &strict).unwrap_err();
        assert_eq!(
            e,
            DecodeError::malformed("JSON nested deeper than 3 levels")
        );

        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            malformed("application/json", deep.as_bytes()),
            "JSON nested deeper than 64 levels"
        );
        let very_deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let m = malformed("application/json", very_deep.as_bytes());
        assert!(m.contains("recursion limit exceeded"), "{m}");
    }

    #[test]
    fn depth_walk_counts_containers_only() {
        assert!(!nested_deeper_than(&json!("x"), 0));
        assert!(nested_deeper_than(&json!({}), 0));
        assert!(!nested_deeper_than(&json!({"a": [1, 2]}), 2));
        assert!(nested_deeper_than(&json!({"a": [1, [2]]}), 2));
    }

    #[test]
    fn multipart_without_boundary_is_malformed() {
        assert_eq!(
            malformed("multipart/form-data", b"--x\r\n"),
            "multipart/form-data without a boundary"
        );
        assert_eq!(
            malformed("multipart/form-data; boundary=", b"--x\r\n"),
            "multipart/form-data without a boundary"
        );
        assert_eq!(
            malformed("Multipart/Form-Data; boundary=\"\"", b"--x\r\n"),
            "invalid multipart/form-data parameters in Content-Type"
        );
    }

    #[test]
    fn long_unparseable_content_types_are_cut_in_the_error() {
        let ct = format!("x{}", " y".repeat(200));
        match err(&ct, b"{}") {
            DecodeError::Unsupported(t) => {
                assert!(t.len() <= MAX_QUOTED_TYPE + 3);
                assert!(t.ends_with("..."));
            }
            other => panic!("{other:?}"),
        }
    }
}
