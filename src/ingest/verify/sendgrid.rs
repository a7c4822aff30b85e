//! SendGrid Event Webhook: ECDSA P-256 / SHA-256 over `{timestamp}{raw body}`, the signature in
//! `X-Twilio-Email-Event-Webhook-Signature` (base64 DER) and the timestamp in
//! `X-Twilio-Email-Event-Webhook-Timestamp`; verified with the public key from the dashboard
//! (base64 DER SubjectPublicKeyInfo, or PEM). No secret is involved. Research §2.2 and §3
//! "SendGrid"; `sendgrid/sendgrid-nodejs` `packages/eventwebhook/src/eventwebhook.js`.
//!
//! SendGrid's library does not check the timestamp's age; this scheme does (±300 s by default),
//! since the timestamp is signed and replays are otherwise unbounded.

use std::time::Duration;

use base64::Engine;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::{
    b64, b64_decode_lenient, check_unix_secs, tolerance, unix_secs, Inbound, OptionError, Outbound,
    SchemeOptions, Secret, SignError, Verified, Verifier, VerifyError, DEFAULT_TOLERANCE,
};

const SIGNATURE: &str = "X-Twilio-Email-Event-Webhook-Signature";
const TIMESTAMP: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

#[derive(Debug)]
pub struct SendGrid {
    key: VerifyingKey,
    tolerance: Duration,
    /// Only SendGrid holds the private key, so `sign` is unsupported unless a test sets one.
    signing_key: Option<SigningKey>,
}

fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        VerifyingKey::from_public_key_pem(text).ok()
    } else {
        VerifyingKey::from_public_key_der(&b64_decode_lenient(text)?).ok()
    }
}

impl SendGrid {
    pub fn from_options(o: &SchemeOptions, _secrets: Vec<Secret>) -> Result<Self, OptionError> {
        let text = o.public_key.as_deref().ok_or_else(|| {
            OptionError::new(
                "public_key_env",
                "the sendgrid scheme needs public_key_env, the variable holding SendGrid's verification key",
            )
        })?;
        let key = parse_public_key(text).ok_or_else(|| {
            OptionError::new(
                "public_key_env",
                "not a P-256 public key (base64 DER SubjectPublicKeyInfo, or PEM)",
            )
        })?;
        Ok(Self {
            key,
            tolerance: tolerance(o, DEFAULT_TOLERANCE),
            signing_key: None,
        })
    }

    #[cfg(test)]
    fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }
}

