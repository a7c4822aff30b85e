//! Stripe-style `t=<unix s>,v1=<hex>[,v1=<hex>]` signatures, used by Stripe (`Stripe-Signature`)
//! and Calendly (`Calendly-Webhook-Signature`): hex HMAC-SHA256 over `{t}.{raw body}`, keyed with
//! the secret's UTF-8 bytes. Research §1 and §3 "Stripe-style"; stripe-node `Webhooks.js`,
//! developer.calendly.com "webhook signatures".

use std::time::Duration;

use actix_web::http::header::HeaderName;

use super::presets::CALENDLY_TOLERANCE;
use super::{
    check_unix_secs, header_name, mac, mac_matches, tolerance, unix_secs, HmacSha256, Inbound,
    OptionError, Outbound, SchemeOptions, Secret, SignError, Verified, Verifier, VerifyError,
    DEFAULT_TOLERANCE,
};

#[derive(Debug)]
pub struct StripeScheme {
    /// `stripe` or `calendly`: only the defaults differ.
    name: &'static str,
    header: HeaderName,
    tolerance: Duration,
    secrets: Vec<Secret>,
}

impl StripeScheme {
    pub fn from_options(
        scheme: &str,
        o: &SchemeOptions,
        secrets: Vec<Secret>,
    ) -> Result<Self, OptionError> {
        let (name, default_header, default_tolerance) = match scheme {
            "calendly" => ("calendly", "Calendly-Webhook-Signature", CALENDLY_TOLERANCE),
            "stripe" => ("stripe", "Stripe-Signature", DEFAULT_TOLERANCE),
            other => {
                return Err(OptionError::new(
                    "scheme",
                    format!("{other:?} is not a t=,v1= scheme (stripe, calendly)"),
                ))
            }
        };
        let header = header_name("header", o.header.as_deref().unwrap_or(default_header))?;
        Ok(Self {
            name,
            header,
            tolerance: tolerance(o, default_tolerance),
            secrets,
        })
    }
}

/// The parts of a `t=..,v1=..` header that matter.
struct Parsed<'a> {
    timestamp: &'a str,
    /// Every `v1` value that decodes as hex; during a secret roll the sender lists one per secret.
    signatures: Vec<Vec<u8>>,
}

fn parse<'a>(header: &str, value: &'a str) -> Result<Parsed<'a>, VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut saw_v1 = false;
    for (k, v) in value.split(',').filter_map(|kv| kv.split_once('=')) {
        match k.trim() {
            // The first `t` wins, as in Stripe's libraries.
            "t" if timestamp.is_none() => timestamp = Some(v.trim()),
            "v1" => {
                saw_v1 = true;
                // A value that is not hex cannot match; skip it like any other decoy.
                if let Ok(sig) = hex::decode(v.trim()) {
                    signatures.push(sig);
                }
            }
            // `v0` (Stripe's test-mode scheme) and unknown schemes are ignored on purpose.
            _ => {}
        }
    }
    let timestamp =
        timestamp.ok_or_else(|| VerifyError::Malformed(header.to_string(), "no t= timestamp"))?;
    if !saw_v1 {
        return Err(VerifyError::Malformed(
            header.to_string(),
            "no v1= signature",
        ));
    }
    Ok(Parsed {
        timestamp,
        signatures,
    })
}

