//! A static token for providers that sign nothing (Mailchimp Marketing, Jotform, Postmark,
//! Unbounce, Paperform, Brevo, Gravity Forms, ...): the secret travels in a query parameter
//! (`param`, default `token`) or, when `header` is set, in that header only (`Authorization`
//! may carry it as `Bearer <token>`). Research §1, §3 per provider and §5.8 "Unsigned providers".
//!
//! A token proves who sent the request, not that the body is intact: use HTTPS.

use actix_web::http::header::{HeaderName, AUTHORIZATION};

use super::{
    ct_eq_secret, header_name, Inbound, OptionError, Outbound, SchemeOptions, Secret, SignError,
    Verified, Verifier, VerifyError,
};

#[derive(Debug)]
enum Carrier {
    Query(String),
    Header(HeaderName),
}

#[derive(Debug)]
pub struct Token {
    carrier: Carrier,
    url_check: bool,
    secrets: Vec<Secret>,
}

impl Token {
    pub fn from_options(o: &SchemeOptions, secrets: Vec<Secret>) -> Result<Self, OptionError> {
        let carrier = match (&o.header, &o.param) {
            // Silently ignoring one of the two would leave a URL token that is never checked.
            (Some(_), Some(_)) => {
                return Err(OptionError::new(
                    "param",
                    "set either header or param for the token scheme, not both",
                ))
            }
            (Some(h), None) => Carrier::Header(header_name("header", h)?),
            (None, Some(p)) if p.is_empty() => {
                return Err(OptionError::new("param", "must not be empty"))
            }
            (None, p) => Carrier::Query(p.clone().unwrap_or_else(|| "token".into())),
        };
        Ok(Self {
            carrier,
            // Mailchimp validates a new webhook URL with a GET before it will save it.
            url_check: o.url_check.unwrap_or(true),
            secrets,
        })
    }
}

/// Drops a case-insensitive `Bearer ` scheme from an `Authorization` value.
fn strip_bearer(v: &str) -> &str {
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim()
    } else {
        v
    }
}

