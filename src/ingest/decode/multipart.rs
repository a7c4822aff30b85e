//! `multipart/form-data` bodies, parsed with `multer` from memory.
//!
//! - Text parts become strings under their field name, with the same bracket-name rules as
//!   urlencoded forms (see `form.rs`; both insert through one [`Tree`]).
//! - File parts (those with a `filename`) become `{"filename", "content_type", "size"}`; their
//!   bytes are not kept in the JSON.
//! - A text part's charset is its own `Content-Type` charset if it has one, else the value of a
//!   `_charset_` field (HTML's convention, wherever it appears in the body), else the request's
//!   charset. Decoding is strict, as everywhere.
//! - A part without a usable name (none, or one multer cannot read as UTF-8) is counted against
//!   the field limit and otherwise skipped: no form semantics can address it.
//! - A body that does not match its boundary, or is cut short, is `Malformed`.
//!
//! The whole body is already in memory, so the parser's futures never wait; they are driven with
//! `now_or_never`, keeping [`super::decode`] synchronous. Should one ever pend, that is reported
//! as `Malformed` rather than blocking.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use encoding_rs::Encoding;
use futures_util::FutureExt;
use serde_json::{json, Value};

use super::form::{text, Tree};
use super::{encoding_for, DecodeError, Limits};

/// The field whose value names the charset of the other text fields.
const CHARSET_FIELD: &str = "_charset_";

enum Content {
    Text {
        bytes: Bytes,
        /// The part's own `charset`, if its `Content-Type` gave one.
        charset: Option<String>,
    },
    File {
        filename: String,
        content_type: Option<String>,
        size: u64,
    },
}

struct Part {
    name: String,
    content: Content,
}

pub(super) fn decode(
    body: &[u8],
    boundary: &str,
    request_charset: &'static Encoding,
    limits: &Limits,
) -> Result<Value, DecodeError> {
    let mut tree = Tree::new(limits);
    let parts = read_parts(body, boundary, &mut tree)?;

    let form_charset = match parts.iter().find_map(|p| match &p.content {
        Content::Text { bytes, .. } if p.name == CHARSET_FIELD => Some(bytes),
        _ => None,
    }) {
        Some(label) => charset_named(label)?,
        None => request_charset,
    };

    for (i, part) in parts.into_iter().enumerate() {
        let value = match part.content {
            Content::Text { bytes, charset } => {
                let charset = match charset {
                    Some(label) => charset_named(label.as_bytes())?,
                    None => form_charset,
                };
                let text = text(Vec::from(bytes).into(), charset).ok_or_else(|| {
                    DecodeError::Malformed(format!(
                        "multipart field {} is not valid {}",
                        i + 1,
                        charset.name()
                    ))
                })?;
                Value::String(text)
            }
            Content::File {
                filename,
                content_type,
                size,
            } => json!({"filename": filename, "content_type": content_type, "size": size}),
        };
        tree.insert(&part.name, value)?;
    }
    Ok(tree.finish())
}

/// The named parts in order; nameless ones are counted and dropped.
fn read_parts(body: &[u8], boundary: &str, tree: &mut Tree<'_>) -> Result<Vec<Part>, DecodeError> {
    let stream = futures_util::stream::once(futures_util::future::ready(Ok::<_, Infallible>(
        Bytes::copy_from_slice(body),
    )));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    loop {
        let mut field = match ready(multipart.next_field())? {
            Some(field) => field,
            None => break,
        };
        tree.count_field()?;
        let name = field.name().map(str::to_owned);
        let file_name = field.file_name().map(str::to_owned);
        let part_type = field.content_type().cloned();

        let content = match file_name {
            Some(filename) => {
                let mut size = 0u64;
                while let Some(chunk) = ready(field.chunk())? {
                    size += chunk.len() as u64;
                }
                Content::File {
                    filename,
                    content_type: part_type.map(|m| m.to_string()),
                    size,
                }
            }
            None => Content::Text {
                bytes: read_all(&mut field)?,
                charset: part_type
                    .as_ref()
                    .and_then(|m| m.get_param(mime::CHARSET))
                    .map(|c| c.as_str().to_owned()),
            },
        };
        if let Some(name) = name {
            parts.push(Part { name, content });
        }
    }
    Ok(parts)
}

/// The rest of a part's data; from an in-memory body that is normally one chunk, kept as is.
fn read_all(field: &mut multer::Field<'_>) -> Result<Bytes, DecodeError> {
    let Some(first) = ready(field.chunk())? else {
        return Ok(Bytes::new());
    };
    let Some(second) = ready(field.chunk())? else {
        return Ok(first);
    };
    let mut all = BytesMut::from(&first[..]);
    all.extend_from_slice(&second);
    while let Some(more) = ready(field.chunk())? {
        all.extend_from_slice(&more);
    }
    Ok(all.freeze())
}

