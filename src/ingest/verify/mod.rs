//! Signature and token verification: one file per scheme behind [`Verifier`].
//!
//! Every scheme checks the exact bytes that arrived, compares in constant time (`Mac::verify_slice`
//! or `subtle`), and looks headers up case-insensitively. Each scheme can also *sign* a request the
//! way its provider does, which `leadgate send` and the tests use.

mod basic;
mod hmac;
mod hubspot;
mod mailgun;
mod mandrill;
mod presets;
mod sendgrid;
mod standard_webhooks;
mod stripe;
mod token;

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::hmac::{Hmac, Mac};
use actix_web::http::header::{HeaderMap, HeaderName};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

pub use self::hmac::{Algorithm, Encoding, HmacScheme, Template, TimestampUnit};

/// Default replay window, in both directions, for schemes that sign a timestamp.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The request as verification sees it: raw bytes, before any parsing.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub method: &'a str,
    /// The URL the provider was told to call, as configured. When `url_is_exact` is false it has no
    /// query string and the request's own query is appended for URL-signing schemes.
    pub url: &'a str,
    pub url_is_exact: bool,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now: SystemTime,
}

impl Inbound<'_> {
    /// The full URL a URL-signing provider (HubSpot v2/v3, Mandrill) computed its signature over.
    pub fn signed_url(&self) -> Cow<'_, str> {
        if self.url_is_exact || self.query.is_empty() {
            Cow::Borrowed(self.url)
        } else {
            Cow::Owned(format!("{}?{}", self.url, self.query))
        }
    }

    /// A header value as text; header names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header that must be present.
    pub fn require(&self, name: &str) -> Result<&str, VerifyError> {
        match self.headers.get(name) {
            None => Err(VerifyError::MissingHeader(name.to_string())),
            Some(v) => v
                .to_str()
                .map_err(|_| VerifyError::Malformed(name.to_string(), "not visible ASCII")),
        }
    }

    /// Seconds since the Unix epoch at the time of the check.
    pub fn now_secs(&self) -> i64 {
        unix_secs(self.now)
    }
}

/// A request about to be sent the way a provider sends it (`leadgate send`, tests).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub method: String,
    /// Full URL including any query string; a scheme may add a query parameter.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
    pub now: SystemTime,
}

impl Outbound {
    pub fn new(url: impl Into<String>, content_type: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            content_type: content_type.into(),
            body,
            now: SystemTime::now(),
        }
    }

    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self) -> &str {
        self.url.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// What a successful verification learnt about the delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's own delivery id when the scheme carries one (`webhook-id`, Mailgun `token`).
    pub event_id: Option<String>,
}

/// Why a request was refused. Every variant answers 401; the detail is logged, never returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed {0}: {1}")]
    Malformed(String, &'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp is {0} s old, outside the replay window")]
    Stale(i64),
    #[error("timestamp is {0} s in the future, outside the replay window")]
    Future(i64),
    #[error("missing credentials")]
    MissingCredentials,
    #[error("credentials do not match")]
    BadCredentials,
}

impl VerifyError {
    /// Stable machine code for the JSON error body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_signature",
            VerifyError::Malformed(..) | VerifyError::Mismatch => "invalid_signature",
            VerifyError::Stale(_) | VerifyError::Future(_) => "stale_timestamp",
            VerifyError::MissingCredentials => "missing_credentials",
            VerifyError::BadCredentials => "invalid_credentials",
        }
    }
}

/// Why `sign` could not produce a request.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("this scheme cannot sign: {0}")]
    Unsupported(&'static str),
    #[error("no secret configured")]
    NoSecret,
    #[error("{0}")]
    Invalid(String),
}