impl Verifier for Token {
    fn scheme(&self) -> &str {
        "token"
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let given: String = match &self.carrier {
            Carrier::Header(name) => {
                let Some(raw) = req.headers.get(name) else {
                    return Err(VerifyError::MissingCredentials);
                };
                // A token is visible ASCII; anything else cannot match.
                let raw = raw
                    .to_str()
                    .map_err(|_| VerifyError::BadCredentials)?
                    .trim();
                if name == AUTHORIZATION {
                    strip_bearer(raw).to_string()
                } else {
                    raw.to_string()
                }
            }
            Carrier::Query(param) => form_urlencoded::parse(req.query.as_bytes())
                .find(|(k, _)| k == param.as_str())
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default(),
        };
        if given.is_empty() {
            return Err(VerifyError::MissingCredentials);
        }
        if self
            .secrets
            .iter()
            .any(|s| ct_eq_secret(given.as_bytes(), s.bytes()))
        {
            Ok(Verified::default())
        } else {
            Err(VerifyError::BadCredentials)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        match &self.carrier {
            Carrier::Header(name) if name == AUTHORIZATION => {
                req.set_header(name.as_str(), format!("Bearer {}", secret.expose()));
            }
            Carrier::Header(name) => req.set_header(name.as_str(), secret.expose()),
            Carrier::Query(param) => {
                let (base, query) = req.url.split_once('?').unwrap_or((&req.url, ""));
                let mut ser = form_urlencoded::Serializer::new(String::new());
                // Replace an existing token rather than sending two.
                ser.extend_pairs(
                    form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != param.as_str()),
                );
                ser.append_pair(param, secret.expose());
                req.url = format!("{base}?{}", ser.finish());
            }
        }
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

    fn token(o: SchemeOptions, secrets_: &[&str]) -> Token {
        Token::from_options(&o, secrets(secrets_)).expect("valid options")
    }

    fn query(secrets_: &[&str]) -> Token {
        token(SchemeOptions::default(), secrets_)
    }

    fn in_header(name: &str, secrets_: &[&str]) -> Token {
        token(
            SchemeOptions {
                header: Some(name.into()),
                ..Default::default()
            },
            secrets_,
        )
    }

    fn check(t: &Token, query: &str, hdrs: &[(&str, &str)]) -> Result<Verified, VerifyError> {
        let h = headers(hdrs);
        t.verify(&inbound(
            "https://x/webhooks/mc",
            query,
            &h,
            b"type=subscribe",
            at(0),
        ))
    }

    #[test]
    fn a_query_token_is_accepted_and_percent_decoded() {
        assert_eq!(
            check(&query(&["s3cret"]), "a=1&token=s3cret", &[]),
            Ok(Verified::default())
        );
        assert!(check(&query(&["a+b/c"]), "token=a%2Bb%2Fc", &[]).is_ok());
        // `+` in a query means a space.
        assert!(check(&query(&["a b"]), "token=a+b", &[]).is_ok());
        let custom = token(
            SchemeOptions {
                param: Some("secret".into()),
                ..Default::default()
            },
            &["s3cret"],
        );
        assert!(check(&custom, "secret=s3cret", &[]).is_ok());
        assert_eq!(
            check(&custom, "token=s3cret", &[]),
            Err(VerifyError::MissingCredentials)
        );
    }

    #[test]
    fn a_header_token_is_accepted_with_or_without_bearer() {
        let auth = in_header("Authorization", &["s3cret"]);
        assert!(check(&auth, "", &[("Authorization", "Bearer s3cret")]).is_ok());
        assert!(check(&auth, "", &[("authorization", "bearer  s3cret")]).is_ok());
        assert!(check(&auth, "", &[("Authorization", "s3cret")]).is_ok());
        let custom = in_header("X-Leadgate-Token", &["s3cret"]);
        assert!(check(&custom, "", &[("x-leadgate-token", " s3cret ")]).is_ok());
        // Only Authorization carries a scheme word.
        assert_eq!(
            check(&custom, "", &[("X-Leadgate-Token", "Bearer s3cret")]),
            Err(VerifyError::BadCredentials)
        );
    }

    #[test]
    fn with_a_header_configured_the_query_is_not_read() {
        let t = in_header("X-Leadgate-Token", &["s3cret"]);
        assert_eq!(
            check(&t, "token=s3cret", &[]),
            Err(VerifyError::MissingCredentials)
        );
    }

    #[test]
    fn a_wrong_token_fails() {
        assert_eq!(
            check(&query(&["s3cret"]), "token=s3cre", &[]),
            Err(VerifyError::BadCredentials)
        );
        assert_eq!(
            check(&query(&["s3cret"]), "token=s3crett", &[]),
            Err(VerifyError::BadCredentials)
        );
        let auth = in_header("Authorization", &["s3cret"]);
        assert_eq!(
            check(&auth, "", &[("Authorization", "Bearer other")]),
            Err(VerifyError::BadCredentials)
        );
    }

    #[test]
    fn missing_or_empty_credentials_are_missing() {
        assert_eq!(
            check(&query(&["s3cret"]), "", &[]),
            Err(VerifyError::MissingCredentials)
        );
        assert_eq!(
            check(&query(&["s3cret"]), "token=", &[]),
            Err(VerifyError::MissingCredentials)
        );
        let auth = in_header("Authorization", &["s3cret"]);
        assert_eq!(check(&auth, "", &[]), Err(VerifyError::MissingCredentials));
        assert_eq!(
            check(&auth, "", &[("Authorization", "Bearer ")]),
            Err(VerifyError::MissingCredentials)
        );
    }

    #[test]
    fn malformed_credentials_fail() {
        // Invalid percent-encoding and non-ASCII header bytes can never equal the secret.
        assert_eq!(
            check(&query(&["s3cret"]), "token=%FF", &[]),
            Err(VerifyError::BadCredentials)
        );
        let t = in_header("X-Leadgate-Token", &["s3cret"]);
        let mut h = headers(&[]);
        h.insert(
            HeaderName::from_static("x-leadgate-token"),
            actix_web::http::header::HeaderValue::from_bytes(b"s3cret\xff").unwrap(),
        );
        assert_eq!(
            t.verify(&inbound("https://x", "", &h, b"", at(0))),
            Err(VerifyError::BadCredentials)
        );
    }

    #[test]
    fn the_body_is_not_covered() {
        // Documented limitation of unsigned providers: any body passes with the right token.
        let h = headers(&[]);
        let t = query(&["s3cret"]);
        assert!(t
            .verify(&inbound(
                "https://x",
                "token=s3cret",
                &h,
                b"anything",
                at(0)
            ))
            .is_ok());
    }

    #[test]
    fn a_rotated_second_token_is_accepted() {
        assert!(check(&query(&["new", "old"]), "token=old", &[]).is_ok());
    }

    #[test]
    fn options_are_checked() {
        let both = SchemeOptions {
            header: Some("X-T".into()),
            param: Some("t".into()),
            ..Default::default()
        };
        assert_eq!(
            Token::from_options(&both, secrets(&["s"])).unwrap_err().key,
            "param"
        );
        let empty = SchemeOptions {
            param: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            Token::from_options(&empty, secrets(&["s"]))
                .unwrap_err()
                .key,
            "param"
        );
        let bad = SchemeOptions {
            header: Some("no spaces".into()),
            ..Default::default()
        };
        assert_eq!(
            Token::from_options(&bad, secrets(&["s"])).unwrap_err().key,
            "header"
        );
    }

    #[test]
    fn url_checks_are_answered_unless_turned_off() {
        assert!(query(&["s"]).answers_url_check());
        let off = token(
            SchemeOptions {
                url_check: Some(false),
                ..Default::default()
            },
            &["s"],
        );
        assert!(!off.answers_url_check());
    }

    #[test]
    fn sign_then_verify_round_trips_in_the_query_and_in_headers() {
        let t = query(&["a&b=c", "k2"]);
        let mut out = Outbound::new(
            "https://x/webhooks/mc?src=1&token=old",
            "application/json",
            b"{}".to_vec(),
        );
        t.sign(&mut out).unwrap();
        assert_eq!(out.url, "https://x/webhooks/mc?src=1&token=a%26b%3Dc");
        let h = headers_of(&out);
        let req = inbound("https://x/webhooks/mc", out.query(), &h, &out.body, out.now);
        assert!(t.verify(&req).is_ok());
        assert_eq!(
            query(&["k3"]).verify(&req),
            Err(VerifyError::BadCredentials)
        );

        for name in ["Authorization", "X-Leadgate-Token"] {
            let t = in_header(name, &["s3cret"]);
            let mut out = Outbound::new("https://x", "application/json", b"{}".to_vec());
            t.sign(&mut out).unwrap();
            let h = headers_of(&out);
            assert!(
                t.verify(&inbound("https://x", "", &h, &out.body, out.now))
                    .is_ok(),
                "{name}"
            );
        }
        let mut out = Outbound::new("https://x", "application/json", b"{}".to_vec());
        in_header("Authorization", &["s3cret"])
            .sign(&mut out)
            .unwrap();
        assert_eq!(out.header("authorization"), Some("Bearer s3cret"));
    }
}
