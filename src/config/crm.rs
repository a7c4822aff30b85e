//! `[crm]`: which CRM connector delivers lead updates, and its settings.
//!
//! Every key has a default per connector (the CRM's documented quota, batch size and the usual
//! property names), so `kind` plus the credential variables is a working configuration. Secrets
//! are only named by environment variable (`token_env`, `client_id_env`, ...); a variable that is
//! not set stops start-up with an error naming the key and the variable.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::source::{RateLimit, RawRate};
use super::{non_zero, parse_base_url, EnvVars, UnsetSecrets};
use crate::ingest::verify::Secret;
use crate::lead::FieldName;
use crate::outbox::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrmKind {
    Hubspot,
    Salesforce,
    Pipedrive,
    Webhook,
    DryRun,
}

impl CrmKind {
    /// The name used in the settings and in rules files' per-connector stage values.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Hubspot => "hubspot",
            CrmKind::Salesforce => "salesforce",
            CrmKind::Pipedrive => "pipedrive",
            CrmKind::Webhook => "webhook",
            CrmKind::DryRun => "dry-run",
        }
    }

    /// The CRM's documented request quota for the smallest paid tier, used when
    /// `rate_limit` is not set (crm-apis.md §2.7, §3.5, §4.4).
    pub fn default_rate_limit(self) -> RateLimit {
        let (n, secs) = match self {
            // Free/Starter private apps: 100 per rolling 10 s.
            CrmKind::Hubspot => (100, 10),
            // No per-second limit; the smallest org allocation is 100,000 per rolling 24 h.
            CrmKind::Salesforce => (100_000, 86_400),
            // API token on the Lite plan: 20 per rolling 2 s.
            CrmKind::Pipedrive => (20, 2),
            CrmKind::Webhook => (50, 1),
            CrmKind::DryRun => (1000, 1),
        };
        rate(n, secs)
    }

    /// Records per request (HubSpot batch upsert 100, Salesforce collections 200); for
    /// connectors without a batch API, records handled per worker step.
    pub fn max_batch_size(self) -> usize {
        match self {
            CrmKind::Hubspot => 100,
            CrmKind::Salesforce => 200,
            CrmKind::Pipedrive | CrmKind::Webhook => 50,
            CrmKind::DryRun => 200,
        }
    }

    fn default_batch_size(self) -> usize {
        match self {
            CrmKind::Pipedrive | CrmKind::Webhook => 10,
            other => other.max_batch_size(),
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            CrmKind::Hubspot => Some("https://api.hubapi.com"),
            CrmKind::Pipedrive => Some("https://api.pipedrive.com"),
            // Salesforce: the org's My Domain URL; webhook: the receiver's URL. No guess is safe.
            _ => None,
        }
    }

    /// Lead field -> CRM property, the usual standard properties of each CRM.
    fn default_properties(self) -> &'static [(&'static str, &'static str)] {
        match self {
            CrmKind::Hubspot => &[
                ("first_name", "firstname"),
                ("last_name", "lastname"),
                ("company", "company"),
                ("job_title", "jobtitle"),
                ("phone", "phone"),
                ("country", "country"),
                ("industry", "industry"),
                ("website", "website"),
            ],
            CrmKind::Salesforce => &[
                ("first_name", "FirstName"),
                ("last_name", "LastName"),
                ("company", "Company"),
                ("job_title", "Title"),
                ("phone", "Phone"),
                ("country", "Country"),
                ("industry", "Industry"),
                ("website", "Website"),
                ("company_size_min", "NumberOfEmployees"),
                ("lead_source", "LeadSource"),
            ],
            // Person fields: `name` is built from the name parts in order, `phones` is a list.
            CrmKind::Pipedrive => &[
                ("first_name", "name"),
                ("last_name", "name"),
                ("phone", "phones"),
            ],
            CrmKind::Webhook | CrmKind::DryRun => &[],
        }
    }

    fn default_score_property(self) -> Option<&'static str> {
        match self {
            CrmKind::Hubspot => Some("leadgate_score"),
            CrmKind::Salesforce => Some("Leadgate_Score__c"),
            _ => None,
        }
    }

    fn default_reason_property(self) -> Option<&'static str> {
        match self {
            CrmKind::Hubspot => Some("leadgate_reason"),
            CrmKind::Salesforce => Some("Leadgate_Reason__c"),
            _ => None,
        }
    }

    fn default_token_env(self) -> Option<&'static str> {
        match self {
            CrmKind::Hubspot => Some("HUBSPOT_TOKEN"),
            CrmKind::Pipedrive => Some("PIPEDRIVE_TOKEN"),
            _ => None,
        }
    }

    /// Requests of the daily allowance left unused for other integrations of the same account.
    fn default_daily_reserve_percent(self) -> u8 {
        match self {
            CrmKind::Salesforce => 5,
            _ => 0,
        }
    }
}

