//! Standard Webhooks (Svix, Resend, Render, Loops, ...): `webhook-signature: v1,<base64>` entries,
//! space-separated, each a base64 HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{raw body}`,
//! keyed with the base64-DECODED secret (`whsec_` prefix optional). Svix sends the same headers
//! named `svix-*`. Research §2.1 and §3; `standard-webhooks/standard-webhooks`
//! `spec/standard-webhooks.md`.

use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretSlice};

use super::{
    b64, b64_decode_lenient, check_unix_secs, mac, mac_matches, tolerance, unix_secs, HmacSha256,
    Inbound, OptionError, Outbound, SchemeOptions, Secret, SignError, Verified, Verifier,
    VerifyError, DEFAULT_TOLERANCE,
};

const ID: [&str; 2] = ["webhook-id", "svix-id"];
const TIMESTAMP: [&str; 2] = ["webhook-timestamp", "svix-timestamp"];
const SIGNATURE: [&str; 2] = ["webhook-signature", "svix-signature"];

#[derive(Debug)]
pub struct StandardWebhooks {
    /// The decoded HMAC keys, first one signs.
    keys: Vec<SecretSlice<u8>>,
    tolerance: Duration,
}

/// `whsec_<base64>` or bare base64, padded or not, to the raw key bytes.
fn decode_secret(s: &Secret) -> Result<SecretSlice<u8>, OptionError> {
    let text = s.expose().trim();
    if text.starts_with("whsk_") || text.starts_with("whpk_") {
        return Err(OptionError::new(
            "secret_env",
            "Ed25519 (v1a) keys are not supported; use a whsec_ HMAC secret",
        ));
    }
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    match b64_decode_lenient(encoded) {
        Some(key) if !key.is_empty() => Ok(SecretSlice::from(key)),
        // Never echo the secret, only what is wrong with it.
        _ => Err(OptionError::new(
            "secret_env",
            "a Standard Webhooks secret must be base64, optionally prefixed whsec_",
        )),
    }
}

impl StandardWebhooks {
    pub fn from_options(o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        Ok(Self {
            keys: secrets
                .iter()
                .map(decode_secret)
                .collect::<Result<_, _>>()?,
            tolerance: tolerance(o, DEFAULT_TOLERANCE),
        })
    }
}

/// The first of `names` that is present (`webhook-*` before `svix-*`).
fn either<'a>(req: &'a Inbound<'_>, names: [&str; 2]) -> Result<&'a str, VerifyError> {
    let name = names
        .iter()
        .find(|n| req.headers.contains_key(**n))
        .unwrap_or(&names[0]);
    req.require(name)
}

