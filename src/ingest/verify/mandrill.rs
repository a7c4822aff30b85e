//! Mailchimp Transactional (Mandrill): `X-Mandrill-Signature` = base64 HMAC-SHA1(webhook key,
//! exact webhook URL + every POST field as `key` + `value`, sorted by key, no separators).
//! Research §1, §2.8 and §3 "Mandrill"; mandrill.zendesk.com "How to Authenticate Webhook
//! Requests". Mailchimp support also mentions `X-Mailchimp-Signature`, so either name is read.

use base64::Engine;

use super::{
    b64, b64_decode_lenient, form_pairs, mac, mac_matches, HmacSha1, Inbound, OptionError,
    Outbound, SchemeOptions, Secret, SignError, Verified, Verifier, VerifyError,
};

const HEADER: &str = "X-Mandrill-Signature";
const ALT_HEADER: &str = "X-Mailchimp-Signature";

#[derive(Debug)]
pub struct Mandrill {
    url_check: bool,
    secrets: Vec<Secret>,
}

impl Mandrill {
    pub fn from_options(o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        Ok(Self {
            // Mandrill checks a new webhook URL with HEAD (reported), so answer it by default.
            url_check: o.url_check.unwrap_or(true),
            secrets,
        })
    }
}

/// The signed pieces: URL, then each field's key and value in key order.
fn signed_parts<'a>(url: &'a str, pairs: &'a mut [(String, String)]) -> Vec<&'a [u8]> {
    // A stable sort keeps repeated keys in the order they were sent.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let pairs: &'a [(String, String)] = pairs;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * pairs.len());
    parts.push(url.as_bytes());
    for (k, v) in pairs {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    parts
}

impl Verifier for Mandrill {
    fn scheme(&self) -> &str {
        "mandrill"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let header = if req.headers.contains_key(HEADER) || !req.headers.contains_key(ALT_HEADER) {
            HEADER
        } else {
            ALT_HEADER
        };
        let tag = b64_decode_lenient(req.require(header)?)
            .ok_or_else(|| VerifyError::Malformed(header.into(), "not base64"))?;
        // Mandrill signs the decoded fields, not the raw body (research §5.2).
        let mut pairs = form_pairs(req.body)
            .ok_or_else(|| VerifyError::Malformed("body".into(), "form fields are not UTF-8"))?;
        let url = req.signed_url();
        let parts = signed_parts(&url, &mut pairs);
        if self
            .secrets
            .iter()
            .any(|s| mac_matches::<HmacSha1>(s.bytes(), &parts, &tag))
        {
            // Events carry their own `_id`s inside a batch; there is no delivery id.
            Ok(Verified::default())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        let mut pairs = form_pairs(&req.body).ok_or_else(|| {
            SignError::Invalid("the body must be urlencoded UTF-8 form fields".into())
        })?;
        let tag = mac::<HmacSha1>(secret.bytes(), &signed_parts(&req.url, &mut pairs));
        req.set_header(HEADER, b64().encode(tag));
        Ok(())
    }

    fn answers_url_check(&self) -> bool {
        self.url_check
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // Research §2.8: a self-computed reference (Mandrill publishes none), re-checked with Python.
    const KEY: &str = "test-key";
    const URL: &str = "https://example.com/webhooks/mandrill";
    const EVENTS: &str =
        r#"[{"event":"send","msg":{"email":"lead@example.com"},"_id":"abc","ts":1700000000}]"#;
    const SIG: &str = "QyUZ2tOncbW+eKwE63weVAoeZuI=";

    fn body(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn mandrill(secrets_: &[&str]) -> Mandrill {
        Mandrill::from_options(&SchemeOptions::default(), secrets(secrets_)).expect("valid options")
    }

    fn check(
        m: &Mandrill,
        url: &str,
        hdrs: &[(&str, &str)],
        body: &str,
    ) -> Result<Verified, VerifyError> {
        let h = headers(hdrs);
        let req = Inbound {
            url_is_exact: true,
            ..inbound(url, "", &h, body.as_bytes(), at(0))
        };
        m.verify(&req)
    }

    #[test]
    fn the_reference_value_verifies() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert!(b.starts_with("mandrill_events=%5B%7B%22event%22"), "{b}");
        assert_eq!(
            check(&mandrill(&[KEY]), URL, &[(HEADER, SIG)], &b),
            Ok(Verified::default())
        );
    }

    #[test]
    fn the_mailchimp_header_name_is_accepted_too() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert!(check(
            &mandrill(&[KEY]),
            URL,
            &[("x-mailchimp-signature", SIG)],
            &b
        )
        .is_ok());
    }

    #[test]
    fn a_different_url_fails() {
        let b = body(&[("mandrill_events", EVENTS)]);
        for url in [
            "https://example.com/webhooks/mandrill/",
            "http://example.com/webhooks/mandrill",
            "https://example.com/webhooks/mandrill?x=1",
        ] {
            assert_eq!(
                check(&mandrill(&[KEY]), url, &[(HEADER, SIG)], &b),
                Err(VerifyError::Mismatch),
                "{url}"
            );
        }
    }

    #[test]
    fn the_request_query_is_part_of_a_derived_url() {
        let m = mandrill(&[KEY]);
        let mut out = Outbound::new(
            format!("{URL}?src=mc"),
            "application/x-www-form-urlencoded",
            body(&[("mandrill_events", EVENTS)]).into_bytes(),
        );
        m.sign(&mut out).unwrap();
        let h = headers_of(&out);
        let req = inbound(URL, "src=mc", &h, &out.body, out.now);
        assert!(m.verify(&req).is_ok());
        let without = inbound(URL, "", &h, &out.body, out.now);
        assert_eq!(m.verify(&without), Err(VerifyError::Mismatch));
    }

    #[test]
    fn field_order_does_not_matter_but_values_do() {
        let m = mandrill(&[KEY]);
        let mut out = Outbound::new(
            URL,
            "application/x-www-form-urlencoded",
            body(&[("b", "2"), ("a", "1"), ("c", "x y")]).into_bytes(),
        );
        m.sign(&mut out).unwrap();
        let sig = out.header(HEADER).unwrap().to_string();
        let reordered = body(&[("c", "x y"), ("a", "1"), ("b", "2")]);
        assert!(check(&m, URL, &[(HEADER, &sig)], &reordered).is_ok());
        // Sorting is by key: swapping values between keys changes the signed string.
        let swapped = body(&[("a", "2"), ("b", "1"), ("c", "x y")]);
        assert_eq!(
            check(&m, URL, &[(HEADER, &sig)], &swapped),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_wrong_key_fails() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert_eq!(
            check(&mandrill(&["other-key"]), URL, &[(HEADER, SIG)], &b),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_body_fails() {
        let b = body(&[("mandrill_events", &EVENTS.replace("abc", "abd"))]);
        assert_eq!(
            check(&mandrill(&[KEY]), URL, &[(HEADER, SIG)], &b),
            Err(VerifyError::Mismatch)
        );
        let extra = format!("{}&x=1", body(&[("mandrill_events", EVENTS)]));
        assert_eq!(
            check(&mandrill(&[KEY]), URL, &[(HEADER, SIG)], &extra),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_missing_header_is_named() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert_eq!(
            check(&mandrill(&[KEY]), URL, &[], &b),
            Err(VerifyError::MissingHeader(HEADER.into()))
        );
    }

    #[test]
    fn a_malformed_header_or_body_is_refused() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert_eq!(
            check(&mandrill(&[KEY]), URL, &[(HEADER, "not base64!")], &b),
            Err(VerifyError::Malformed(HEADER.into(), "not base64"))
        );
        for bad in ["mandrill_events=%FF", "mandrill_%C3=1"] {
            assert_eq!(
                check(&mandrill(&[KEY]), URL, &[(HEADER, SIG)], bad),
                Err(VerifyError::Malformed(
                    "body".into(),
                    "form fields are not UTF-8"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rotated_second_key_is_accepted() {
        let b = body(&[("mandrill_events", EVENTS)]);
        assert!(check(&mandrill(&["new-key", KEY]), URL, &[(HEADER, SIG)], &b).is_ok());
    }

    #[test]
    fn sign_reproduces_the_reference_and_round_trips() {
        let m = mandrill(&[KEY]);
        let b = body(&[("mandrill_events", EVENTS)]);
        let mut out = Outbound::new(URL, "application/x-www-form-urlencoded", b.into_bytes());
        m.sign(&mut out).unwrap();
        assert_eq!(out.header(HEADER), Some(SIG));
        let h = headers_of(&out);
        let req = Inbound {
            url_is_exact: true,
            ..inbound(URL, "", &h, &out.body, out.now)
        };
        assert_eq!(m.verify(&req), Ok(Verified::default()));
        assert_eq!(
            mandrill(&["other-key"]).verify(&req),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn url_checks_are_answered_unless_turned_off() {
        assert!(mandrill(&[KEY]).answers_url_check());
        let o = SchemeOptions {
            url_check: Some(false),
            ..Default::default()
        };
        assert!(!Mandrill::from_options(&o, secrets(&[KEY]))
            .unwrap()
            .answers_url_check());
    }
}