fn rate(n: u32, secs: u64) -> RateLimit {
    RateLimit {
        requests: non_zero(n).unwrap_or(std::num::NonZeroU32::MIN),
        per: Duration::from_secs(secs),
    }
}

/// How the connector authenticates; every secret came from an environment variable.
#[derive(Debug, Clone)]
pub enum CrmAuth {
    /// dry-run: nothing is sent.
    None,
    /// A static bearer/API token (HubSpot private-app token or Service Key, Pipedrive API token).
    Token(Secret),
    /// HubSpot OAuth: refresh the access token with the refresh token before it expires.
    OAuthRefresh {
        token_url: String,
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
    },
    /// Salesforce OAuth 2.0 client credentials against the org's token endpoint.
    ClientCredentials {
        token_url: String,
        client_id: Secret,
        client_secret: Secret,
    },
    /// Generic webhook: the Standard Webhooks signing secret (`whsec_...`).
    SigningSecret(Secret),
}

/// When an undeliverable update gives up and goes to dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub max_age: Duration,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

/// Salesforce-only settings.
#[derive(Debug, Clone)]
pub struct SalesforceSettings {
    pub api_version: String,
    /// The Lead external-id field upserts match on; it holds the lead's email.
    pub external_id_field: String,
    /// Written to `LastName`/`Company` when the lead has none, since Salesforce requires both
    /// (Web-to-Lead writes the same `[not provided]`); `""` sends nothing instead.
    pub placeholder: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CrmConfig {
    pub kind: CrmKind,
    /// For `dry-run`: whose requests are recorded (default `hubspot`). Otherwise equal to `kind`.
    pub target: CrmKind,
    /// API base (or, for `webhook`, the URL posted to), without a trailing slash.
    pub base_url: String,
    pub auth: CrmAuth,
    /// The variables holding the credentials, as `VAR (crm.key)` (names, never values), for
    /// the message an operator sees when the CRM refuses them.
    pub credentials: String,
    pub rate_limit: RateLimit,
    /// Pipedrive's person search has its own, lower limit.
    pub search_rate_limit: RateLimit,
    pub batch_size: usize,
    pub timeout: Duration,
    pub retry: RetrySettings,
    /// How long the worker sleeps when nothing is due and nothing woke it.
    pub poll_interval: Duration,
    /// How long the delivery lease lasts unless renewed: a silently dead deliverer is replaced
    /// after about this long (several replicas on PostgreSQL).
    pub lease_ttl: Duration,
    /// Share of the daily allowance never used (Salesforce `Sforce-Limit-Info`, HubSpot and
    /// Pipedrive daily headers): delivery pauses when less than this is left.
    pub daily_reserve_percent: u8,
    /// How long to pause when the daily allowance is used up and the CRM gives no reset time.
    pub daily_pause: Duration,
    /// Lead field -> CRM property.
    pub properties: BTreeMap<FieldName, String>,
    pub score_property: Option<String>,
    pub reason_property: Option<String>,
    /// Which changes queue an update.
    pub queue_on: Vec<Change>,
    pub salesforce: SalesforceSettings,
}

impl CrmConfig {
    /// Whether an update with these changes should be queued (the pipeline asks before enqueueing).
    pub fn queues(&self, changes: &[Change]) -> bool {
        changes.iter().any(|c| self.queue_on.contains(c))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrm {
    #[serde(default = "dry_run")]
    kind: CrmKind,
    dry_run_as: Option<CrmKind>,
    base_url: Option<String>,
    /// Webhook only: the URL posted to (same as `base_url`).
    url: Option<String>,
    token_env: Option<String>,
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
    refresh_token_env: Option<String>,
    token_url: Option<String>,
    secret_env: Option<String>,
    rate_limit: Option<RawRate>,
    search_rate_limit: Option<RawRate>,
    batch_size: Option<usize>,
    timeout_secs: Option<u64>,
    poll_interval_ms: Option<u64>,
    lease_ttl_secs: Option<u64>,
    daily_reserve_percent: Option<u8>,
    daily_pause_secs: Option<u64>,
    #[serde(default)]
    retry: RawRetry,
    /// Lead field -> CRM property; merged over the connector's defaults, `""` removes one.
    #[serde(default)]
    properties: BTreeMap<String, String>,
    score_property: Option<String>,
    reason_property: Option<String>,
    queue_on: Option<Vec<Change>>,
    api_version: Option<String>,
    external_id_field: Option<String>,
    placeholder: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    max_attempts: u32,
    max_age_secs: u64,
    base_backoff_ms: u64,
    max_backoff_secs: u64,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_age_secs: 3 * 86_400,
            base_backoff_ms: 1000,
            max_backoff_secs: 600,
        }
    }
}

fn dry_run() -> CrmKind {
    CrmKind::DryRun
}

type KeyError = (String, String);

fn key_err(key: &str, reason: impl Into<String>) -> KeyError {
    (format!("crm.{key}"), reason.into())
}

/// Reads the secrets the connector needs; an unset variable is an error, or, while only checking
/// the settings ([`UnsetSecrets::Warn`]), a warning.
struct Secrets<'a> {
    env: &'a EnvVars,
    kind: CrmKind,
    unset: UnsetSecrets,
    warnings: &'a mut Vec<String>,
    /// `VAR (crm.key)` for each variable read, for messages about refused credentials.
    named: Vec<String>,
}

