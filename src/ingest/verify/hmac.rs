//! The generic HMAC scheme: a header carrying an HMAC of a template over the body, and optionally a
//! timestamp and an id. Every simple provider preset (`presets.rs`) is an instance of it.

use std::time::Duration;

use actix_web::http::header::HeaderName;
use base64::Engine;

use super::{
    b64, b64_decode_lenient, check_window, header_name, mac, mac_matches, tolerance, unix_millis,
    unix_secs, HmacSha1, HmacSha256, HmacSha512, Inbound, OptionError, Outbound, SchemeOptions,
    Secret, SignError, Verified, Verifier, VerifyError, DEFAULT_TOLERANCE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn compute(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Algorithm::Sha1 => mac::<HmacSha1>(key, parts),
            Algorithm::Sha256 => mac::<HmacSha256>(key, parts),
            Algorithm::Sha512 => mac::<HmacSha512>(key, parts),
        }
    }

    pub fn matches(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        match self {
            Algorithm::Sha1 => mac_matches::<HmacSha1>(key, parts, tag),
            Algorithm::Sha256 => mac_matches::<HmacSha256>(key, parts, tag),
            Algorithm::Sha512 => mac_matches::<HmacSha512>(key, parts, tag),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hex" => Some(Encoding::Hex),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    pub fn decode(self, s: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Hex => hex::decode(s.trim()).ok(),
            Encoding::Base64 => b64_decode_lenient(s),
        }
    }

    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => b64().encode(bytes),
        }
    }
}

/// How a timestamp header is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    Seconds,
    Millis,
    /// An RFC 1123 / RFC 2822 date such as `Tue, 14 Apr 2026 03:50:12 GMT` (Klaviyo).
    HttpDate,
}

impl TimestampUnit {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "s" | "secs" | "seconds" => Some(TimestampUnit::Seconds),
            "ms" | "millis" | "milliseconds" => Some(TimestampUnit::Millis),
            "http-date" | "rfc1123" | "rfc2822" => Some(TimestampUnit::HttpDate),
            _ => None,
        }
    }

    /// The header value as Unix seconds.
    pub fn to_secs(self, v: &str) -> Option<i64> {
        let v = v.trim();
        match self {
            TimestampUnit::Seconds => v.parse::<i64>().ok(),
            TimestampUnit::Millis => v.parse::<i64>().ok().map(|ms| ms.div_euclid(1000)),
            TimestampUnit::HttpDate => chrono::DateTime::parse_from_rfc2822(v)
                .ok()
                .map(|d| d.timestamp()),
        }
    }

    pub fn format(self, now: std::time::SystemTime) -> String {
        match self {
            TimestampUnit::Seconds => unix_secs(now).to_string(),
            TimestampUnit::Millis => unix_millis(now).to_string(),
            TimestampUnit::HttpDate => chrono::DateTime::<chrono::Utc>::from(now)
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        }
    }
}

/// One piece of the signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
}

/// The signed content, e.g. `{timestamp}.{body}`; parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {s:?}"))?;
            parts.push(match &after[..close] {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "id" => Part::Id,
                "method" => Part::Method,
                "url" => Part::Url,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; expected {{body}}, {{timestamp}}, {{id}}, {{method}} or {{url}}"
                    ))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if !parts.contains(&Part::Body) {
            return Err(format!("template {s:?} must sign the {{body}}"));
        }
        Ok(Template { parts })
    }

    fn uses(&self, p: &Part) -> bool {
        self.parts.contains(p)
    }

    fn pieces<'a>(
        &'a self,
        body: &'a [u8],
        ts: &'a str,
        id: &'a str,
        method: &'a str,
        url: &'a str,
    ) -> Vec<&'a [u8]> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_bytes(),
                Part::Body => body,
                Part::Timestamp => ts.as_bytes(),
                Part::Id => id.as_bytes(),
                Part::Method => method.as_bytes(),
                Part::Url => url.as_bytes(),
            })
            .collect()
    }
}

/// Defaults a provider preset gives the generic scheme; every field can be overridden per source.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub header: &'static str,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: &'static str,
    pub template: &'static str,
    pub timestamp: Option<(&'static str, TimestampUnit)>,
    pub id_header: Option<&'static str>,
    pub tolerance: Duration,
    pub event_id_path: Option<&'static str>,
}

#[derive(Debug)]
pub struct HmacScheme {
    name: String,
    header: HeaderName,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: String,
    template: Template,
    timestamp: Option<(HeaderName, TimestampUnit)>,
    id_header: Option<HeaderName>,
    tolerance: Duration,
    secrets: Vec<Secret>,
    event_id_path: Option<&'static str>,
}