impl Verifier for SendGrid {
    fn scheme(&self) -> &str {
        "sendgrid"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let der = b64_decode_lenient(req.require(SIGNATURE)?)
            .ok_or_else(|| VerifyError::Malformed(SIGNATURE.into(), "not base64"))?;
        let sig = Signature::from_der(&der)
            .map_err(|_| VerifyError::Malformed(SIGNATURE.into(), "not a DER ECDSA signature"))?;
        let ts = req.require(TIMESTAMP)?;
        check_unix_secs(TIMESTAMP, ts, req.now_secs(), self.tolerance)?;
        let mut message = Vec::with_capacity(ts.len() + req.body.len());
        message.extend_from_slice(ts.as_bytes());
        message.extend_from_slice(req.body);
        self.key
            .verify(&message, &sig)
            .map_err(|_| VerifyError::Mismatch)?;
        // Each event in the batch has its own `sg_event_id`; there is no delivery id.
        Ok(Verified::default())
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let key = self.signing_key.as_ref().ok_or(SignError::Unsupported(
            "SendGrid signs with its own private key; only its public key is configured",
        ))?;
        let ts = unix_secs(req.now).to_string();
        let mut message = ts.clone().into_bytes();
        message.extend_from_slice(&req.body);
        let sig: Signature = key.sign(&message);
        req.set_header(TIMESTAMP, ts);
        req.set_header(SIGNATURE, b64().encode(sig.to_der().as_bytes()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // Research §2.2, from `eventwebhook.spec.js`.
    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const WRONG_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const SIG: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const TAMPERED_SIG: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
    const TS: i64 = 1588788367;
    const PAYLOAD: &str =
        r#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;

    fn sendgrid(key: &str) -> SendGrid {
        let o = SchemeOptions {
            public_key: Some(key.into()),
            ..Default::default()
        };
        SendGrid::from_options(&o, Vec::new()).expect("valid public key")
    }

    fn check(
        s: &SendGrid,
        sig: &str,
        ts: &str,
        body: &str,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let h = headers(&[(SIGNATURE, sig), (TIMESTAMP, ts)]);
        s.verify(&inbound(
            "https://x/webhooks/sendgrid",
            "",
            &h,
            body.as_bytes(),
            at(now),
        ))
    }

    fn published(s: &SendGrid) -> Result<Verified, VerifyError> {
        check(s, SIG, &TS.to_string(), PAYLOAD, TS + 1)
    }

    #[test]
    fn the_published_vector_verifies() {
        assert_eq!(published(&sendgrid(PUBLIC_KEY)), Ok(Verified::default()));
    }

    #[test]
    fn the_published_negative_cases_fail() {
        assert_eq!(published(&sendgrid(WRONG_KEY)), Err(VerifyError::Mismatch));
        let s = sendgrid(PUBLIC_KEY);
        assert_eq!(
            check(&s, SIG, &TS.to_string(), "payload", TS),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&s, TAMPERED_SIG, &TS.to_string(), PAYLOAD, TS),
            Err(VerifyError::Mismatch)
        );
        // The literal `timestamp` is not even a number, so it fails before the signature check...
        assert_eq!(
            check(&s, SIG, "timestamp", PAYLOAD, TS),
            Err(VerifyError::Malformed(
                TIMESTAMP.into(),
                "not a Unix timestamp"
            ))
        );
        // ...and a different numeric timestamp fails the signature, since it is signed.
        assert_eq!(
            check(&s, SIG, &(TS + 1).to_string(), PAYLOAD, TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_pem_public_key_works_too() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &PUBLIC_KEY[..64],
            &PUBLIC_KEY[64..]
        );
        assert!(published(&sendgrid(&pem)).is_ok());
    }

    #[test]
    fn a_missing_or_invalid_public_key_names_public_key_env() {
        let e = SendGrid::from_options(&SchemeOptions::default(), Vec::new()).unwrap_err();
        assert_eq!(e.key, "public_key_env");
        for bad in [
            "not a key",
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----",
        ] {
            let o = SchemeOptions {
                public_key: Some(bad.into()),
                ..Default::default()
            };
            assert_eq!(
                SendGrid::from_options(&o, Vec::new()).unwrap_err().key,
                "public_key_env"
            );
        }
    }

    #[test]
    fn missing_headers_are_named() {
        let s = sendgrid(PUBLIC_KEY);
        let h = headers(&[(TIMESTAMP, "1588788367")]);
        let req = inbound("https://x", "", &h, PAYLOAD.as_bytes(), at(TS));
        assert_eq!(
            s.verify(&req),
            Err(VerifyError::MissingHeader(SIGNATURE.into()))
        );
        let h = headers(&[(SIGNATURE, SIG)]);
        let req = inbound("https://x", "", &h, PAYLOAD.as_bytes(), at(TS));
        assert_eq!(
            s.verify(&req),
            Err(VerifyError::MissingHeader(TIMESTAMP.into()))
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let s = sendgrid(PUBLIC_KEY);
        let ts = TS.to_string();
        assert_eq!(
            check(&s, "***", &ts, PAYLOAD, TS),
            Err(VerifyError::Malformed(SIGNATURE.into(), "not base64"))
        );
        assert_eq!(
            check(&s, "AAAA", &ts, PAYLOAD, TS),
            Err(VerifyError::Malformed(
                SIGNATURE.into(),
                "not a DER ECDSA signature"
            ))
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let s = sendgrid(PUBLIC_KEY);
        let ts = TS.to_string();
        assert!(check(&s, SIG, &ts, PAYLOAD, TS + 300).is_ok());
        assert_eq!(
            check(&s, SIG, &ts, PAYLOAD, TS + 301),
            Err(VerifyError::Stale(301))
        );
        assert_eq!(
            check(&s, SIG, &ts, PAYLOAD, TS - 301),
            Err(VerifyError::Future(301))
        );
        let o = SchemeOptions {
            public_key: Some(PUBLIC_KEY.into()),
            tolerance_secs: Some(3600),
            ..Default::default()
        };
        let long = SendGrid::from_options(&o, Vec::new()).unwrap();
        assert!(check(&long, SIG, &ts, PAYLOAD, TS + 3600).is_ok());
    }

    #[test]
    fn production_signing_is_unsupported() {
        let mut out = Outbound::new("https://x", "application/json", b"[]".to_vec());
        assert!(matches!(
            sendgrid(PUBLIC_KEY).sign(&mut out),
            Err(SignError::Unsupported(_))
        ));
    }

    #[test]
    fn sign_then_verify_round_trips_with_a_test_key() {
        use p256::pkcs8::EncodePublicKey;
        let signing = SigningKey::random(&mut rand::rngs::OsRng);
        let der = signing
            .verifying_key()
            .to_public_key_der()
            .expect("encodable key");
        let public = b64().encode(der.as_bytes());
        let s = sendgrid(&public).with_signing_key(signing);
        let mut out = Outbound::new("https://x", "application/json", PAYLOAD.as_bytes().to_vec());
        s.sign(&mut out).unwrap();
        let h = headers_of(&out);
        let req = inbound("https://x", "", &h, &out.body, out.now);
        assert_eq!(s.verify(&req), Ok(Verified::default()));
        assert_eq!(
            sendgrid(PUBLIC_KEY).verify(&req),
            Err(VerifyError::Mismatch)
        );
    }
}
