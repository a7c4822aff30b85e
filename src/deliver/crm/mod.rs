//! CRM connectors, one file each, behind [`Connector`]: a batch of lead snapshots in, one result
//! per record out. Connectors speak the CRM's real API (paths, auth, bodies, error shapes) and
//! feed its rate-limit headers back into the account's [`Limiter`]; every HTTP attempt goes
//! through [`Http::send`], which takes a rate-limit token first.

pub mod dry_run;
pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::limiter::Limiter;
use super::retry::{classify_transport, Failure};
use crate::config::{CrmConfig, CrmKind, RateLimit};
use crate::ingest::verify::Secret;
use crate::lead::FieldName;
use crate::outbox::CrmUpdate;

/// One lead as a connector sends it.
#[derive(Debug, Clone)]
pub struct Item {
    pub update: CrmUpdate,
    /// False when the stage would lower the one the CRM already has: everything but the stage
    /// is sent.
    pub send_stage: bool,
    /// The CRM's ids for this lead from earlier deliveries (`{"person_id": 1, "lead_id": "..."}`).
    pub crm_ref: Option<Value>,
}

impl Item {
    pub fn new(update: CrmUpdate) -> Self {
        Self {
            update,
            send_stage: true,
            crm_ref: None,
        }
    }
}

/// A record the CRM accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// New CRM ids to remember for this lead (replaces the stored ones), if any.
    pub crm_ref: Option<Value>,
}

/// A request a connector would send, for previews (`dry-run`, `leadgate map`): a
/// [`Request::preview`], so exactly what is sent, with credentials replaced by `<redacted>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreparedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The redaction placeholder for credentials in previews.
pub const REDACTED: &str = "<redacted>";

/// One HTTP request of a connector, described once: [`Http::send`] sends it and
/// [`Request::preview`] prints it, so a preview cannot drift from what is sent (the headers set,
/// the body, the query). The HTTP client adds only `host`, `content-length`, `accept` and
/// `user-agent`.
#[derive(Clone)]
pub struct Request {
    pub method: reqwest::Method,
    /// Full URL, query included.
    pub url: String,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Option<Value>,
}

#[derive(Clone)]
enum HeaderValue {
    Text(String),
    /// `prefix` + the secret; `None` only in previews (connectors built without credentials).
    Credential {
        prefix: &'static str,
        secret: Option<Secret>,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The preview is the redacted form.
        self.preview().fmt(f)
    }
}

impl Request {
    pub fn new(method: reqwest::Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// `url` with `pairs` as its query string, form-encoded.
    pub fn with_query(method: reqwest::Method, url: &str, pairs: &[(&str, &str)]) -> Self {
        let url = match reqwest::Url::parse(url) {
            Ok(mut u) if !pairs.is_empty() => {
                u.query_pairs_mut().extend_pairs(pairs);
                u.to_string()
            }
            _ => url.to_string(),
        };
        Self::new(method, url)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, HeaderValue::Text(value.into())));
        self
    }

    /// A header carrying a credential: `prefix` + the secret when sent, `prefix<redacted>` in a
    /// preview.
    pub fn credential(
        mut self,
        name: &'static str,
        prefix: &'static str,
        secret: Option<&Secret>,
    ) -> Self {
        let secret = secret.cloned();
        self.headers
            .push((name, HeaderValue::Credential { prefix, secret }));
        self
    }

    /// A JSON body, with the `content-type` header that says so.
    pub fn json(self, body: Value) -> Self {
        let mut r = self.header("content-type", "application/json");
        r.body = Some(body);
        r
    }

    /// What is sent, credentials redacted.
    pub fn preview(&self) -> PreparedRequest {
        PreparedRequest {
            method: self.method.to_string(),
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, v)| {
                    let shown = match v {
                        HeaderValue::Text(t) => t.clone(),
                        HeaderValue::Credential { prefix, .. } => format!("{prefix}{REDACTED}"),
                    };
                    (name.to_string(), shown)
                })
                .collect(),
            body: self.body.clone().unwrap_or(Value::Null),
        }
    }

    fn builder(
        &self,
        client: &reqwest::Client,
        crm: &str,
    ) -> Result<reqwest::RequestBuilder, Failure> {
        let mut b = client.request(self.method.clone(), &self.url);
        for (name, v) in &self.headers {
            b = match v {
                HeaderValue::Text(t) => b.header(*name, t),
                HeaderValue::Credential {
                    prefix,
                    secret: Some(s),
                } => b.header(*name, format!("{prefix}{}", s.expose())),
                HeaderValue::Credential { secret: None, .. } => {
                    return Err(Failure::Permanent(format!(
                        "{crm}: no credentials configured"
                    )))
                }
            };
        }
        if let Some(body) = &self.body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| Failure::Permanent(format!("{crm}: cannot encode the body: {e}")))?;
            b = b.body(bytes);
        }
        Ok(b)
    }
}