impl HmacScheme {
    pub fn from_options(
        name: &str,
        preset: Option<Preset>,
        o: &SchemeOptions,
        secrets: Vec<Secret>,
    ) -> Result<Self, OptionError> {
        let header = match (&o.header, &preset) {
            (Some(h), _) => h.as_str(),
            (None, Some(p)) => p.header,
            (None, None) => {
                return Err(OptionError::new(
                    "header",
                    "the hmac scheme needs a header name",
                ))
            }
        };
        let algorithm = match &o.algorithm {
            Some(a) => Algorithm::parse(a).ok_or_else(|| {
                OptionError::new(
                    "algorithm",
                    format!("{a:?} is not one of sha1, sha256, sha512"),
                )
            })?,
            None => preset.map(|p| p.algorithm).unwrap_or(Algorithm::Sha256),
        };
        let encoding = match &o.encoding {
            Some(e) => Encoding::parse(e).ok_or_else(|| {
                OptionError::new("encoding", format!("{e:?} is not one of hex, base64"))
            })?,
            None => preset.map(|p| p.encoding).unwrap_or(Encoding::Hex),
        };
        let prefix = o
            .prefix
            .clone()
            .unwrap_or_else(|| preset.map(|p| p.prefix.to_string()).unwrap_or_default());
        let template_src = o.template.clone().unwrap_or_else(|| {
            preset
                .map(|p| p.template.to_string())
                .unwrap_or_else(|| "{body}".into())
        });
        let template =
            Template::parse(&template_src).map_err(|r| OptionError::new("template", r))?;

        let ts_header = o
            .timestamp_header
            .clone()
            .or_else(|| preset.and_then(|p| p.timestamp.map(|t| t.0.to_string())));
        let ts_unit = match &o.timestamp_unit {
            Some(u) => TimestampUnit::parse(u).ok_or_else(|| {
                OptionError::new(
                    "timestamp_unit",
                    format!("{u:?} is not one of s, ms, http-date"),
                )
            })?,
            None => preset
                .and_then(|p| p.timestamp.map(|t| t.1))
                .unwrap_or(TimestampUnit::Seconds),
        };
        let timestamp = match ts_header {
            Some(h) => Some((header_name("timestamp_header", &h)?, ts_unit)),
            None => None,
        };
        if template.uses(&Part::Timestamp) && timestamp.is_none() {
            return Err(OptionError::new(
                "timestamp_header",
                "the template signs {timestamp}, so a timestamp header is needed",
            ));
        }
        let id_header = match o
            .id_header
            .clone()
            .or_else(|| preset.and_then(|p| p.id_header.map(str::to_string)))
        {
            Some(h) => Some(header_name("id_header", &h)?),
            None => None,
        };
        if template.uses(&Part::Id) && id_header.is_none() {
            return Err(OptionError::new(
                "id_header",
                "the template signs {id}, so an id header is needed",
            ));
        }
        Ok(HmacScheme {
            name: name.to_string(),
            header: header_name("header", header)?,
            algorithm,
            encoding,
            prefix,
            template,
            timestamp,
            id_header,
            tolerance: tolerance(o, preset.map(|p| p.tolerance).unwrap_or(DEFAULT_TOLERANCE)),
            secrets,
            event_id_path: preset.and_then(|p| p.event_id_path),
        })
    }
}