impl Secrets<'_> {
    /// The secret in `var` (named by `key`); `None` when it is unset and that is only a warning.
    fn get(&mut self, key: &str, var: &str) -> Result<Option<Secret>, KeyError> {
        self.named.push(format!("{var} (crm.{key})"));
        if let Some(v) = self.env.get(var).filter(|v| !v.is_empty()) {
            return Ok(Some(Secret::new(v.clone())));
        }
        let (key, reason) = key_err(
            key,
            format!(
                "environment variable {var} is not set (needed by the {} connector)",
                self.kind.as_str()
            ),
        );
        match self.unset {
            UnsetSecrets::Refuse => Err((key, reason)),
            UnsetSecrets::Warn => {
                self.warnings.push(format!(
                    "{key}: {reason}; `leadgate serve` refuses to start without it"
                ));
                Ok(None)
            }
        }
    }
}

fn required<'a>(v: &'a Option<String>, key: &str, kind: CrmKind) -> Result<&'a str, KeyError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| key_err(key, format!("required for the {} connector", kind.as_str())))
}

/// Parses the `[crm]` table; errors are `(dotted key, reason)`.
pub(super) fn parse(
    table: toml::Table,
    env: &EnvVars,
    unset: UnsetSecrets,
    warnings: &mut Vec<String>,
) -> Result<CrmConfig, KeyError> {
    let raw: RawCrm = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| (format!("crm.{}", e.path()), e.inner().message().to_string()))?;
    let kind = raw.kind;
    if raw.dry_run_as.is_some() && kind != CrmKind::DryRun {
        return Err(key_err("dry_run_as", "only applies to kind = \"dry-run\""));
    }
    let target = match raw.dry_run_as {
        Some(CrmKind::DryRun) => return Err(key_err("dry_run_as", "must name a real connector")),
        Some(t) => t,
        None if kind == CrmKind::DryRun => CrmKind::Hubspot,
        None => kind,
    };

    let base_raw = match (kind, &raw.url, &raw.base_url) {
        (CrmKind::Webhook, Some(u), _) => Some(u.clone()),
        (_, Some(_), _) if kind != CrmKind::Webhook => {
            return Err(key_err(
                "url",
                "only applies to kind = \"webhook\"; use base_url",
            ))
        }
        (_, _, Some(b)) => Some(b.clone()),
        _ => target.default_base_url().map(str::to_string),
    };
    let base_url = match base_raw {
        Some(b) => {
            let key = if kind == CrmKind::Webhook { "url" } else { "base_url" };
            parse_base_url_allow_query(&b, kind).map_err(|r| key_err(key, r))?
        }
        None if kind == CrmKind::DryRun => "https://crm.invalid".to_string(),
        None if kind == CrmKind::Webhook => {
            return Err(key_err("url", "required for the webhook connector"))
        }
        None => {
            return Err(key_err(
                "base_url",
                format!(
                    "required for the {} connector (your org's My Domain URL, e.g. https://acme.my.salesforce.com)",
                    kind.as_str()
                ),
            ))
        }
    };

    let mut secrets = Secrets {
        env,
        kind,
        unset,
        warnings,
        named: Vec::new(),
    };
    // Any credential left unset (only possible while checking) means no credentials at all.
    let auth = match kind {
        CrmKind::DryRun => CrmAuth::None,
        CrmKind::Hubspot if raw.refresh_token_env.is_some() => {
            let token_url = raw
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{base_url}/oauth/v1/token"));
            let id = required(&raw.client_id_env, "client_id_env", kind)?;
            let secret = required(&raw.client_secret_env, "client_secret_env", kind)?;
            let refresh = required(&raw.refresh_token_env, "refresh_token_env", kind)?;
            match (
                secrets.get("client_id_env", id)?,
                secrets.get("client_secret_env", secret)?,
                secrets.get("refresh_token_env", refresh)?,
            ) {
                (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                    CrmAuth::OAuthRefresh {
                        token_url,
                        client_id,
                        client_secret,
                        refresh_token,
                    }
                }
                _ => CrmAuth::None,
            }
        }
        CrmKind::Hubspot | CrmKind::Pipedrive => {
            let var = raw
                .token_env
                .clone()
                .or_else(|| kind.default_token_env().map(str::to_string))
                .unwrap_or_default();
            secrets
                .get("token_env", &var)?
                .map_or(CrmAuth::None, CrmAuth::Token)
        }
        CrmKind::Salesforce => {
            let id_var = raw
                .client_id_env
                .clone()
                .unwrap_or_else(|| "SALESFORCE_CLIENT_ID".into());
            let secret_var = raw
                .client_secret_env
                .clone()
                .unwrap_or_else(|| "SALESFORCE_CLIENT_SECRET".into());
            let token_url = raw
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{base_url}/services/oauth2/token"));
            match (
                secrets.get("client_id_env", &id_var)?,
                secrets.get("client_secret_env", &secret_var)?,
            ) {
                (Some(client_id), Some(client_secret)) => CrmAuth::ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                },
                _ => CrmAuth::None,
            }
        }
        CrmKind::Webhook => {
            let var = required(&raw.secret_env, "secret_env", kind)?;
            secrets
                .get("secret_env", var)?
                .map_or(CrmAuth::None, CrmAuth::SigningSecret)
        }
    };

    let rate_limit = match &raw.rate_limit {
        Some(r) => r.parse().map_err(|e| key_err("rate_limit", e))?,
        None => kind.default_rate_limit(),
    };
    let search_rate_limit = match &raw.search_rate_limit {
        Some(r) => r.parse().map_err(|e| key_err("search_rate_limit", e))?,
        // Pipedrive's search API: 10 per 2 s on every plan.
        None => rate(10, 2),
    };
    let max_batch = target.max_batch_size();
    let batch_size = raw.batch_size.unwrap_or(target.default_batch_size());
    if batch_size == 0 || batch_size > max_batch {
        return Err(key_err(
            "batch_size",
            format!(
                "must be between 1 and {max_batch} for the {} connector",
                target.as_str()
            ),
        ));
    }
    let timeout = Duration::from_secs(raw.timeout_secs.unwrap_or(30));
    if timeout.is_zero() {
        return Err(key_err("timeout_secs", "must be at least 1"));
    }
    let poll_interval = Duration::from_millis(raw.poll_interval_ms.unwrap_or(1000));
    if poll_interval.is_zero() {
        return Err(key_err("poll_interval_ms", "must be at least 1"));
    }
    // Below 2 s a renewal's round trip eats too much of the window; above 5 minutes failover
    // would take that long.
    let lease_ttl = Duration::from_secs(raw.lease_ttl_secs.unwrap_or(15));
    if !(2..=300).contains(&lease_ttl.as_secs()) {
        return Err(key_err("lease_ttl_secs", "must be between 2 and 300"));
    }
    let daily_reserve_percent = raw
        .daily_reserve_percent
        .unwrap_or(target.default_daily_reserve_percent());
    if daily_reserve_percent >= 100 {
        return Err(key_err("daily_reserve_percent", "must be below 100"));
    }
    let r = &raw.retry;
    if r.max_attempts == 0 || r.max_age_secs == 0 || r.base_backoff_ms == 0 {
        return Err(key_err(
            "retry",
            "max_attempts, max_age_secs and base_backoff_ms must be at least 1",
        ));
    }
    let retry = RetrySettings {
        max_attempts: r.max_attempts,
        max_age: Duration::from_secs(r.max_age_secs),
        base_backoff: Duration::from_millis(r.base_backoff_ms),
        max_backoff: Duration::from_secs(r.max_backoff_secs)
            .max(Duration::from_millis(r.base_backoff_ms)),
    };

    let mut properties: BTreeMap<FieldName, String> = target
        .default_properties()
        .iter()
        .filter_map(|(f, p)| Some((FieldName::parse(f).ok()?, p.to_string())))
        .collect();
    for (field, prop) in &raw.properties {
        let name =
            FieldName::parse(field).map_err(|e| key_err(&format!("properties.{field}"), e))?;
        if prop.is_empty() {
            properties.remove(&name);
        } else {
            properties.insert(name, prop.clone());
        }
    }
    let optional_name = |v: &Option<String>, d: Option<&str>| -> Option<String> {
        match v {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s.clone()),
            None => d.map(str::to_string),
        }
    };
    let score_property = optional_name(&raw.score_property, target.default_score_property());
    let reason_property = optional_name(&raw.reason_property, target.default_reason_property());
    let queue_on = raw
        .queue_on
        .clone()
        .unwrap_or_else(|| vec![Change::Created, Change::StageChanged, Change::ScoreChanged]);

    let salesforce = SalesforceSettings {
        api_version: raw.api_version.clone().unwrap_or_else(|| "62.0".into()),
        external_id_field: raw
            .external_id_field
            .clone()
            .unwrap_or_else(|| "Leadgate_Id__c".into()),
        placeholder: optional_name(&raw.placeholder, Some("[not provided]")),
    };
    if !salesforce
        .api_version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(key_err("api_version", "must look like 62.0"));
    }

    Ok(CrmConfig {
        kind,
        target,
        base_url,
        auth,
        credentials: secrets.named.join(", "),
        rate_limit,
        search_rate_limit,
        batch_size,
        timeout,
        retry,
        poll_interval,
        lease_ttl,
        daily_reserve_percent,
        daily_pause: Duration::from_secs(raw.daily_pause_secs.unwrap_or(3600).max(1)),
        properties,
        score_property,
        reason_property,
        queue_on,
        salesforce,
    })
}