/// A CRM connector.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connector's name (`hubspot`, ...), used in dead letters, logs and metrics.
    fn name(&self) -> &'static str;
    /// Most records per [`send`](Self::send).
    fn batch_size(&self) -> usize;
    /// The CRM's documented quota, used when the settings give none.
    fn default_quota(&self) -> RateLimit;
    /// The requests `send` would make for a batch of new leads, without sending anything.
    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest>;
    /// Sends a batch; returns one result per item, in order.
    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>>;
}

/// Why a connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Config(String),
}

/// The HTTP client every connector sends through.
#[derive(Debug, Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub limiter: Arc<Limiter>,
    pub crm: &'static str,
}

/// An HTTP answer with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    /// The raw text when the body is not JSON (e.g. an HTML error page).
    pub text: String,
}

impl Http {
    pub fn new(
        crm: &'static str,
        limiter: Arc<Limiter>,
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            // An API or receiver that redirects a write is misconfigured (wrong base URL or
            // scheme); following it would resend the lead, credentials included, elsewhere. The
            // Standard Webhooks spec asks senders to treat 3xx as failures.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("leadgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        Ok(Self {
            client,
            limiter,
            crm,
        })
    }

    /// Sends a connector's [`Request`] (see [`execute`](Self::execute)).
    pub async fn send(&self, req: &Request) -> Result<Answer, Failure> {
        self.execute(req.builder(&self.client, self.crm)?).await
    }

    /// Takes a rate-limit token (or fails with the pause), sends, and reads the body. For the
    /// requests no preview shows (OAuth token exchanges); everything else is a [`Request`].
    pub async fn execute(&self, req: reqwest::RequestBuilder) -> Result<Answer, Failure> {
        if let Err(p) = self.limiter.acquire().await {
            return Err(Failure::Paused(format!(
                "{}: delivery paused ({})",
                self.crm,
                p.reason.as_str()
            )));
        }
        let count = |status: String| {
            metrics::counter!("leadgate_crm_requests_total", "crm" => self.crm, "status" => status)
                .increment(1);
        };
        let res = req.send().await.map_err(|e| {
            // No HTTP status: connection refused, timeout, TLS failure.
            count("error".into());
            classify_transport(self.crm, &e)
        })?;
        let status = res.status().as_u16();
        count(status.to_string());
        let headers = res.headers().clone();
        let text = res
            .text()
            .await
            .map_err(|e| classify_transport(self.crm, &e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
            text,
        })
    }
}

/// Header value as text.
pub(crate) fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Header value as a number.
pub(crate) fn header_num(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    header(h, name).and_then(|v| v.parse().ok())
}

/// A lead value as the string CRMs take for text properties; `None` for null/arrays/objects.
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short description for logs and dead letters of a body that is not JSON (never the body).
pub(crate) fn describe_text(text: &str) -> String {
    if text.trim_start().starts_with('<') {
        "an HTML page".to_string()
    } else if text.is_empty() {
        "an empty body".to_string()
    } else {
        format!("a {}-byte non-JSON body", text.len())
    }
}

