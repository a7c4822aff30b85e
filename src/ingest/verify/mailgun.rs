//! Mailgun: the signature travels in the BODY, not a header: `signature.{timestamp, token,
//! signature}` in JSON webhooks, or top-level `timestamp`, `token`, `signature` fields in
//! urlencoded inbound-route posts. `signature` = hex HMAC-SHA256(webhook signing key,
//! timestamp + token); the body itself is not signed. Research §1 and §3 "Mailgun";
//! documentation.mailgun.com ".../webhooks/securing-webhooks".
//!
//! Replays: the timestamp must be within the window, and `Verified.event_id` is the token, which
//! the store dedupes on, so a replayed token is answered as a duplicate and never stored twice.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::ingest::decode::{self, BodyKind};

use super::{
    check_unix_secs, form_pairs, mac, mac_matches, tolerance, unix_secs, HmacSha256, Inbound,
    OptionError, Outbound, SchemeOptions, Secret, SignError, Verified, Verifier, VerifyError,
    DEFAULT_TOLERANCE,
};

#[derive(Debug)]
pub struct Mailgun {
    tolerance: Duration,
    secrets: Vec<Secret>,
}

impl Mailgun {
    pub fn from_options(o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        Ok(Self {
            tolerance: tolerance(o, DEFAULT_TOLERANCE),
            secrets,
        })
    }
}

/// The three signed fields, wherever they were found.
struct Fields {
    timestamp: String,
    token: String,
    signature: String,
}

/// Only the `signature` object is read; the rest of the body is skipped unparsed.
#[derive(Deserialize)]
struct JsonBody {
    signature: Option<JsonSignature>,
}

#[derive(Deserialize)]
struct JsonSignature {
    /// Mailgun sends a string; a number is accepted too and signed as its decimal text.
    timestamp: Option<serde_json::Value>,
    token: Option<String>,
    signature: Option<String>,
}

fn required(v: Option<String>, name: &str) -> Result<String, VerifyError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(VerifyError::MissingHeader(name.to_string())),
    }
}

fn json_fields(body: &[u8]) -> Result<Fields, VerifyError> {
    let parsed: JsonBody = serde_json::from_slice(body)
        .map_err(|_| VerifyError::Malformed("body".into(), "not a Mailgun JSON body"))?;
    let sig = parsed
        .signature
        .ok_or_else(|| VerifyError::MissingHeader("signature".into()))?;
    let timestamp = match sig.timestamp {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) if n.is_i64() => Some(n.to_string()),
        Some(_) => {
            return Err(VerifyError::Malformed(
                "timestamp".into(),
                "not a Unix timestamp",
            ))
        }
        None => None,
    };
    Ok(Fields {
        timestamp: required(timestamp, "signature.timestamp")?,
        token: required(sig.token, "signature.token")?,
        signature: required(sig.signature, "signature.signature")?,
    })
}

fn form_fields(body: &[u8]) -> Result<Fields, VerifyError> {
    let pairs = form_pairs(body)
        .ok_or_else(|| VerifyError::Malformed("body".into(), "form fields are not UTF-8"))?;
    let get = |name: &str| {
        let v = pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        required(v, name)
    };
    Ok(Fields {
        timestamp: get("timestamp")?,
        token: get("token")?,
        signature: get("signature")?,
    })
}

const MULTIPART_REFUSED: &str = "multipart Mailgun posts are not supported; use JSON or urlencoded";

/// Mailgun posts JSON or urlencoded forms; its multipart form (with attachments) is refused.
fn is_multipart(content_type: &str) -> bool {
    content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
}

fn is_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