impl Verifier for StandardWebhooks {
    fn scheme(&self) -> &str {
        "standard-webhooks"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let id = either(req, ID)?;
        let ts = either(req, TIMESTAMP)?;
        let header = either(req, SIGNATURE)?;
        check_unix_secs(TIMESTAMP[0], ts, req.now_secs(), self.tolerance)?;

        let mut saw_v1 = false;
        let mut tags = Vec::new();
        for entry in header.split(' ').filter(|e| !e.is_empty()) {
            // Only `v1` is HMAC; `v1a` (Ed25519) and unknown versions are skipped, as the
            // reference libraries do.
            if let Some(("v1", sig)) = entry.split_once(',') {
                saw_v1 = true;
                if let Some(tag) = b64_decode_lenient(sig) {
                    tags.push(tag);
                }
            }
        }
        if !saw_v1 {
            return Err(VerifyError::Malformed(
                SIGNATURE[0].to_string(),
                "no v1 signature",
            ));
        }
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", req.body];
        let ok = self.keys.iter().any(|k| {
            tags.iter()
                .any(|t| mac_matches::<HmacSha256>(k.expose_secret(), &parts, t))
        });
        if ok {
            Ok(Verified {
                event_id: Some(id.to_string()),
            })
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let key = self.keys.first().ok_or(SignError::NoSecret)?;
        let id = match req.header(ID[0]) {
            Some(existing) => existing.to_string(),
            None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
        };
        let ts = unix_secs(req.now).to_string();
        let tag = mac::<HmacSha256>(
            key.expose_secret(),
            &[id.as_bytes(), b".", ts.as_bytes(), b".", &req.body],
        );
        req.set_header(ID[0], id);
        req.set_header(TIMESTAMP[0], ts);
        req.set_header(SIGNATURE[0], format!("v1,{}", b64().encode(tag)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    // SW-1 and SW-2 (research §2.1): `test_sign_function` / Rust `test_sign`.
    const SW1_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW1_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW1_TS: i64 = 1614265330;
    const SW1_BODY: &str = r#"{"test": 2432232314}"#;
    const SW1_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const SW2_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW2_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW2_TS: i64 = 1649367553;
    const SW2_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SW2_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    // Decoys from the Rust library's `test_verify_with_multiple_signatures`.
    const DECOYS: [&str; 3] = [
        "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
        "v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=",
    ];

    fn sw(secrets_: &[&str]) -> StandardWebhooks {
        StandardWebhooks::from_options(&SchemeOptions::default(), secrets(secrets_))
            .expect("valid secrets")
    }

    fn check(
        s: &StandardWebhooks,
        prefix: &str,
        id: &str,
        ts: &str,
        sig: &str,
        body: &str,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let (hi, ht, hs) = (
            format!("{prefix}-id"),
            format!("{prefix}-timestamp"),
            format!("{prefix}-signature"),
        );
        let h = headers(&[(&hi, id), (&ht, ts), (&hs, sig)]);
        s.verify(&inbound(
            "https://x/webhooks/sw",
            "",
            &h,
            body.as_bytes(),
            at(now),
        ))
    }

    fn sw1(s: &StandardWebhooks, sig: &str, body: &str, now: i64) -> Result<Verified, VerifyError> {
        check(s, "webhook", SW1_ID, &SW1_TS.to_string(), sig, body, now)
    }

    #[test]
    fn sw1_and_sw2_published_vectors_verify_exactly() {
        assert_eq!(
            sw1(&sw(&[SW1_SECRET]), SW1_SIG, SW1_BODY, SW1_TS),
            Ok(Verified {
                event_id: Some(SW1_ID.into())
            })
        );
        let s2 = sw(&[SW2_SECRET]);
        let ts2 = SW2_TS.to_string();
        assert_eq!(
            check(&s2, "webhook", SW2_ID, &ts2, SW2_SIG, SW2_BODY, SW2_TS + 1),
            Ok(Verified {
                event_id: Some(SW2_ID.into())
            })
        );
    }

    #[test]
    fn signing_reproduces_the_published_vectors() {
        for (secret, id, ts, body, sig) in [
            (SW1_SECRET, SW1_ID, SW1_TS, SW1_BODY, SW1_SIG),
            (SW2_SECRET, SW2_ID, SW2_TS, SW2_BODY, SW2_SIG),
        ] {
            let mut out = Outbound::new("https://x", "application/json", body.as_bytes().to_vec());
            out.now = at(ts);
            out.set_header("webhook-id", id);
            sw(&[secret]).sign(&mut out).unwrap();
            assert_eq!(out.header("webhook-signature"), Some(sig));
            assert_eq!(
                out.header("webhook-timestamp"),
                Some(ts.to_string().as_str())
            );
        }
    }

    #[test]
    fn the_secret_works_without_its_whsec_prefix() {
        let bare = SW1_SECRET.trim_start_matches("whsec_");
        assert!(sw1(&sw(&[bare]), SW1_SIG, SW1_BODY, SW1_TS).is_ok());
    }

    #[test]
    fn unpadded_secrets_decode_leniently() {
        // Keys of 23 and 25 bytes whose base64 needs one and two `=`; the signatures were
        // computed with Python `base64.b64decode(secret + "=" * pad)` and `hmac` over SW-1.
        for (secret, sig) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
                "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk=",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS=",
                "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk=",
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr",
                "v1,yK2tMbA6BHPrMEJ1lLv7UlJJbgFoqGenJkiajZ29evg=",
            ),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==",
                "v1,yK2tMbA6BHPrMEJ1lLv7UlJJbgFoqGenJkiajZ29evg=",
            ),
        ] {
            assert!(
                sw1(&sw(&[secret]), sig, SW1_BODY, SW1_TS).is_ok(),
                "{secret}"
            );
            // ...and they really are other keys than SW-1's.
            assert_eq!(
                sw1(&sw(&[secret]), SW1_SIG, SW1_BODY, SW1_TS),
                Err(VerifyError::Mismatch),
                "{secret}"
            );
        }
    }

    #[test]
    fn bad_secrets_name_the_option_without_echoing_the_value() {
        for (bad, payload) in [
            ("whsec_not*base64!", "not*base64!"),
            ("whsec_", ""),
            ("whsk_c2VjcmV0LWtleQ", "c2VjcmV0LWtleQ"),
        ] {
            let e = StandardWebhooks::from_options(&SchemeOptions::default(), secrets(&[bad]))
                .unwrap_err();
            assert_eq!(e.key, "secret_env");
            assert!(
                payload.is_empty() || !e.reason.contains(payload),
                "{}",
                e.reason
            );
        }
    }

    #[test]
    fn the_real_signature_among_decoys_passes_and_decoys_alone_fail() {
        let s = sw(&[SW1_SECRET]);
        let mixed = format!("{} {} {SW1_SIG} {}", DECOYS[0], DECOYS[1], DECOYS[2]);
        assert!(sw1(&s, &mixed, SW1_BODY, SW1_TS).is_ok());
        assert_eq!(
            sw1(&s, &DECOYS.join(" "), SW1_BODY, SW1_TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn non_v1_entries_are_ignored() {
        let s = sw(&[SW1_SECRET]);
        let b64sig = SW1_SIG.trim_start_matches("v1,");
        // The real HMAC under another version label must not count.
        assert_eq!(
            sw1(&s, &format!("v1a,{b64sig} v1,{b64sig}x"), SW1_BODY, SW1_TS),
            Err(VerifyError::Mismatch)
        );
        assert!(sw1(
            &s,
            &format!("v1a,{b64sig} v2,abc {SW1_SIG}"),
            SW1_BODY,
            SW1_TS
        )
        .is_ok());
        assert_eq!(
            sw1(&s, &format!("v1a,{b64sig}"), SW1_BODY, SW1_TS),
            Err(VerifyError::Malformed(
                "webhook-signature".into(),
                "no v1 signature"
            ))
        );
    }

    #[test]
    fn svix_headers_are_accepted_as_a_fallback() {
        let s = sw(&[SW1_SECRET]);
        let ts = SW1_TS.to_string();
        assert_eq!(
            check(&s, "svix", SW1_ID, &ts, SW1_SIG, SW1_BODY, SW1_TS),
            Ok(Verified {
                event_id: Some(SW1_ID.into())
            })
        );
    }

    #[test]
    fn a_wrong_secret_fails() {
        let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(
            sw1(&sw(&[other]), SW1_SIG, SW1_BODY, SW1_TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_body_or_id_fails() {
        let s = sw(&[SW1_SECRET]);
        assert_eq!(
            sw1(&s, SW1_SIG, r#"{"test": 2432232315}"#, SW1_TS),
            Err(VerifyError::Mismatch)
        );
        let ts = SW1_TS.to_string();
        assert_eq!(
            check(&s, "webhook", "msg_other", &ts, SW1_SIG, SW1_BODY, SW1_TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        let s = sw(&[SW1_SECRET]);
        let ts = SW1_TS.to_string();
        let all = [
            ("webhook-id", SW1_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", SW1_SIG),
        ];
        for skip in 0..3 {
            let pairs: Vec<(&str, &str)> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            let h = headers(&pairs);
            let req = inbound("https://x", "", &h, SW1_BODY.as_bytes(), at(SW1_TS));
            assert_eq!(
                s.verify(&req),
                Err(VerifyError::MissingHeader(all[skip].0.into()))
            );
        }
    }

    #[test]
    fn a_malformed_timestamp_is_refused() {
        let s = sw(&[SW1_SECRET]);
        assert_eq!(
            check(&s, "webhook", SW1_ID, "hello", SW1_SIG, SW1_BODY, SW1_TS),
            Err(VerifyError::Malformed(
                "webhook-timestamp".into(),
                "not a Unix timestamp"
            ))
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let s = sw(&[SW1_SECRET]);
        assert!(sw1(&s, SW1_SIG, SW1_BODY, SW1_TS + 300).is_ok());
        assert_eq!(
            sw1(&s, SW1_SIG, SW1_BODY, SW1_TS + 301),
            Err(VerifyError::Stale(301))
        );
        assert_eq!(
            sw1(&s, SW1_SIG, SW1_BODY, SW1_TS - 301),
            Err(VerifyError::Future(301))
        );
        let o = SchemeOptions {
            tolerance_secs: Some(60),
            ..Default::default()
        };
        let short = StandardWebhooks::from_options(&o, secrets(&[SW1_SECRET])).unwrap();
        assert_eq!(
            sw1(&short, SW1_SIG, SW1_BODY, SW1_TS + 61),
            Err(VerifyError::Stale(61))
        );
    }

    #[test]
    fn a_rotated_second_secret_is_accepted() {
        let s = sw(&[SW2_SECRET, SW1_SECRET]);
        assert!(sw1(&s, SW1_SIG, SW1_BODY, SW1_TS).is_ok());
    }

    #[test]
    fn sign_then_verify_round_trips_with_a_generated_id() {
        let s = sw(&[SW1_SECRET]);
        let mut out = Outbound::new("https://x", "application/json", b"{\"a\":1}".to_vec());
        s.sign(&mut out).unwrap();
        let id = out.header("webhook-id").unwrap().to_string();
        assert!(id.starts_with("msg_"), "{id}");
        let h = headers_of(&out);
        let req = inbound("https://x", "", &h, &out.body, out.now);
        assert_eq!(s.verify(&req), Ok(Verified { event_id: Some(id) }));
        assert_eq!(sw(&[SW2_SECRET]).verify(&req), Err(VerifyError::Mismatch));
    }
}