/// One webhook signature scheme, configured for one source.
pub trait Verifier: Send + Sync + fmt::Debug {
    /// The scheme's configured name (`typeform`, `hmac`, ...).
    fn scheme(&self) -> &str;
    /// Accepts or refuses a delivery.
    fn verify(&self, req: &Inbound<'_>) -> Result<Verified, VerifyError>;
    /// Signs an outgoing request with the first configured secret, as the provider would.
    fn sign(&self, req: &mut Outbound) -> Result<(), SignError>;
    /// Whether `GET`/`HEAD` on the source URL answer 200 (Mailchimp and Mandrill check URLs so).
    fn answers_url_check(&self) -> bool {
        false
    }
    /// The provider's event-id JSONPath used when the source sets none (`$.event_id` for Typeform).
    fn default_event_id_path(&self) -> Option<&'static str> {
        None
    }
}

/// One secret, never printed.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Options a source may give its scheme; which ones apply depends on the scheme.
#[derive(Debug, Default, Clone)]
pub struct SchemeOptions {
    pub header: Option<String>,
    pub algorithm: Option<String>,
    pub encoding: Option<String>,
    pub prefix: Option<String>,
    pub template: Option<String>,
    pub timestamp_header: Option<String>,
    pub timestamp_unit: Option<String>,
    pub id_header: Option<String>,
    pub tolerance_secs: Option<u64>,
    pub param: Option<String>,
    pub username: Option<String>,
    pub public_key: Option<String>,
    pub version: Option<String>,
    pub url_check: Option<bool>,
}

/// A scheme option that is wrong: which key and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct OptionError {
    pub key: &'static str,
    pub reason: String,
}

impl OptionError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Names accepted in a source's `scheme` key.
pub const SCHEMES: &[&str] = &[
    "hmac",
    "typeform",
    "tally",
    "webflow",
    "calendly",
    "stripe",
    "formstack",
    "cal-com",
    "klaviyo",
    "customer-io",
    "meta",
    "standard-webhooks",
    "hubspot",
    "mandrill",
    "mailgun",
    "sendgrid",
    "token",
    "basic",
];

/// Whether a scheme needs secrets (`sendgrid` uses a public key instead).
pub fn needs_secret(scheme: &str) -> bool {
    scheme != "sendgrid"
}

/// A stand-in secret every scheme's secret format accepts (a `whsec_` base64 key also works as
/// an HMAC key or a token); only ever used by [`check_options`], never to verify anything.
const STAND_IN_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks a scheme's options while its secret is not at hand (`leadgate check` validates the
/// settings, not the environment): the verifier is built with a stand-in secret and dropped.
/// SendGrid's verification key is itself the unset value, so without it nothing more is checked.
pub fn check_options(scheme: &str, opts: &SchemeOptions) -> Result<(), OptionError> {
    if !needs_secret(scheme) && opts.public_key.is_none() {
        return Ok(());
    }
    build(scheme, opts, vec![Secret::new(STAND_IN_SECRET)]).map(drop)
}

/// Builds the verifier for `scheme` from its options and secrets, parsing every option once.
pub fn build(
    scheme: &str,
    opts: &SchemeOptions,
    secrets: Vec<Secret>,
) -> Result<Box<dyn Verifier>, OptionError> {
    if needs_secret(scheme) && secrets.is_empty() {
        return Err(OptionError::new("secret_env", "this scheme needs a secret"));
    }
    let v: Box<dyn Verifier> = match scheme {
        "hmac" => Box::new(HmacScheme::from_options("hmac", None, opts, secrets)?),
        "calendly" | "stripe" => {
            Box::new(stripe::StripeScheme::from_options(scheme, opts, secrets)?)
        }
        "standard-webhooks" => Box::new(standard_webhooks::StandardWebhooks::from_options(
            opts, secrets,
        )?),
        "hubspot" => Box::new(hubspot::HubSpot::from_options(opts, secrets)?),
        "mandrill" => Box::new(mandrill::Mandrill::from_options(opts, secrets)?),
        "mailgun" => Box::new(mailgun::Mailgun::from_options(opts, secrets)?),
        "sendgrid" => Box::new(sendgrid::SendGrid::from_options(opts, secrets)?),
        "token" => Box::new(token::Token::from_options(opts, secrets)?),
        "basic" => Box::new(basic::Basic::from_options(opts, secrets)?),
        other => match presets::preset(other) {
            Some(p) => Box::new(HmacScheme::from_options(other, Some(p), opts, secrets)?),
            None => {
                return Err(OptionError::new(
                    "scheme",
                    format!(
                        "unknown scheme {other:?}; expected one of {}",
                        SCHEMES.join(", ")
                    ),
                ))
            }
        },
    };
    Ok(v)
}

