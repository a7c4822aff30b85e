//! One `[[sources]]` entry: the URL segment, the signature scheme and its secrets, the body limit,
//! the inbound rate limit, the event-id selector and the mapping file.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{non_zero, resolve, EnvVars, UnsetSecrets};
use crate::ingest::decode::{self, EventIdPath};
use crate::ingest::verify::{self, SchemeOptions, Secret, Verifier};

/// A source's name: the `{source}` URL segment, `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceName(String);

impl SourceName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(SourceName(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a source name: use 1 to 64 of a-z, 0-9, '-' and '_'"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `requests` per `per`, with a burst of `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Duration,
}

impl RateLimit {
    pub fn quota(&self) -> governor::Quota {
        // `per / requests` is at least 1 ns because `per` is at least 1 s and requests fits in u32.
        let period = self.per / self.requests.get();
        governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(self.requests))
            .allow_burst(self.requests)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub requests: u32,
    pub per_secs: u64,
}

impl RawRate {
    pub fn parse(&self) -> Result<RateLimit, String> {
        let requests = non_zero(self.requests).ok_or("requests must be at least 1")?;
        if self.per_secs == 0 {
            return Err("per_secs must be at least 1".into());
        }
        Ok(RateLimit {
            requests,
            per: Duration::from_secs(self.per_secs),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A source as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    name: String,
    scheme: String,
    #[serde(default)]
    secret_env: Option<OneOrMany>,
    /// Skip this source, with a warning, when its secret variables are unset (example configs).
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    mapping: Option<PathBuf>,
    #[serde(default)]
    body_limit_bytes: Option<usize>,
    #[serde(default)]
    rate_limit: Option<RawRate>,
    /// JSONPath of the provider's event id (dedupe key); defaults per scheme.
    #[serde(default)]
    event_id: Option<String>,
    /// The exact URL the provider signs (HubSpot, Mandrill); default `<public_url>/webhooks/<name>`.
    #[serde(default)]
    url: Option<String>,
    /// Form/multipart fields whose text is JSON, parsed in place.
    #[serde(default)]
    json_fields: Option<Vec<String>>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    timestamp_header: Option<String>,
    #[serde(default)]
    timestamp_unit: Option<String>,
    #[serde(default)]
    id_header: Option<String>,
    #[serde(default)]
    tolerance_secs: Option<u64>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    public_key_env: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    url_check: Option<bool>,
}

/// A source ready to serve: everything parsed.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceName,
    pub verifier: Arc<dyn Verifier>,
    /// URL the provider signs; see [`verify::Inbound::url`].
    pub url: String,
    pub url_is_exact: bool,
    pub body_limit: usize,
    pub rate_limit: Option<RateLimit>,
    pub event_id: Option<EventIdPath>,
    pub mapping: Option<PathBuf>,
    pub decode: decode::Limits,
}

pub(super) struct Context<'a> {
    pub index: usize,
    pub base_dir: &'a Path,
    pub public_url: &'a str,
    pub default_body_limit: usize,
    pub env: &'a EnvVars,
    pub unset: UnsetSecrets,
}

/// A source that is not served because its secret variables are unset: an `optional` source, or
/// any source while `leadgate check` runs. Kept so its mapping is still checked.
#[derive(Debug, Clone)]
pub struct SkippedSource {
    pub name: SourceName,
    pub mapping: Option<PathBuf>,
    pub decode: decode::Limits,
}

pub(super) enum Built {
    Ready(SourceConfig),
    /// Not served; the warning says which variable is unset and what that means.
    Skipped(SkippedSource, String),
}

impl RawSource {
    /// Parses the entry; errors are `(key, reason)`. Everything that does not need a secret is
    /// checked first, so a source whose variables are unset is still checked as far as it can be.
    pub(super) fn build(self, cx: &Context<'_>) -> Result<Built, (String, String)> {
        let key = |k: &str| format!("sources[{}].{k}", cx.index);
        let name = SourceName::parse(&self.name).map_err(|r| (key("name"), r))?;
        let scheme = self.scheme.as_str();
        if !verify::SCHEMES.contains(&scheme) {
            return Err((
                key("scheme"),
                format!(
                    "unknown scheme {scheme:?}; expected one of {}",
                    verify::SCHEMES.join(", ")
                ),
            ));
        }
        if self.secret_env.is_none() && verify::needs_secret(scheme) {
            return Err((
                key("secret_env"),
                format!("scheme {scheme:?} needs secret_env, the variable holding its secret"),
            ));
        }
        let (url, url_is_exact) = match self.url {
            Some(u) => {
                reqwest::Url::parse(&u)
                    .map_err(|e| (key("url"), format!("{u:?} is not a URL: {e}")))?;
                (u, true)
            }
            None => (
                format!("{}/webhooks/{}", cx.public_url, name.as_str()),
                false,
            ),
        };
        let body_limit = self.body_limit_bytes.unwrap_or(cx.default_body_limit);
        if body_limit == 0 {
            return Err((key("body_limit_bytes"), "must be at least 1".into()));
        }
        let rate_limit = match &self.rate_limit {
            Some(r) => Some(r.parse().map_err(|e| (key("rate_limit"), e))?),
            None => None,
        };
        let event_id_path = |p: &str| {
            EventIdPath::parse(p).map_err(|e| {
                (
                    key("event_id"),
                    format!("{p:?} is not an RFC 9535 JSONPath: {e}"),
                )
            })
        };
        let explicit_event_id = self.event_id.as_deref().map(event_id_path).transpose()?;
        let mut decode = decode::Limits::default();
        if let Some(f) = self.json_fields {
            decode.json_fields = f;
        }
        let mapping = self.mapping.map(|m| resolve(cx.base_dir, &m));

        let mut secrets = Vec::new();
        let mut missing: Vec<(&str, String)> = Vec::new();
        if let Some(list) = &self.secret_env {
            let names = list.names();
            if names.is_empty() {
                return Err((key("secret_env"), "names no variable".into()));
            }
            for var in names {
                match cx.env.get(var).filter(|v| !v.is_empty()) {
                    Some(v) => secrets.push(Secret::new(v.clone())),
                    None => missing.push(("secret_env", var.to_string())),
                }
            }
        }
        let public_key = match &self.public_key_env {
            Some(var) => match cx.env.get(var).filter(|v| !v.is_empty()) {
                Some(v) => Some(v.clone()),
                None => {
                    missing.push(("public_key_env", var.clone()));
                    None
                }
            },
            None => None,
        };
        let opts = SchemeOptions {
            header: self.header,
            algorithm: self.algorithm,
            encoding: self.encoding,
            prefix: self.prefix,
            template: self.template,
            timestamp_header: self.timestamp_header,
            timestamp_unit: self.timestamp_unit,
            id_header: self.id_header,
            tolerance_secs: self.tolerance_secs,
            param: self.param,
            username: self.username,
            public_key,
            version: self.version,
            url_check: self.url_check,
        };
        let option_error = |e: verify::OptionError| {
            let k = if e.key == "scheme" { "scheme" } else { e.key };
            (key(k), e.reason)
        };

        if let Some((which, _)) = missing.first() {
            let vars: Vec<&str> = missing.iter().map(|(_, v)| v.as_str()).collect();
            let reason = format!(
                "environment variable {} is not set (source {:?})",
                vars.join(", "),
                name.as_str()
            );
            let consequence = match (self.optional, cx.unset) {
                (true, _) => "the source is skipped until it is",
                (false, UnsetSecrets::Warn) => "`leadgate serve` refuses to start without it",
                (false, UnsetSecrets::Refuse) => return Err((key(which), reason)),
            };
            let warning = format!("{}: {reason}; {consequence}", key(which));
            if cx.unset == UnsetSecrets::Warn {
                // The scheme's options are still checked, with a stand-in for the secret.
                verify::check_options(scheme, &opts).map_err(option_error)?;
            }
            let skipped = SkippedSource {
                name,
                mapping,
                decode,
            };
            return Ok(Built::Skipped(skipped, warning));
        }

        let verifier = verify::build(scheme, &opts, secrets).map_err(option_error)?;
        let event_id = match explicit_event_id {
            Some(p) => Some(p),
            None => verifier
                .default_event_id_path()
                .map(event_id_path)
                .transpose()?,
        };
        Ok(Built::Ready(SourceConfig {
            name,
            verifier: Arc::from(verifier),
            url,
            url_is_exact,
            body_limit,
            rate_limit,
            event_id,
            mapping,
            decode,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_url_segments() {
        assert!(SourceName::parse("cal-com_2").is_ok());
        assert!(SourceName::parse("").is_err());
        assert!(SourceName::parse("Typeform").is_err());
        assert!(SourceName::parse("a/b").is_err());
    }

    #[test]
    fn a_rate_limit_becomes_a_quota_with_the_full_burst() {
        let r = RawRate {
            requests: 10,
            per_secs: 2,
        }
        .parse()
        .unwrap();
        let q = r.quota();
        assert_eq!(q.burst_size().get(), 10);
        assert_eq!(q.replenish_interval(), Duration::from_millis(200));
        assert!(RawRate {
            requests: 0,
            per_secs: 1
        }
        .parse()
        .is_err());
    }
}