impl Verifier for HmacScheme {
    fn scheme(&self) -> &str {
        &self.name
    }

    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError> {
        let raw = req.require(self.header.as_str())?.trim();
        let encoded = match raw.get(..self.prefix.len()) {
            Some(p) if p.eq_ignore_ascii_case(&self.prefix) => &raw[self.prefix.len()..],
            _ => {
                return Err(VerifyError::Malformed(
                    self.header.to_string(),
                    "missing prefix",
                ))
            }
        };
        let tag = self
            .encoding
            .decode(encoded)
            .ok_or_else(|| VerifyError::Malformed(self.header.to_string(), "not valid encoding"))?;

        let ts = match &self.timestamp {
            Some((h, unit)) => {
                let v = req.require(h.as_str())?;
                let secs = unit
                    .to_secs(v)
                    .ok_or_else(|| VerifyError::Malformed(h.to_string(), "not a timestamp"))?;
                check_window(secs, req.now_secs(), self.tolerance)?;
                v
            }
            None => "",
        };
        let id = match &self.id_header {
            Some(h) => req.require(h.as_str())?,
            None => "",
        };
        let url = if self.template.uses(&Part::Url) {
            req.signed_url()
        } else {
            std::borrow::Cow::Borrowed("")
        };
        let parts = self.template.pieces(req.body, ts, id, req.method, &url);
        if self
            .secrets
            .iter()
            .any(|s| self.algorithm.matches(s.bytes(), &parts, &tag))
        {
            Ok(Verified {
                event_id: self.id_header.as_ref().map(|_| id.to_string()),
            })
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn sign(&self, req: &mut Outbound) -> Result<(), SignError> {
        let secret = self.secrets.first().ok_or(SignError::NoSecret)?;
        let ts = match &self.timestamp {
            Some((h, unit)) => {
                let v = unit.format(req.now);
                req.set_header(h.as_str(), v.clone());
                v
            }
            None => String::new(),
        };
        let id = match &self.id_header {
            Some(h) => match req.header(h.as_str()) {
                Some(existing) => existing.to_string(),
                None => {
                    let v = format!("msg_{}", uuid::Uuid::new_v4().simple());
                    req.set_header(h.as_str(), v.clone());
                    v
                }
            },
            None => String::new(),
        };
        let parts = self
            .template
            .pieces(&req.body, &ts, &id, &req.method, &req.url);
        let tag = self.algorithm.compute(secret.bytes(), &parts);
        let value = format!("{}{}", self.prefix, self.encoding.encode(&tag));
        req.set_header(self.header.as_str(), value);
        Ok(())
    }

    fn default_event_id_path(&self) -> Option<&'static str> {
        self.event_id_path
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn slack() -> HmacScheme {
        let o = SchemeOptions {
            header: Some("X-Slack-Signature".into()),
            prefix: Some("v0=".into()),
            template: Some("v0:{timestamp}:{body}".into()),
            timestamp_header: Some("X-Slack-Request-Timestamp".into()),
            ..Default::default()
        };
        HmacScheme::from_options(
            "hmac",
            None,
            &o,
            secrets(&["8f742231b10e8888abcd99yyyzzz85a5"]),
        )
        .expect("valid options")
    }

    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_v0_published_vector_verifies_as_a_generic_hmac_instance() {
        let h = headers(&[
            ("x-slack-signature", SLACK_SIG),
            ("X-Slack-Request-Timestamp", "1531420618"),
        ]);
        let req = inbound(
            "https://x/webhooks/slack",
            "",
            &h,
            SLACK_BODY.as_bytes(),
            at(1531420618 + 10),
        );
        assert_eq!(slack().verify(&req), Ok(Verified { event_id: None }));
    }

    #[test]
    fn slack_v0_vector_fails_when_the_body_is_tampered() {
        let h = headers(&[
            ("X-Slack-Signature", SLACK_SIG),
            ("X-Slack-Request-Timestamp", "1531420618"),
        ]);
        let body = SLACK_BODY.replace("roadrunner", "coyote");
        let req = inbound("https://x", "", &h, body.as_bytes(), at(1531420618));
        assert_eq!(slack().verify(&req), Err(VerifyError::Mismatch));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused_in_both_directions() {
        let h = headers(&[
            ("X-Slack-Signature", SLACK_SIG),
            ("X-Slack-Request-Timestamp", "1531420618"),
        ]);
        let old = inbound(
            "https://x",
            "",
            &h,
            SLACK_BODY.as_bytes(),
            at(1531420618 + 301),
        );
        assert_eq!(slack().verify(&old), Err(VerifyError::Stale(301)));
        let early = inbound(
            "https://x",
            "",
            &h,
            SLACK_BODY.as_bytes(),
            at(1531420618 - 301),
        );
        assert_eq!(slack().verify(&early), Err(VerifyError::Future(301)));
    }

    #[test]
    fn templates_reject_unknown_placeholders_and_missing_body() {
        assert!(Template::parse("{timestamp}.{bdy}")
            .unwrap_err()
            .contains("{bdy}"));
        assert!(Template::parse("{timestamp}")
            .unwrap_err()
            .contains("{body}"));
        assert!(Template::parse("{timestamp").is_err());
    }

    #[test]
    fn a_template_with_timestamp_needs_a_timestamp_header() {
        let o = SchemeOptions {
            header: Some("X-Sig".into()),
            template: Some("{timestamp}.{body}".into()),
            ..Default::default()
        };
        let e = HmacScheme::from_options("hmac", None, &o, secrets(&["k"])).unwrap_err();
        assert_eq!(e.key, "timestamp_header");
    }

    #[test]
    fn sign_then_verify_round_trips_with_sha1_sha512_and_base64() {
        for (alg, enc) in [("sha1", "base64"), ("sha512", "hex"), ("sha256", "base64")] {
            let o = SchemeOptions {
                header: Some("X-Sig".into()),
                algorithm: Some(alg.into()),
                encoding: Some(enc.into()),
                template: Some("{id}.{timestamp}.{body}".into()),
                timestamp_header: Some("X-Ts".into()),
                timestamp_unit: Some("ms".into()),
                id_header: Some("X-Id".into()),
                ..Default::default()
            };
            let s = HmacScheme::from_options("hmac", None, &o, secrets(&["k1", "k2"])).unwrap();
            let mut out = Outbound::new(
                "https://x/webhooks/a",
                "application/json",
                b"{\"a\":1}".to_vec(),
            );
            s.sign(&mut out).unwrap();
            let h = headers_of(&out);
            let req = inbound("https://x/webhooks/a", "", &h, &out.body, out.now);
            let got = s.verify(&req).unwrap();
            assert_eq!(got.event_id.as_deref(), out.header("X-Id"));
        }
    }

    #[test]
    fn a_rotated_second_secret_is_accepted() {
        let o = SchemeOptions {
            header: Some("X-Sig".into()),
            ..Default::default()
        };
        let old = HmacScheme::from_options("hmac", None, &o, secrets(&["old"])).unwrap();
        let both = HmacScheme::from_options("hmac", None, &o, secrets(&["new", "old"])).unwrap();
        let mut out = Outbound::new("https://x", "application/json", b"{}".to_vec());
        old.sign(&mut out).unwrap();
        let h = headers_of(&out);
        assert!(both
            .verify(&inbound("https://x", "", &h, b"{}", out.now))
            .is_ok());
    }
}