impl Verifier for StripeScheme {
    fn scheme(&self) -> &str {
        self.name
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let name = self.header.as_str();
        let parsed = parse(name, req.require(name)?)?;
        check_unix_secs(name, parsed.timestamp, req.now_secs(), self.tolerance)?;
        let parts: [&[u8]; 3] = [parsed.timestamp.as_bytes(), b".", req.body];
        let ok = self.secrets.iter().any(|s| {
            parsed
                .signatures
                .iter()
                .any(|sig| mac_matches::<HmacSha256>(s.bytes(), &parts, sig))
        });
        if ok {
            // The event id lives in the body (`default_event_id_path`).
            Ok(Verified::default())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        let t = unix_secs(req.now).to_string();
        let tag = mac::<HmacSha256>(secret.bytes(), &[t.as_bytes(), b".", &req.body]);
        req.set_header(
            self.header.as_str(),
            format!("t={t},v1={}", hex::encode(tag)),
        );
        Ok(())
    }

    fn default_event_id_path(&self) -> Option<&'static str> {
        match self.name {
            // The invitee URI is unique per booking; a reschedule makes a new invitee.
            "calendly" => Some("$.payload.uri"),
            _ => Some("$.id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // Computed independently with Python `hmac` (hex HMAC-SHA256 of `1700000000.` + body, keyed
    // with the literal `whsec_...` string); neither provider publishes a vector (research §2.8).
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_BODY: &str = r#"{"id":"evt_test_webhook","object":"event"}"#;
    const STRIPE_SIG: &str = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
    const CALENDLY_SECRET: &str = "calendly-signing-key";
    const CALENDLY_BODY: &str = r#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/scheduled_events/E/invitees/I"}}"#;
    const CALENDLY_SIG: &str = "c97f3ebb8dee9e1677cef670f5d85fb92eac302685fa8682b29a7f72b28c635b";
    const T: i64 = 1700000000;

    fn scheme(name: &str, secrets_: &[&str]) -> StripeScheme {
        StripeScheme::from_options(name, &SchemeOptions::default(), secrets(secrets_))
            .expect("valid options")
    }

    fn check(
        s: &StripeScheme,
        header: &str,
        value: &str,
        body: &str,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let h = headers(&[(header, value)]);
        s.verify(&inbound(
            "https://x/webhooks/s",
            "",
            &h,
            body.as_bytes(),
            at(now),
        ))
    }

    fn stripe_header() -> String {
        format!("t={T},v1={STRIPE_SIG}")
    }

    #[test]
    fn a_valid_stripe_signature_verifies_with_the_literal_whsec_secret() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        assert_eq!(
            check(&s, "Stripe-Signature", &stripe_header(), STRIPE_BODY, T + 5),
            Ok(Verified::default())
        );
    }

    #[test]
    fn the_secret_is_not_base64_decoded() {
        // A Standard-Webhooks style reading (decode after `whsec_`) gives another key.
        let s = scheme("stripe", &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let mut out = Outbound::new("https://x", "application/json", b"{}".to_vec());
        s.sign(&mut out).unwrap();
        let header = out.header("Stripe-Signature").unwrap().to_string();
        let sig = header.split_once("v1=").unwrap().1;
        let t = unix_secs(out.now).to_string();
        let literal = mac::<HmacSha256>(
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &[t.as_bytes(), b".", b"{}"],
        );
        assert_eq!(sig, hex::encode(literal));
    }

    #[test]
    fn a_valid_calendly_signature_verifies_under_its_own_header() {
        let s = scheme("calendly", &[CALENDLY_SECRET]);
        let v = format!("t={T},v1={CALENDLY_SIG}");
        assert_eq!(
            check(&s, "calendly-webhook-signature", &v, CALENDLY_BODY, T),
            Ok(Verified::default())
        );
        assert_eq!(s.scheme(), "calendly");
        assert_eq!(s.default_event_id_path(), Some("$.payload.uri"));
        assert_eq!(
            scheme("stripe", &["k"]).default_event_id_path(),
            Some("$.id")
        );
    }

    #[test]
    fn a_wrong_secret_fails() {
        let s = scheme("stripe", &["whsec_other"]);
        assert_eq!(
            check(&s, "Stripe-Signature", &stripe_header(), STRIPE_BODY, T),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_body_fails() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        let body = STRIPE_BODY.replace("evt_test", "evt_fake");
        assert_eq!(
            check(&s, "Stripe-Signature", &stripe_header(), &body, T),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_missing_header_is_named() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        let h = headers(&[]);
        let req = inbound("https://x", "", &h, STRIPE_BODY.as_bytes(), at(T));
        assert_eq!(
            s.verify(&req),
            Err(VerifyError::MissingHeader("stripe-signature".into()))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        let no_t = format!("v1={STRIPE_SIG}");
        let no_v1 = format!("t={T},v0={STRIPE_SIG}");
        let bad_t = format!("t=yesterday,v1={STRIPE_SIG}");
        for (value, why) in [
            (no_t.as_str(), "no t= timestamp"),
            (no_v1.as_str(), "no v1= signature"),
            ("garbage", "no t= timestamp"),
            (bad_t.as_str(), "not a Unix timestamp"),
        ] {
            assert_eq!(
                check(&s, "Stripe-Signature", value, STRIPE_BODY, T),
                Err(VerifyError::Malformed("stripe-signature".into(), why)),
                "{value}"
            );
        }
        // A v1 that is not hex is skipped like a decoy, so the request simply does not match.
        assert_eq!(
            check(
                &s,
                "Stripe-Signature",
                &format!("t={T},v1=zz"),
                STRIPE_BODY,
                T
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn any_v1_matches_and_v0_and_unknown_schemes_are_ignored() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        let decoy = "0".repeat(64);
        let v = format!("t={T}, v0={STRIPE_SIG}, v1={decoy}, v2=abc, v1={STRIPE_SIG}");
        assert!(check(&s, "Stripe-Signature", &v, STRIPE_BODY, T).is_ok());
        // The real signature only as v0 does not count.
        let v0_only = format!("t={T},v1={decoy},v0={STRIPE_SIG}");
        assert_eq!(
            check(&s, "Stripe-Signature", &v0_only, STRIPE_BODY, T),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused_with_each_providers_window() {
        let s = scheme("stripe", &[STRIPE_SECRET]);
        assert!(check(
            &s,
            "Stripe-Signature",
            &stripe_header(),
            STRIPE_BODY,
            T + 300
        )
        .is_ok());
        assert_eq!(
            check(
                &s,
                "Stripe-Signature",
                &stripe_header(),
                STRIPE_BODY,
                T + 301
            ),
            Err(VerifyError::Stale(301))
        );
        assert_eq!(
            check(
                &s,
                "Stripe-Signature",
                &stripe_header(),
                STRIPE_BODY,
                T - 301
            ),
            Err(VerifyError::Future(301))
        );

        let c = scheme("calendly", &[CALENDLY_SECRET]);
        let v = format!("t={T},v1={CALENDLY_SIG}");
        assert!(check(&c, "Calendly-Webhook-Signature", &v, CALENDLY_BODY, T + 180).is_ok());
        assert_eq!(
            check(&c, "Calendly-Webhook-Signature", &v, CALENDLY_BODY, T + 181),
            Err(VerifyError::Stale(181))
        );
        assert_eq!(
            check(&c, "Calendly-Webhook-Signature", &v, CALENDLY_BODY, T - 181),
            Err(VerifyError::Future(181))
        );
    }

    #[test]
    fn tolerance_and_header_can_be_overridden() {
        let o = SchemeOptions {
            header: Some("X-Sig".into()),
            tolerance_secs: Some(10),
            ..Default::default()
        };
        let s = StripeScheme::from_options("stripe", &o, secrets(&[STRIPE_SECRET])).unwrap();
        assert_eq!(
            check(&s, "X-Sig", &stripe_header(), STRIPE_BODY, T + 11),
            Err(VerifyError::Stale(11))
        );
        assert!(check(&s, "X-Sig", &stripe_header(), STRIPE_BODY, T + 10).is_ok());

        let bad = SchemeOptions {
            header: Some("bad header".into()),
            ..Default::default()
        };
        let e = StripeScheme::from_options("stripe", &bad, secrets(&["k"])).unwrap_err();
        assert_eq!(e.key, "header");
    }

    #[test]
    fn a_rotated_second_secret_is_accepted() {
        let s = scheme("stripe", &["whsec_new", STRIPE_SECRET]);
        assert!(check(&s, "Stripe-Signature", &stripe_header(), STRIPE_BODY, T).is_ok());
    }

    #[test]
    fn sign_then_verify_round_trips_for_both_providers() {
        for name in ["stripe", "calendly"] {
            let s = scheme(name, &["k1", "k2"]);
            let mut out = Outbound::new("https://x/webhooks/s", "application/json", b"{}".to_vec());
            s.sign(&mut out).unwrap();
            let h = headers_of(&out);
            let req = inbound("https://x/webhooks/s", "", &h, &out.body, out.now);
            assert_eq!(s.verify(&req), Ok(Verified::default()), "{name}");
            let other = scheme(name, &["k3"]);
            assert_eq!(other.verify(&req), Err(VerifyError::Mismatch), "{name}");
        }
    }
}