// ---- helpers shared by the schemes ----

pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub(crate) fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Refuses timestamps outside `now ± tolerance` (both directions).
pub(crate) fn check_window(
    ts_secs: i64,
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let tol = tolerance.as_secs() as i64;
    let age = now_secs.saturating_sub(ts_secs);
    if age > tol {
        Err(VerifyError::Stale(age))
    } else if -age > tol {
        Err(VerifyError::Future(-age))
    } else {
        Ok(())
    }
}

pub(crate) fn tolerance(opts: &SchemeOptions, default: Duration) -> Duration {
    opts.tolerance_secs
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// Computes a MAC over the concatenation of `parts`.
pub(crate) fn mac<M: Mac + ::hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail for the HMAC types used here.
    let mut m = <M as ::hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Checks a MAC over `parts` against `tag` in constant time.
pub(crate) fn mac_matches<M: Mac + ::hmac::digest::KeyInit>(
    key: &[u8],
    parts: &[&[u8]],
    tag: &[u8],
) -> bool {
    let Ok(mut m) = <M as ::hmac::digest::KeyInit>::new_from_slice(key) else {
        return false;
    };
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

pub(crate) type HmacSha1 = Hmac<sha1::Sha1>;
pub(crate) type HmacSha256 = Hmac<sha2::Sha256>;
pub(crate) type HmacSha512 = Hmac<sha2::Sha512>;

pub(crate) fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Standard-alphabet base64 read the way Python's and Node's decoders read it: stray low bits in
/// the last symbol are ignored. The Standard Webhooks tests rely on that for unpadded secrets such
/// as `MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS`, which a strict decoder refuses.
const LENIENT_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::general_purpose::NO_PAD.with_decode_allow_trailing_bits(true),
);

/// Decodes base64 with or without padding (providers and the Standard Webhooks tests use both).
pub(crate) fn b64_decode_lenient(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim().trim_end_matches('=');
    LENIENT_B64.decode(trimmed).ok()
}

/// A configured header name, or an error naming the option that holds it.
pub(crate) fn header_name(key: &'static str, v: &str) -> Result<HeaderName, OptionError> {
    HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| OptionError::new(key, format!("{v:?} is not a valid header name")))
}

/// Reads the Unix-seconds timestamp `value` (from the header or field `name`) and refuses it
/// outside `now ± tolerance`.
pub(crate) fn check_unix_secs(
    name: &str,
    value: &str,
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts = value
        .trim()
        .parse::<i64>()
        .map_err(|_| VerifyError::Malformed(name.to_string(), "not a Unix timestamp"))?;
    check_window(ts, now_secs, tolerance)
}

/// The pairs of an `application/x-www-form-urlencoded` body, or `None` when a name or value is not
/// UTF-8 (a signature must never be checked over text the sender did not send).
pub(crate) fn form_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    crate::ingest::decode::form_pairs(body).ok()
}

/// Compares two secrets in constant time, whatever their lengths (hashing first hides the length).
pub(crate) fn ct_eq_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let a = sha2::Sha256::digest(given);
    let b = sha2::Sha256::digest(expected);
    a.ct_eq(&b).into()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
                HeaderValue::from_str(v).expect("test header value"),
            );
        }
        h
    }

    pub fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    pub fn at_ms(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    /// Turns a signed [`Outbound`] into the header map a server would see.
    pub fn headers_of(out: &Outbound) -> HeaderMap {
        let pairs: Vec<(&str, &str)> = out
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers(&pairs)
    }

    pub fn inbound<'a>(
        url: &'a str,
        query: &'a str,
        headers: &'a HeaderMap,
        body: &'a [u8],
        now: SystemTime,
    ) -> Inbound<'a> {
        Inbound {
            method: "POST",
            url,
            url_is_exact: false,
            query,
            headers,
            body,
            now,
        }
    }

    pub fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }
}
