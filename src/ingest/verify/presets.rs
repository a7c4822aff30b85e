//! Provider presets of the generic HMAC scheme (see `../../../../shared/research/webhook-providers.md`).
//! Each one only fills in defaults; a source may still override any option (Formstack lets users
//! rename its header, for example).

use std::time::Duration;

use super::hmac::{Algorithm, Encoding, Preset, TimestampUnit};
use super::DEFAULT_TOLERANCE;

/// The preset for a scheme name, if it is one.
pub fn preset(name: &str) -> Option<Preset> {
    let base = Preset {
        header: "",
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: "",
        template: "{body}",
        timestamp: None,
        id_header: None,
        tolerance: DEFAULT_TOLERANCE,
        event_id_path: None,
    };
    Some(match name {
        // sha256=<base64 HMAC of the raw body>; the answer's event id dedupes.
        "typeform" => Preset {
            header: "Typeform-Signature",
            encoding: Encoding::Base64,
            prefix: "sha256=",
            event_id_path: Some("$.event_id"),
            ..base
        },
        // Bare base64 of the raw body.
        "tally" => Preset {
            header: "Tally-Signature",
            encoding: Encoding::Base64,
            event_id_path: Some("$.eventId"),
            ..base
        },
        // Hex over `{timestamp}:{body}`, timestamp in milliseconds.
        "webflow" => Preset {
            header: "x-webflow-signature",
            template: "{timestamp}:{body}",
            timestamp: Some(("x-webflow-timestamp", TimestampUnit::Millis)),
            event_id_path: Some("$.payload.id"),
            ..base
        },
        // sha256=<hex> over the raw (usually urlencoded) body; UniqueID identifies the submission.
        "formstack" => Preset {
            header: "X-FS-Signature",
            prefix: "sha256=",
            event_id_path: Some("$.UniqueID"),
            ..base
        },
        // Bare hex over the body; a sender without a secret writes `no-secret-provided`, which fails.
        "cal-com" => Preset {
            header: "X-Cal-Signature-256",
            event_id_path: Some("$.payload.uid"),
            ..base
        },
        // Body FIRST, then the timestamp header verbatim (an RFC 1123 date).
        "klaviyo" => Preset {
            header: "Klaviyo-Signature",
            template: "{body}{timestamp}",
            timestamp: Some(("Klaviyo-Timestamp", TimestampUnit::HttpDate)),
            ..base
        },
        // Hex over `v0:{timestamp}:{body}`, timestamp in seconds.
        "customer-io" => Preset {
            header: "X-CIO-Signature",
            template: "v0:{timestamp}:{body}",
            timestamp: Some(("X-CIO-Timestamp", TimestampUnit::Seconds)),
            event_id_path: Some("$.event_id"),
            ..base
        },
        // Meta (and GitHub): `X-Hub-Signature-256: sha256=<hex>` over the raw body.
        "meta" => Preset {
            header: "X-Hub-Signature-256",
            prefix: "sha256=",
            event_id_path: Some("$.entry[0].changes[0].value.leadgen_id"),
            ..base
        },
        _ => return None,
    })
}

/// Calendly's own examples allow three minutes.
pub const CALENDLY_TOLERANCE: Duration = Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{build, SchemeOptions, Verified, VerifyError};

    fn verify(
        scheme: &str,
        secret: &str,
        hdrs: &[(&str, &str)],
        body: &str,
        now: std::time::SystemTime,
    ) -> Result<Verified, VerifyError> {
        let v =
            build(scheme, &SchemeOptions::default(), secrets(&[secret])).expect("preset builds");
        let h = headers(hdrs);
        v.verify(&inbound(
            "https://x/webhooks/p",
            "",
            &h,
            body.as_bytes(),
            now,
        ))
    }

    #[test]
    fn formstack_captured_deliveries_verify_as_published() {
        let fs1 = "FormID=6606394&UniqueID=1500877919&HandshakeKey=test";
        let sig1 = "sha256=54bc5cf9f57b9a1083c7e53d734cb0586933146ba6b2150e888a827dfb468ea7";
        assert!(verify("formstack", "test", &[("X-FS-Signature", sig1)], fs1, at(0)).is_ok());

        let fs2 = "FormID=6606394&UniqueID=1500878955&HandshakeKey=test";
        let sig2 = "sha256=30dff7f180b6d69eab397a5d51719474df490b730514c253e8b5832d3b51b970";
        assert!(verify(
            "formstack",
            "test1",
            &[("x-fs-signature", sig2)],
            fs2,
            at(0)
        )
        .is_ok());
        // FS-2 was signed with key `test1`: under `test` it must fail.
        assert_eq!(
            verify("formstack", "test", &[("X-FS-Signature", sig2)], fs2, at(0)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn meta_x_hub_signature_256_published_vector_verifies() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify(
            "meta",
            "It's a Secret to Everybody",
            &[("X-Hub-Signature-256", sig)],
            "Hello, World!",
            at(0)
        )
        .is_ok());
        assert_eq!(
            verify(
                "meta",
                "It's a Secret to Everybody",
                &[("X-Hub-Signature-256", sig)],
                "Hello, World?",
                at(0)
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn webflow_signs_timestamp_colon_body_in_milliseconds() {
        // Computed locally in the research notes (Hookdeck's published value for this input is wrong).
        let body = r#"{"triggerType":"form_submission","payload":{}}"#;
        let sig = "4d364bc87054a1f010ee53c548df71070cae01daa1279a7fb95b778189fd493e";
        // The research computed it over the literal timestamp string `1705332000`, read here as ms.
        let now = at_ms(1705332000 + 1000);
        assert!(verify(
            "webflow",
            "test_secret",
            &[
                ("x-webflow-signature", sig),
                ("x-webflow-timestamp", "1705332000")
            ],
            body,
            now
        )
        .is_ok());
    }

    #[test]
    fn cal_com_without_a_secret_sends_a_literal_that_never_verifies() {
        assert!(matches!(
            verify(
                "cal-com",
                "s",
                &[("X-Cal-Signature-256", "no-secret-provided")],
                "{}",
                at(0)
            ),
            Err(VerifyError::Malformed(..))
        ));
    }

    #[test]
    fn every_preset_round_trips_sign_and_verify_and_refuses_a_wrong_secret() {
        for name in [
            "typeform",
            "tally",
            "webflow",
            "formstack",
            "cal-com",
            "klaviyo",
            "customer-io",
            "meta",
        ] {
            let good = build(name, &SchemeOptions::default(), secrets(&["right"])).unwrap();
            let bad = build(name, &SchemeOptions::default(), secrets(&["wrong"])).unwrap();
            let mut out = crate::ingest::verify::Outbound::new(
                "https://x/webhooks/p",
                "application/json",
                br#"{"event_id":"e1"}"#.to_vec(),
            );
            good.sign(&mut out).unwrap();
            let h = headers_of(&out);
            let req = inbound("https://x/webhooks/p", "", &h, &out.body, out.now);
            assert!(good.verify(&req).is_ok(), "{name} round trip");
            assert_eq!(
                bad.verify(&req),
                Err(VerifyError::Mismatch),
                "{name} wrong secret"
            );
        }
    }
}