/// The stage values sent for an update: the rules' values for this connector, else the usual
/// property for common stage names.
pub(crate) fn stage_values(
    update: &CrmUpdate,
    defaults: fn(&str) -> Vec<(&'static str, &'static str)>,
) -> BTreeMap<String, String> {
    if !update.stage_values.is_empty() {
        return update.stage_values.clone();
    }
    defaults(&update.stage.to_ascii_lowercase())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Lead fields mapped to CRM properties, in property-name order.
pub(crate) fn mapped_fields<'a>(
    update: &'a CrmUpdate,
    properties: &'a BTreeMap<FieldName, String>,
) -> impl Iterator<Item = (&'a str, &'a Value)> {
    properties
        .iter()
        .filter_map(|(field, prop)| update.fields.get(field).map(|v| (prop.as_str(), v)))
}

/// Builds the configured connector. `data_dir` is where `dry-run` records its requests.
pub fn build(
    config: &CrmConfig,
    limiter: Arc<Limiter>,
    data_dir: &Path,
) -> Result<Arc<dyn Connector>, BuildError> {
    let http = Http::new(kind_name(config.kind), limiter, config.timeout)?;
    Ok(match config.kind {
        CrmKind::DryRun => Arc::new(dry_run::DryRun::new(
            config,
            preview_connector(config)?,
            data_dir,
        )),
        kind => real(kind, config, http)?,
    })
}

fn real(kind: CrmKind, config: &CrmConfig, http: Http) -> Result<Arc<dyn Connector>, BuildError> {
    Ok(match kind {
        CrmKind::Hubspot => Arc::new(hubspot::HubSpot::new(config, http)),
        CrmKind::Salesforce => Arc::new(salesforce::Salesforce::new(config, http)),
        CrmKind::Pipedrive => Arc::new(pipedrive::Pipedrive::new(config, http)),
        CrmKind::Webhook => Arc::new(webhook::Webhook::new(config, http)?),
        CrmKind::DryRun => {
            return Err(BuildError::Config(
                "dry-run cannot preview itself".to_string(),
            ))
        }
    })
}

/// The connector whose requests a preview shows: the configured one, or for `dry-run` its
/// `dry_run_as` target built without credentials. It is only asked to `prepare`.
pub fn preview_connector(config: &CrmConfig) -> Result<Arc<dyn Connector>, BuildError> {
    let limiter = Arc::new(Limiter::new(&config.rate_limit));
    let http = Http::new(kind_name(config.target), limiter, config.timeout)?;
    real(config.target, config, http)
}

/// The exact requests the configured connector would send for `updates` (`leadgate map`).
pub fn preview(
    config: &CrmConfig,
    updates: &[CrmUpdate],
) -> Result<Vec<PreparedRequest>, BuildError> {
    let items: Vec<Item> = updates.iter().cloned().map(Item::new).collect();
    Ok(preview_connector(config)?.prepare(&items))
}

fn kind_name(kind: CrmKind) -> &'static str {
    kind.as_str()
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use serde_json::json;

    use crate::lead::{Email, FieldName};
    use crate::outbox::{Change, CrmUpdate};

    pub fn update(email: &str, stage: &str, rank: u32) -> CrmUpdate {
        let mut fields = BTreeMap::new();
        fields.insert(FieldName::parse("first_name").unwrap(), json!("Ada"));
        fields.insert(FieldName::parse("last_name").unwrap(), json!("Lovelace"));
        fields.insert(FieldName::parse("company").unwrap(), json!("Analytical"));
        fields.insert(FieldName::parse("company_size_min").unwrap(), json!(51));
        CrmUpdate {
            email: Email::parse(email).unwrap(),
            version: 1,
            fields,
            stage: stage.to_string(),
            stage_rank: rank,
            stage_values: BTreeMap::new(),
            fit_score: 40,
            engagement_score: 25,
            score: 65,
            reason: "fit 40; asked for a demo".into(),
            disqualified: None,
            changes: vec![Change::Created],
            at: None,
        }
    }
}