/// Runs a multer future that cannot wait (all input is in memory) to its result.
fn ready<T>(
    future: impl std::future::Future<Output = multer::Result<T>>,
) -> Result<T, DecodeError> {
    match future.now_or_never() {
        Some(result) => result.map_err(|e| multipart_error(&e)),
        None => Err(DecodeError::malformed(
            "multipart body could not be read to its end",
        )),
    }
}

/// A fixed message per kind of failure; multer's own messages can quote field names.
fn multipart_error(e: &multer::Error) -> DecodeError {
    use multer::Error as E;
    DecodeError::malformed(match e {
        E::IncompleteStream | E::IncompleteFieldData { .. } => {
            "multipart body is truncated or does not match its boundary"
        }
        E::IncompleteHeaders | E::ReadHeaderFailed(_) => "multipart part headers are invalid",
        E::DecodeHeaderName { .. } | E::DecodeHeaderValue { .. } => {
            "multipart part headers are invalid"
        }
        _ => "multipart body is invalid",
    })
}

/// The encoding a part or the `_charset_` field names. The label comes from the body, so an
/// unknown one is not quoted back: it could be any of the sender's data (an email address).
fn charset_named(label: &[u8]) -> Result<&'static Encoding, DecodeError> {
    std::str::from_utf8(label)
        .ok()
        .and_then(|l| encoding_for(l.trim()))
        .ok_or_else(|| DecodeError::Unsupported(UNKNOWN_PART_CHARSET.into()))
}

/// What an unknown charset named inside a multipart body is reported as.
const UNKNOWN_PART_CHARSET: &str = "multipart/form-data; charset=<unknown, named in the body>";

#[cfg(test)]
mod tests {
    use super::super::{decode as decode_body, BodyKind};
    use super::*;

    const B: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

    fn ct() -> String {
        format!("multipart/form-data; boundary={B}")
    }