/// Like [`parse_base_url`], but a webhook URL may carry a query string.
fn parse_base_url_allow_query(s: &str, kind: CrmKind) -> Result<String, String> {
    if kind == CrmKind::Webhook {
        let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("{s:?} must be an http or https URL"));
        }
        return Ok(s.to_string());
    }
    parse_base_url(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvVars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_str(text: &str, e: &EnvVars) -> Result<CrmConfig, KeyError> {
        parse(
            text.parse().unwrap(),
            e,
            UnsetSecrets::Refuse,
            &mut Vec::new(),
        )
    }

    #[test]
    fn no_crm_section_is_a_dry_run_of_hubspot_requests() {
        let c = parse_str("", &env(&[])).unwrap();
        assert_eq!(c.kind, CrmKind::DryRun);
        assert_eq!(c.target, CrmKind::Hubspot);
        assert_eq!(c.batch_size, 100);
        assert!(matches!(c.auth, CrmAuth::None));
    }

    #[test]
    fn hubspot_defaults_to_its_documented_quota_and_properties() {
        let c = parse_str("kind = \"hubspot\"", &env(&[("HUBSPOT_TOKEN", "pat")])).unwrap();
        assert_eq!(c.base_url, "https://api.hubapi.com");
        assert_eq!(c.rate_limit.requests.get(), 100);
        assert_eq!(c.rate_limit.per, Duration::from_secs(10));
        assert_eq!(
            c.properties[&FieldName::parse("job_title").unwrap()],
            "jobtitle"
        );
        assert_eq!(c.score_property.as_deref(), Some("leadgate_score"));
        assert!(c.queues(&[Change::StageChanged]));
        assert!(!c.queues(&[Change::FieldsChanged]));
    }

    #[test]
    fn a_missing_secret_names_the_key_and_the_variable() {
        let e = parse_str("kind = \"hubspot\"\ntoken_env = \"HS\"", &env(&[])).unwrap_err();
        assert_eq!(e.0, "crm.token_env");
        assert!(e.1.contains("HS"), "{e:?}");
        let e = parse_str(
            "kind = \"salesforce\"\nbase_url = \"https://acme.my.salesforce.com\"",
            &env(&[("SALESFORCE_CLIENT_ID", "id")]),
        )
        .unwrap_err();
        assert_eq!(e.0, "crm.client_secret_env");
        assert!(e.1.contains("SALESFORCE_CLIENT_SECRET"), "{e:?}");
        let e = parse_str("kind = \"salesforce\"", &env(&[])).unwrap_err();
        assert_eq!(e.0, "crm.base_url");
    }

    #[test]
    fn properties_merge_over_defaults_and_empty_removes() {
        let c = parse_str(
            "kind = \"hubspot\"\nscore_property = \"\"\n[properties]\nphone = \"\"\n\"custom.timeline\" = \"timeline\"",
            &env(&[("HUBSPOT_TOKEN", "x")]),
        )
        .unwrap();
        assert!(!c
            .properties
            .contains_key(&FieldName::parse("phone").unwrap()));
        assert_eq!(
            c.properties[&FieldName::parse("custom.timeline").unwrap()],
            "timeline"
        );
        assert_eq!(c.score_property, None);
        let e = parse_str(
            "kind = \"hubspot\"\n[properties]\njobtitle = \"x\"",
            &env(&[("HUBSPOT_TOKEN", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.0, "crm.properties.jobtitle");
    }

    #[test]
    fn batch_size_is_bounded_by_the_api() {
        let e = parse_str(
            "kind = \"hubspot\"\nbatch_size = 101",
            &env(&[("HUBSPOT_TOKEN", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.0, "crm.batch_size");
    }

    #[test]
    fn webhook_needs_a_url_and_a_signing_secret() {
        let e = parse_str(
            "kind = \"webhook\"\nsecret_env = \"S\"",
            &env(&[("S", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.0, "crm.url");
        let c = parse_str(
            "kind = \"webhook\"\nurl = \"https://hooks.example.com/in?x=1\"\nsecret_env = \"S\"",
            &env(&[("S", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]),
        )
        .unwrap();
        assert_eq!(c.base_url, "https://hooks.example.com/in?x=1");
    }
}
