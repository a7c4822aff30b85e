//! HTTP Basic authentication (RFC 7617) for unsigned providers that support it, such as Postmark
//! (`https://user:pass@host/...` or HttpAuth) and Brevo. The password is the source's secret; the
//! user name is the `username` option (default `leadgate`). Research §3 "Postmark", "Brevo" and
//! §5.8.

use actix_web::http::header::AUTHORIZATION;
use base64::Engine;

use super::{
    b64, b64_decode_lenient, ct_eq_secret, Inbound, OptionError, Outbound, SchemeOptions, Secret,
    SignError, Verified, Verifier, VerifyError,
};

#[derive(Debug)]
pub struct Basic {
    username: String,
    url_check: bool,
    secrets: Vec<Secret>,
}

impl Basic {
    pub fn from_options(o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        let username = o.username.clone().unwrap_or_else(|| "leadgate".into());
        if username.is_empty() || username.contains(':') {
            // RFC 7617: the user-id cannot contain a colon, which separates it from the password.
            return Err(OptionError::new(
                "username",
                "must be non-empty and contain no ':'",
            ));
        }
        Ok(Self {
            username,
            url_check: o.url_check.unwrap_or(false),
            secrets,
        })
    }
}

impl Verifier for Basic {
    fn scheme(&self) -> &str {
        "basic"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let Some(raw) = req.headers.get(AUTHORIZATION) else {
            return Err(VerifyError::MissingCredentials);
        };
        // Garbled Basic credentials are wrong credentials (`invalid_credentials`, as the token
        // scheme answers), not a signature problem: the operator's fix is the user:password.
        let raw = raw.to_str().map_err(|_| VerifyError::BadCredentials)?;
        let encoded = match raw.trim().split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => rest,
            // Another scheme (Bearer, ...) carries no Basic credentials.
            _ => return Err(VerifyError::MissingCredentials),
        };
        let decoded = b64_decode_lenient(encoded).ok_or(VerifyError::BadCredentials)?;
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(VerifyError::BadCredentials)?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Non-short-circuit `|` and `&`: the time taken does not say which part was wrong.
        let user_ok = ct_eq_secret(user, self.username.as_bytes());
        let password_ok = self
            .secrets
            .iter()
            .fold(false, |ok, s| ok | ct_eq_secret(password, s.bytes()));
        if user_ok & password_ok {
            Ok(Verified::default())
        } else {
            Err(VerifyError::BadCredentials)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        let pair = format!("{}:{}", self.username, secret.expose());
        req.set_header(
            AUTHORIZATION.as_str(),
            format!("Basic {}", b64().encode(pair)),
        );
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

    fn basic(username: Option<&str>, secrets_: &[&str]) -> Basic {
        let o = SchemeOptions {
            username: username.map(str::to_string),
            ..Default::default()
        };
        Basic::from_options(&o, secrets(secrets_)).expect("valid options")
    }

    fn auth(user: &str, password: &str) -> String {
        format!("Basic {}", b64().encode(format!("{user}:{password}")))
    }

    fn check(b: &Basic, value: Option<&str>) -> Result<Verified, VerifyError> {
        let pairs: Vec<(&str, &str)> = value.map(|v| ("Authorization", v)).into_iter().collect();
        let h = headers(&pairs);
        b.verify(&inbound("https://x/webhooks/pm", "", &h, b"{}", at(0)))
    }

    #[test]
    fn the_default_user_and_the_secret_are_accepted() {
        let b = basic(None, &["pa:ss"]);
        // RFC 7617 example encoding, and a password that itself contains a colon.
        assert_eq!(
            check(&b, Some(&auth("leadgate", "pa:ss"))),
            Ok(Verified::default())
        );
        assert!(check(&b, Some("basic bGVhZGdhdGU6cGE6c3M=")).is_ok());
        let custom = basic(Some("postmark"), &["pw"]);
        assert!(check(&custom, Some(&auth("postmark", "pw"))).is_ok());
    }

    #[test]
    fn a_wrong_password_or_user_fails() {
        let b = basic(None, &["pw"]);
        assert_eq!(
            check(&b, Some(&auth("leadgate", "pw2"))),
            Err(VerifyError::BadCredentials)
        );
        assert_eq!(
            check(&b, Some(&auth("admin", "pw"))),
            Err(VerifyError::BadCredentials)
        );
        assert_eq!(
            check(&b, Some(&auth("leadgate", ""))),
            Err(VerifyError::BadCredentials)
        );
    }

    #[test]
    fn missing_credentials_are_missing() {
        let b = basic(None, &["pw"]);
        assert_eq!(check(&b, None), Err(VerifyError::MissingCredentials));
        assert_eq!(
            check(&b, Some("Bearer pw")),
            Err(VerifyError::MissingCredentials)
        );
        assert_eq!(
            check(&b, Some("Basic")),
            Err(VerifyError::MissingCredentials)
        );
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let b = basic(None, &["pw"]);
        assert_eq!(
            check(&b, Some("Basic ***")),
            Err(VerifyError::BadCredentials)
        );
        let no_colon = format!("Basic {}", b64().encode("leadgatepw"));
        assert_eq!(check(&b, Some(&no_colon)), Err(VerifyError::BadCredentials));
        assert_eq!(
            VerifyError::BadCredentials.code(),
            "invalid_credentials",
            "the code operators look up for the basic scheme"
        );
    }

    #[test]
    fn the_body_is_not_covered() {
        // Basic auth authenticates the sender only; the body is whatever arrives over TLS.
        let b = basic(None, &["pw"]);
        let h = headers(&[("Authorization", &auth("leadgate", "pw"))]);
        assert!(b
            .verify(&inbound("https://x", "", &h, b"tampered", at(0)))
            .is_ok());
    }

    #[test]
    fn a_rotated_second_password_is_accepted() {
        let b = basic(None, &["new", "old"]);
        assert!(check(&b, Some(&auth("leadgate", "old"))).is_ok());
    }

    #[test]
    fn bad_usernames_name_the_option() {
        for bad in ["", "a:b"] {
            let o = SchemeOptions {
                username: Some(bad.into()),
                ..Default::default()
            };
            assert_eq!(
                Basic::from_options(&o, secrets(&["pw"])).unwrap_err().key,
                "username"
            );
        }
    }

    #[test]
    fn url_checks_are_off_unless_turned_on() {
        assert!(!basic(None, &["pw"]).answers_url_check());
        let o = SchemeOptions {
            url_check: Some(true),
            ..Default::default()
        };
        assert!(Basic::from_options(&o, secrets(&["pw"]))
            .unwrap()
            .answers_url_check());
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let b = basic(Some("pm"), &["pw", "old"]);
        let mut out = Outbound::new("https://x", "application/json", b"{}".to_vec());
        b.sign(&mut out).unwrap();
        assert_eq!(out.header("authorization"), Some(auth("pm", "pw").as_str()));
        let h = headers_of(&out);
        let req = inbound("https://x", "", &h, &out.body, out.now);
        assert!(b.verify(&req).is_ok());
        assert_eq!(
            basic(Some("pm"), &["other"]).verify(&req),
            Err(VerifyError::BadCredentials)
        );
    }
}