    /// A multipart body from `(headers after Content-Disposition, name, value)` parts.
    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (disposition, value) in parts {
            out.extend_from_slice(
                format!("--{B}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out
    }

    fn ok(ct: &str, body: &[u8]) -> Value {
        let d = decode_body(Some(ct), body, &Limits::default()).expect("decodes");
        assert_eq!(d.kind, BodyKind::Multipart);
        d.value
    }

    fn malformed(ct: &str, body: &[u8]) -> String {
        match decode_body(Some(ct), body, &Limits::default()) {
            Err(DecodeError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn jotform_submission_parses_raw_request_in_place() {
        let raw = r#"{"slug":"submit/241234567890123","q3_name":{"first":"Kin","last":"Lee"},"q4_email":"kin@example.com","q5_company":"Acme GmbH"}"#;
        let b = body(&[
            ("name=\"formID\"", b"241234567890123"),
            ("name=\"submissionID\"", b"5912345678901234567"),
            ("name=\"formTitle\"", b"Contact Sales"),
            ("name=\"ip\"", b"203.0.113.7"),
            ("name=\"type\"", b"WEB"),
            (
                "name=\"pretty\"",
                b"Name:Kin Lee, E-mail:kin@example.com, Company:Acme GmbH",
            ),
            ("name=\"rawRequest\"", raw.as_bytes()),
        ]);
        assert_eq!(
            ok(&ct(), &b),
            json!({
                "formID": "241234567890123",
                "submissionID": "5912345678901234567",
                "formTitle": "Contact Sales",
                "ip": "203.0.113.7",
                "type": "WEB",
                "pretty": "Name:Kin Lee, E-mail:kin@example.com, Company:Acme GmbH",
                "rawRequest": {
                    "slug": "submit/241234567890123",
                    "q3_name": {"first": "Kin", "last": "Lee"},
                    "q4_email": "kin@example.com",
                    "q5_company": "Acme GmbH"
                }
            })
        );
    }

    #[test]
    fn file_parts_become_metadata_and_bracket_names_nest() {
        let b = body(&[
            ("name=\"contact[email]\"", b"kin@example.com"),
            ("name=\"contact[tags][]\"", b"webinar"),
            ("name=\"contact[tags][]\"", b"trial"),
            (
                "name=\"attachment\"; filename=\"brief.pdf\"\r\nContent-Type: application/pdf",
                b"%PDF-1.4 \x00\x01\x02 binary",
            ),
            (
                "name=\"empty\"; filename=\"\"\r\nContent-Type: application/octet-stream",
                b"",
            ),
        ]);
        assert_eq!(
            ok(&ct(), &b),
            json!({
                "contact": {"email": "kin@example.com", "tags": ["webinar", "trial"]},
                "attachment": {"filename": "brief.pdf", "content_type": "application/pdf", "size": 19},
                "empty": {"filename": "", "content_type": "application/octet-stream", "size": 0}
            })
        );
    }

    #[test]
    fn charset_field_applies_to_all_text_parts_wherever_it_is() {
        let b = body(&[
            ("name=\"name\"", b"Ren\xE9"),
            (
                "name=\"city\"\r\nContent-Type: text/plain; charset=utf-8",
                "Köln".as_bytes(),
            ),
            ("name=\"_charset_\"", b"iso-8859-1"),
        ]);
        assert_eq!(
            ok(&ct(), &b),
            json!({"name": "René", "city": "Köln", "_charset_": "iso-8859-1"})
        );
    }

    #[test]
    fn request_charset_applies_and_invalid_text_is_malformed() {
        let b = body(&[("name=\"name\"", b"Ren\xE9")]);
        assert_eq!(
            ok(&format!("{}; charset=windows-1252", ct()), &b),
            json!({"name": "René"})
        );
        assert_eq!(malformed(&ct(), &b), "multipart field 1 is not valid UTF-8");
    }

    #[test]
    fn unknown_part_charset_is_unsupported_and_not_quoted() {
        for b in [
            body(&[("name=\"_charset_\"", b"klingon"), ("name=\"a\"", b"x")]),
            body(&[(
                "name=\"a\"\r\nContent-Type: text/plain; charset=klingon",
                b"x",
            )]),
        ] {
            let e = decode_body(Some(&ct()), &b, &Limits::default()).unwrap_err();
            assert_eq!(e, DecodeError::Unsupported(UNKNOWN_PART_CHARSET.into()));
            assert!(!e.to_string().contains("klingon"), "{e}");
        }
    }

    #[test]
    fn truncated_multipart_is_malformed() {
        let b = body(&[
            ("name=\"formID\"", b"1"),
            ("name=\"rawRequest\"", b"{\"q4_email\":\"kin@example.com\"}"),
        ]);
        let cut = &b[..b.len() - 30];
        assert_eq!(
            malformed(&ct(), cut),
            "multipart body is truncated or does not match its boundary"
        );
        let m = malformed(&ct(), &b[..b.len() / 2]);
        assert!(!m.contains("rawRequest") && !m.contains("kin@"), "{m}");
    }

    #[test]
    fn a_body_with_another_boundary_is_malformed() {
        let b = body(&[("name=\"a\"", b"1")]);
        assert_eq!(
            malformed("multipart/form-data; boundary=something-else", &b),
            "multipart body is truncated or does not match its boundary"
        );
        assert_eq!(
            malformed(&ct(), b"just some text, no parts at all"),
            "multipart body is truncated or does not match its boundary"
        );
    }

    #[test]
    fn quoted_boundaries_and_preamble_are_accepted() {
        let mut b = b"This is a preamble.\r\n".to_vec();
        b.extend(body(&[("name=\"a\"", b"1")]));
        assert_eq!(
            ok(&format!("multipart/form-data; boundary=\"{B}\""), &b),
            json!({"a": "1"})
        );
    }

    #[test]
    fn field_limit_counts_every_part() {
        let limits = Limits {
            max_fields: 2,
            ..Limits::default()
        };
        let two = body(&[
            ("name=\"a\"", b"1"),
            ("name=\"f\"; filename=\"x.txt\"", b"x"),
        ]);
        assert!(decode_body(Some(&ct()), &two, &limits).is_ok());
        let three = body(&[
            ("name=\"a\"", b"1"),
            ("filename=\"nameless.txt\"", b"x"),
            ("name=\"b\"", b"2"),
        ]);
        assert_eq!(
            decode_body(Some(&ct()), &three, &limits).unwrap_err(),
            DecodeError::malformed("too many fields")
        );
    }

    #[test]
    fn nameless_parts_are_skipped() {
        let b = body(&[("filename=\"orphan.txt\"", b"x"), ("name=\"a\"", b"1")]);
        assert_eq!(ok(&ct(), &b), json!({"a": "1"}));
    }

    #[test]
    fn mailgun_inbound_multipart_fields_stay_top_level() {
        let b = body(&[
            ("name=\"recipient\"", b"leads@example.com"),
            ("name=\"sender\"", b"kin@example.com"),
            ("name=\"subject\"", b"Pricing question"),
            ("name=\"body-plain\"", b"Hi,\r\nWe are 50 people.\r\n"),
            ("name=\"timestamp\"", b"1700000000"),
            ("name=\"token\"", b"abc"),
            ("name=\"signature\"", b"def"),
        ]);
        assert_eq!(
            ok(&ct(), &b),
            json!({
                "recipient": "leads@example.com",
                "sender": "kin@example.com",
                "subject": "Pricing question",
                "body-plain": "Hi,\r\nWe are 50 people.\r\n",
                "timestamp": "1700000000",
                "token": "abc",
                "signature": "def"
            })
        );
    }
}