impl Verifier for Mailgun {
    fn scheme(&self) -> &str {
        "mailgun"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        if req.header("content-type").is_some_and(is_multipart) {
            return Err(VerifyError::Malformed(
                "content-type".into(),
                MULTIPART_REFUSED,
            ));
        }
        // A urlencoded body cannot start with `{` unless a field name does, which Mailgun's never do.
        let f = if is_json(req.body) {
            json_fields(req.body)?
        } else {
            form_fields(req.body)?
        };
        let tag = hex::decode(f.signature.trim())
            .map_err(|_| VerifyError::Malformed("signature".into(), "not hex"))?;
        check_unix_secs("timestamp", &f.timestamp, req.now_secs(), self.tolerance)?;
        let parts: [&[u8]; 2] = [f.timestamp.as_bytes(), f.token.as_bytes()];
        if self
            .secrets
            .iter()
            .any(|s| mac_matches::<HmacSha256>(s.bytes(), &parts, &tag))
        {
            Ok(Verified {
                event_id: Some(f.token),
            })
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        let timestamp = unix_secs(req.now).to_string();
        // Mailgun tokens are 50 random characters; a fresh one per delivery, as Mailgun does.
        let token: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(50)
            .map(char::from)
            .collect();
        let signature = hex::encode(mac::<HmacSha256>(
            secret.bytes(),
            &[timestamp.as_bytes(), token.as_bytes()],
        ));
        // Refused as `verify` refuses it; otherwise shaped as the decoder will read the type.
        if is_multipart(&req.content_type) {
            return Err(SignError::Unsupported(MULTIPART_REFUSED));
        }
        let kind = decode::kind_of(&req.content_type).ok();
        if kind == Some(BodyKind::Json) {
            let mut body: serde_json::Value = serde_json::from_slice(&req.body)
                .map_err(|e| SignError::Invalid(format!("the body is not JSON: {e}")))?;
            let obj = body
                .as_object_mut()
                .ok_or_else(|| SignError::Invalid("the JSON body must be an object".into()))?;
            obj.insert(
                "signature".into(),
                serde_json::json!({"timestamp": timestamp, "token": token, "signature": signature}),
            );
            req.body = serde_json::to_vec(&body).map_err(|e| SignError::Invalid(e.to_string()))?;
        } else if kind == Some(BodyKind::Form) {
            let pairs = form_pairs(&req.body)
                .ok_or_else(|| SignError::Invalid("form fields are not UTF-8".into()))?;
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(
                pairs
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "timestamp" | "token" | "signature")),
            );
            ser.append_pair("timestamp", &timestamp)
                .append_pair("token", &token)
                .append_pair("signature", &signature);
            req.body = ser.finish().into_bytes();
        } else {
            return Err(SignError::Unsupported(
                "Mailgun bodies are signed as JSON or urlencoded forms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // Computed with Python `hmac` (Mailgun publishes no vector, research §2.8):
    // hex HMAC-SHA256(b"key-mailgun-signing", b"1700000000" + b"a" * 50).
    const KEY: &str = "key-mailgun-signing";
    const TS: i64 = 1700000000;
    const SIG: &str = "8cf00fa68fdc0bc5edce15f0d4a6fe30cc6d72744e0ecf92dce31913e490537f";

    fn token() -> String {
        "a".repeat(50)
    }

    fn json_body(ts: &str, token: &str, sig: &str) -> String {
        format!(
            r#"{{"signature":{{"timestamp":{ts},"token":"{token}","signature":"{sig}"}},"event-data":{{"event":"delivered","recipient":"lead@example.com"}}}}"#
        )
    }

    fn form_body(ts: &str, token: &str, sig: &str) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("sender", "lead@example.com")
            .append_pair("subject", "Hello")
            .append_pair("timestamp", ts)
            .append_pair("token", token)
            .append_pair("signature", sig)
            .finish()
    }

    fn mailgun(secrets_: &[&str]) -> Mailgun {
        Mailgun::from_options(&SchemeOptions::default(), secrets(secrets_)).expect("valid options")
    }

    fn check(m: &Mailgun, body: &str, now: i64) -> Result<Verified, VerifyError> {
        let h = headers(&[]);
        m.verify(&inbound(
            "https://x/webhooks/mailgun",
            "",
            &h,
            body.as_bytes(),
            at(now),
        ))
    }

    fn ok() -> Result<Verified, VerifyError> {
        Ok(Verified {
            event_id: Some(token()),
        })
    }

    #[test]
    fn a_json_webhook_verifies_and_yields_the_token_as_event_id() {
        let m = mailgun(&[KEY]);
        // Mailgun sends the timestamp as a string; a bare number is accepted too.
        assert_eq!(
            check(&m, &json_body(&format!("\"{TS}\""), &token(), SIG), TS),
            ok()
        );
        assert_eq!(
            check(&m, &json_body(&TS.to_string(), &token(), SIG), TS),
            ok()
        );
    }

    #[test]
    fn an_urlencoded_inbound_route_post_verifies() {
        let m = mailgun(&[KEY]);
        assert_eq!(
            check(&m, &form_body(&TS.to_string(), &token(), SIG), TS + 5),
            ok()
        );
    }

    #[test]
    fn a_wrong_key_fails() {
        let m = mailgun(&["other"]);
        let ts = format!("\"{TS}\"");
        assert_eq!(
            check(&m, &json_body(&ts, &token(), SIG), TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_token_or_timestamp_fails() {
        let m = mailgun(&[KEY]);
        let ts = format!("\"{TS}\"");
        let other_token = format!("b{}", "a".repeat(49));
        assert_eq!(
            check(&m, &json_body(&ts, &other_token, SIG), TS),
            Err(VerifyError::Mismatch)
        );
        let ts1 = format!("\"{}\"", TS + 1);
        assert_eq!(
            check(&m, &json_body(&ts1, &token(), SIG), TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn the_rest_of_the_body_is_not_signed() {
        // Mailgun's scheme does not cover event-data: documented, and why the token dedupe matters.
        let m = mailgun(&[KEY]);
        let ts = format!("\"{TS}\"");
        let body = json_body(&ts, &token(), SIG).replace("delivered", "opened");
        assert_eq!(check(&m, &body, TS), ok());
    }

    #[test]
    fn missing_fields_are_named() {
        let m = mailgun(&[KEY]);
        assert_eq!(
            check(&m, r#"{"event-data":{}}"#, TS),
            Err(VerifyError::MissingHeader("signature".into()))
        );
        assert_eq!(
            check(
                &m,
                &format!(r#"{{"signature":{{"timestamp":"{TS}","signature":"{SIG}"}}}}"#),
                TS
            ),
            Err(VerifyError::MissingHeader("signature.token".into()))
        );
        let no_sig = form_urlencoded::Serializer::new(String::new())
            .append_pair("timestamp", &TS.to_string())
            .append_pair("token", &token())
            .finish();
        assert_eq!(
            check(&m, &no_sig, TS),
            Err(VerifyError::MissingHeader("signature".into()))
        );
        assert_eq!(
            check(&m, &form_body(&TS.to_string(), "", SIG), TS),
            Err(VerifyError::MissingHeader("token".into()))
        );
    }

    #[test]
    fn malformed_bodies_and_fields_are_refused() {
        let m = mailgun(&[KEY]);
        let ts = format!("\"{TS}\"");
        assert_eq!(
            check(&m, "{not json", TS),
            Err(VerifyError::Malformed(
                "body".into(),
                "not a Mailgun JSON body"
            ))
        );
        assert_eq!(
            check(&m, &json_body(&ts, &token(), "zz"), TS),
            Err(VerifyError::Malformed("signature".into(), "not hex"))
        );
        assert_eq!(
            check(&m, &json_body("\"soon\"", &token(), SIG), TS),
            Err(VerifyError::Malformed(
                "timestamp".into(),
                "not a Unix timestamp"
            ))
        );
        assert_eq!(
            check(&m, &json_body("1.5", &token(), SIG), TS),
            Err(VerifyError::Malformed(
                "timestamp".into(),
                "not a Unix timestamp"
            ))
        );
        assert_eq!(
            check(&m, "token=%FF", TS),
            Err(VerifyError::Malformed(
                "body".into(),
                "form fields are not UTF-8"
            ))
        );
        let h = headers(&[("Content-Type", "multipart/form-data; boundary=x")]);
        let body = form_body(&TS.to_string(), &token(), SIG);
        assert!(matches!(
            m.verify(&inbound("https://x", "", &h, body.as_bytes(), at(TS))),
            Err(VerifyError::Malformed(..))
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let m = mailgun(&[KEY]);
        let ts = format!("\"{TS}\"");
        let body = json_body(&ts, &token(), SIG);
        assert_eq!(check(&m, &body, TS + 300), ok());
        assert_eq!(check(&m, &body, TS + 301), Err(VerifyError::Stale(301)));
        assert_eq!(check(&m, &body, TS - 301), Err(VerifyError::Future(301)));
        let o = SchemeOptions {
            tolerance_secs: Some(5),
            ..Default::default()
        };
        let short = Mailgun::from_options(&o, secrets(&[KEY])).unwrap();
        assert_eq!(check(&short, &body, TS + 6), Err(VerifyError::Stale(6)));
    }

    #[test]
    fn a_rotated_second_key_is_accepted() {
        let m = mailgun(&["new", KEY]);
        assert_eq!(
            check(&m, &form_body(&TS.to_string(), &token(), SIG), TS),
            ok()
        );
    }

    #[test]
    fn sign_then_verify_round_trips_for_json_and_forms() {
        let m = mailgun(&["k1", "k2"]);
        // A stale signature object is replaced, and other fields are kept.
        let stale = json_body("\"1\"", "old", "00");
        let mut out = Outbound::new("https://x", "application/json", stale.into_bytes());
        m.sign(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["event-data"]["event"], "delivered");
        let token = v["signature"]["token"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 50);
        let h = headers(&[]);
        let req = inbound("https://x", "", &h, &out.body, out.now);
        assert_eq!(
            m.verify(&req),
            Ok(Verified {
                event_id: Some(token)
            })
        );
        assert_eq!(mailgun(&["k3"]).verify(&req), Err(VerifyError::Mismatch));

        let mut form = Outbound::new(
            "https://x",
            "application/x-www-form-urlencoded",
            b"sender=a%40b.c&token=old".to_vec(),
        );
        m.sign(&mut form).unwrap();
        let pairs = form_pairs(&form.body).unwrap();
        assert_eq!(pairs.iter().filter(|(k, _)| k == "token").count(), 1);
        assert_eq!(pairs[0], ("sender".to_string(), "a@b.c".to_string()));
        let req = inbound("https://x", "", &h, &form.body, form.now);
        assert!(m.verify(&req).is_ok());

        let mut text = Outbound::new("https://x", "text/plain", b"hi".to_vec());
        assert!(matches!(m.sign(&mut text), Err(SignError::Unsupported(_))));
        // Found by fuzzing: a multipart type mentioning urlencoded was signed as a form, which
        // `verify` then refused.
        for ct in [
            "Multipart/form-data; x=application/x-www-form-urlencoded",
            "multipart/related+json",
        ] {
            let mut multipart = Outbound::new("https://x", ct, b"{}".to_vec());
            assert!(
                matches!(m.sign(&mut multipart), Err(SignError::Unsupported(_))),
                "{ct}"
            );
        }
    }
}
