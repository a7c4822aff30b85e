//! Salesforce: OAuth 2.0 client credentials against the org's token endpoint (the answer names
//! the `instance_url` to call), then Lead upserts by an external-id field through sObject
//! Collections — `PATCH /services/data/vXX.X/composite/sobjects/Lead/{ExtField}`, up to 200
//! records, results in request order. A `401 INVALID_SESSION_ID` refreshes the token once.
//! Salesforce sends no 429: `Sforce-Limit-Info: api-usage=N/M` is read on every answer and
//! delivery pauses before the daily allowance runs out; `403 REQUEST_LIMIT_EXCEEDED` pauses too.
//! (crm-apis.md §3.)

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{
    header, mapped_fields, stage_values, Answer, Connector, Delivered, Http, Item, PreparedRequest,
    Request,
};
use crate::config::{CrmAuth, CrmConfig, CrmKind, RateLimit, SalesforceSettings};
use crate::deliver::limiter::PauseReason;
use crate::deliver::retry::Failure;
use crate::ingest::verify::Secret;
use crate::lead::FieldName;

/// `ConcurrentRequests` limit: long-running requests elsewhere in the org; short wait.
const CONCURRENCY_PAUSE: Duration = Duration::from_secs(10);

/// The default Lead `Status` for common stage names when the rules give no Salesforce values
/// (the picklist values of a new org).
fn default_stage_values(stage: &str) -> Vec<(&'static str, &'static str)> {
    let v = match stage {
        "subscriber" | "contact" | "suspect" | "lead" | "inquiry" | "mql" => "Open - Not Contacted",
        "sql" | "sal" | "opportunity" => "Working - Contacted",
        "disqualified" => "Closed - Not Converted",
        _ => return Vec::new(),
    };
    vec![("Status", v)]
}

#[derive(Debug, Clone)]
struct Session {
    access_token: Secret,
    instance_url: String,
}

#[derive(Debug)]
pub struct Salesforce {
    http: Http,
    base: String,
    token_url: String,
    client_id: Option<Secret>,
    client_secret: Option<Secret>,
    settings: SalesforceSettings,
    properties: BTreeMap<FieldName, String>,
    score_property: Option<String>,
    reason_property: Option<String>,
    batch_size: usize,
    daily_reserve_percent: u8,
    daily_pause: Duration,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The credentials' variables, for the refused-credentials alarm.
    credentials: String,
}

impl Salesforce {
    pub fn new(config: &CrmConfig, http: Http) -> Self {
        let (token_url, client_id, client_secret) = match &config.auth {
            CrmAuth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => (
                token_url.clone(),
                Some(client_id.clone()),
                Some(client_secret.clone()),
            ),
            _ => (
                format!("{}/services/oauth2/token", config.base_url),
                None,
                None,
            ),
        };
        Self {
            http,
            base: config.base_url.clone(),
            token_url,
            client_id,
            client_secret,
            settings: config.salesforce.clone(),
            properties: config.properties.clone(),
            score_property: config.score_property.clone(),
            reason_property: config.reason_property.clone(),
            batch_size: config.batch_size,
            daily_reserve_percent: config.daily_reserve_percent,
            daily_pause: config.daily_pause,
            session: tokio::sync::Mutex::new(None),
            credentials: config.credentials.clone(),
        }
    }

    fn path(&self) -> String {
        format!(
            "/services/data/v{}/composite/sobjects/Lead/{}",
            self.settings.api_version, self.settings.external_id_field
        )
    }

    /// The sObject Collections upsert body: `allOrNone: false`, so each record stands alone.
    pub fn body(&self, batch: &[Item]) -> Value {
        let records: Vec<Value> = batch
            .iter()
            .map(|i| Value::Object(self.record(i)))
            .collect();
        json!({ "allOrNone": false, "records": records })
    }

    fn record(&self, item: &Item) -> Map<String, Value> {
        let u = &item.update;
        let mut r = Map::new();
        r.insert("attributes".into(), json!({ "type": "Lead" }));
        for (prop, v) in mapped_fields(u, &self.properties) {
            if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                r.insert(prop.to_string(), v.clone());
            }
        }
        if let Some(p) = &self.settings.placeholder {
            // Salesforce requires both on create; Web-to-Lead fills them the same way.
            for required in ["LastName", "Company"] {
                if !r.contains_key(required) {
                    r.insert(required.into(), Value::String(p.clone()));
                }
            }
        }
        if item.send_stage {
            for (k, v) in stage_values(u, default_stage_values) {
                r.insert(k, Value::String(v));
            }
        }
        if let Some(p) = &self.score_property {
            r.insert(p.clone(), json!(u.score));
        }
        if let Some(p) = &self.reason_property {
            // Text fields default to 255 characters; a longer reason would fail the record.
            let reason: String = u.reason.chars().take(255).collect();
            r.insert(p.clone(), Value::String(reason));
        }
        r.insert("Email".into(), Value::String(u.email.as_str().to_string()));
        r.insert(
            self.settings.external_id_field.clone(),
            Value::String(u.email.as_str().to_string()),
        );
        r
    }

    /// The cached session, or a new one from the token endpoint (single-flight).
    async fn session(&self, stale: Option<&Secret>) -> Result<Session, Failure> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            let same_as_stale = stale.is_some_and(|t| t.expose() == s.access_token.expose());
            if !same_as_stale {
                return Ok(s.clone());
            }
        }
        *guard = None;
        let (Some(id), Some(secret)) = (&self.client_id, &self.client_secret) else {
            return Err(Failure::Permanent(
                "salesforce: no credentials configured".into(),
            ));
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id.expose()),
            ("client_secret", secret.expose()),
        ];
        let a = self
            .http
            .execute(self.http.client.post(&self.token_url).form(&form))
            .await?;
        let token = a.body.get("access_token").and_then(Value::as_str);
        let instance = a.body.get("instance_url").and_then(Value::as_str);
        match (a.status, token, instance) {
            (200, Some(t), Some(u)) => {
                tracing::info!(crm = "salesforce", "obtained an access token");
                let s = Session {
                    access_token: Secret::new(t),
                    instance_url: u.trim_end_matches('/').to_string(),
                };
                *guard = Some(s.clone());
                Ok(s)
            }
            (s, ..) if s >= 500 => Err(Failure::Transient(format!(
                "salesforce: token endpoint answered {s}"
            ))),
            (s, ..) => {
                // invalid_client / invalid_grant: a configuration problem, not the records'.
                let why = a
                    .body
                    .get("error_description")
                    .or_else(|| a.body.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                self.http
                    .limiter
                    .credentials_refused("salesforce", s, &self.fix_credentials());
                Err(Failure::Paused(format!(
                    "salesforce: token request refused ({s}): {why}"
                )))
            }
        }
    }

    /// The sObject Collections upsert against `instance` (`token`: None in previews).
    fn upsert_request(&self, instance: &str, batch: &[Item], token: Option<&Secret>) -> Request {
        Request::new(Method::PATCH, format!("{instance}{}", self.path()))
            .credential("authorization", "Bearer ", token)
            .json(self.body(batch))
    }

    async fn upsert(&self, session: &Session, batch: &[Item]) -> Result<Answer, Failure> {
        let req = self.upsert_request(&session.instance_url, batch, Some(&session.access_token));
        let a = self.http.send(&req).await?;
        self.observe_usage(&a.headers);
        Ok(a)
    }

    /// `Sforce-Limit-Info: api-usage=N/M`: pause once fewer than the reserve are left.
    fn observe_usage(&self, h: &reqwest::header::HeaderMap) {
        let Some((used, limit)) = header(h, "sforce-limit-info").and_then(parse_limit_info) else {
            return;
        };
        let reserve = limit * u64::from(self.daily_reserve_percent) / 100;
        if limit > 0 && used.saturating_add(reserve) >= limit {
            tracing::warn!(
                crm = "salesforce",
                api_used = used,
                api_limit = limit,
                pause_secs = self.daily_pause.as_secs(),
                "daily API allowance used up to the reserve; pausing delivery"
            );
            self.http
                .limiter
                .pause_for(self.daily_pause, PauseReason::DailyLimit);
        }
    }

    /// What the operator fixes when Salesforce refuses the credentials.
    fn fix_credentials(&self) -> String {
        format!(
            "check the connected app's consumer key and secret in {} (client credentials flow enabled, a run-as user allowed to edit Leads), then restart; delivery is retried every minute meanwhile",
            self.credentials
        )
    }

    fn whole_request_failure(&self, a: &Answer) -> Failure {
        let errors = errors_text(&a.body, "errorCode");
        let code = first_code(&a.body, "errorCode");
        match (a.status, code.as_deref()) {
            (_, Some("REQUEST_LIMIT_EXCEEDED")) => {
                let concurrent = errors.contains("ConcurrentRequests");
                let wait = if concurrent {
                    CONCURRENCY_PAUSE
                } else {
                    self.daily_pause
                };
                let reason = if concurrent {
                    PauseReason::RateLimited
                } else {
                    PauseReason::DailyLimit
                };
                tracing::warn!(
                    crm = "salesforce",
                    wait_secs = wait.as_secs(),
                    "request limit exceeded; pausing delivery"
                );
                self.http.limiter.pause_for(wait, reason);
                Failure::Paused(format!("salesforce {}: {errors}", a.status))
            }
            (401 | 403, _) => {
                self.http.limiter.credentials_refused(
                    "salesforce",
                    a.status,
                    &self.fix_credentials(),
                );
                Failure::Paused(format!("salesforce {}: {errors}", a.status))
            }
            (s, _) if s >= 500 || s == 408 => {
                Failure::Transient(format!("salesforce {s}: {errors}"))
            }
            (s, _) => Failure::Permanent(format!("salesforce {s}: {errors}")),
        }
    }
}

/// Parses `api-usage=10018/100000` (other `; key=value` parts may follow).
pub fn parse_limit_info(v: &str) -> Option<(u64, u64)> {
    v.split(';').find_map(|part| {
        let (k, rest) = part.trim().split_once('=')?;
        if k.trim() != "api-usage" {
            return None;
        }
        let (used, limit) = rest.trim().split_once('/')?;
        Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
    })
}

/// `CODE: message (fields)` for every error of a Salesforce error array; `code_key` is
/// `errorCode` for whole-request errors and `statusCode` inside collection results.
fn errors_text(v: &Value, code_key: &str) -> String {
    let Some(list) = v.as_array() else {
        return "no error details".to_string();
    };
    let parts: Vec<String> = list
        .iter()
        .map(|e| {
            let code = e.get(code_key).and_then(Value::as_str).unwrap_or("UNKNOWN");
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
            let fields: Vec<&str> = e
                .get("fields")
                .and_then(Value::as_array)
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if fields.is_empty() {
                format!("{code}: {msg}")
            } else {
                format!("{code}: {msg} ({})", fields.join(", "))
            }
        })
        .collect();
    if parts.is_empty() {
        "no error details".to_string()
    } else {
        parts.join("; ")
    }
}

fn first_code(v: &Value, code_key: &str) -> Option<String> {
    v.as_array()?
        .first()?
        .get(code_key)?
        .as_str()
        .map(str::to_string)
}

/// One collection result (`{id, success, errors[{statusCode, message, fields}], created}`).
fn record_result(r: &Value) -> Result<Delivered, Failure> {
    if r.get("success").and_then(Value::as_bool) == Some(true) {
        return Ok(Delivered {
            crm_ref: r
                .get("id")
                .and_then(Value::as_str)
                .map(|id| json!({ "lead_id": id })),
        });
    }
    let errors = r.get("errors").cloned().unwrap_or(Value::Null);
    let text = format!("salesforce: {}", errors_text(&errors, "statusCode"));
    let codes: Vec<&str> = errors
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e.get("statusCode").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let retryable = codes
        .iter()
        .any(|c| *c == "UNABLE_TO_LOCK_ROW" || *c == "SERVER_UNAVAILABLE")
        || (codes.contains(&"CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY")
            && (text.contains("UNABLE_TO_LOCK_ROW") || text.contains("Too many SOQL queries")));
    if codes.contains(&"REQUEST_LIMIT_EXCEEDED") {
        Err(Failure::Paused(text))
    } else if retryable {
        Err(Failure::Transient(text))
    } else {
        Err(Failure::Permanent(text))
    }
}

#[async_trait]
impl Connector for Salesforce {
    fn name(&self) -> &'static str {
        "salesforce"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn default_quota(&self) -> RateLimit {
        CrmKind::Salesforce.default_rate_limit()
    }

    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest> {
        batch
            .chunks(self.batch_size.max(1))
            .map(|chunk| self.upsert_request(&self.base, chunk, None).preview())
            .collect()
    }

    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>> {
        let all = |f: Failure| batch.iter().map(|_| Err(f.clone())).collect::<Vec<_>>();
        let mut session = match self.session(None).await {
            Ok(s) => s,
            Err(f) => return all(f),
        };
        let mut answer = match self.upsert(&session, batch).await {
            Ok(a) => a,
            Err(f) => return all(f),
        };
        if answer.status == 401
            && first_code(&answer.body, "errorCode").as_deref() == Some("INVALID_SESSION_ID")
        {
            // Sessions end with the org's timeout and carry no expiry: refresh once and resend.
            tracing::info!(
                crm = "salesforce",
                "session expired; refreshing the access token"
            );
            session = match self.session(Some(&session.access_token)).await {
                Ok(s) => s,
                Err(f) => return all(f),
            };
            answer = match self.upsert(&session, batch).await {
                Ok(a) => a,
                Err(f) => return all(f),
            };
        }
        match (answer.status, answer.body.as_array()) {
            (200, Some(results)) if results.len() == batch.len() => {
                results.iter().map(record_result).collect()
            }
            (200, _) => all(Failure::Transient(
                "salesforce: the answer does not list one result per record".into(),
            )),
            _ => all(self.whole_request_failure(&answer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::deliver::crm::test_support::update;
    use crate::deliver::limiter::Limiter;

    fn sf() -> Salesforce {
        let env = [
            ("SALESFORCE_CLIENT_ID".to_string(), "id".to_string()),
            ("SALESFORCE_CLIENT_SECRET".to_string(), "secret".to_string()),
        ]
        .into_iter()
        .collect();
        let c = Config::from_toml(
            "[crm]\nkind = \"salesforce\"\nbase_url = \"https://acme.my.salesforce.com\"\n",
            "t.toml",
            std::path::Path::new("/tmp"),
            &env,
        )
        .unwrap();
        let http = Http::new(
            "salesforce",
            Arc::new(Limiter::new(&c.crm.rate_limit)),
            Duration::from_secs(5),
        )
        .unwrap();
        Salesforce::new(&c.crm, http)
    }

    #[test]
    fn the_collection_body_upserts_by_external_id_with_status_and_typed_values() {
        let s = sf();
        let mut u = update("ada@example.com", "sql", 4);
        u.fields.remove(&FieldName::parse("company").unwrap());
        let body = s.body(&[Item::new(u)]);
        assert_eq!(body["allOrNone"], false);
        let r = &body["records"][0];
        assert_eq!(r["attributes"]["type"], "Lead");
        assert_eq!(r["Leadgate_Id__c"], "ada@example.com");
        assert_eq!(r["Email"], "ada@example.com");
        assert_eq!(r["FirstName"], "Ada");
        assert_eq!(r["Company"], "[not provided]");
        assert_eq!(r["NumberOfEmployees"], 51);
        assert_eq!(r["Status"], "Working - Contacted");
        assert_eq!(r["Leadgate_Score__c"], 65);
        let p = s.prepare(&[Item::new(update("a@x.io", "lead", 2))]);
        assert_eq!(p[0].method, "PATCH");
        assert_eq!(
            p[0].url,
            "https://acme.my.salesforce.com/services/data/v62.0/composite/sobjects/Lead/Leadgate_Id__c"
        );
    }

    #[test]
    fn limit_info_is_parsed_with_or_without_extra_parts() {
        assert_eq!(
            parse_limit_info("api-usage=10018/100000"),
            Some((10018, 100_000))
        );
        assert_eq!(
            parse_limit_info("api-usage=5/15000; api-bursts=1/750"),
            Some((5, 15_000))
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x)"),
            None
        );
    }

    #[test]
    fn the_daily_allowance_pauses_before_it_runs_out() {
        let s = sf();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "sforce-limit-info",
            "api-usage=94000/100000".parse().unwrap(),
        );
        s.observe_usage(&h);
        assert!(s.http.limiter.paused().is_none());
        h.insert(
            "sforce-limit-info",
            "api-usage=95000/100000".parse().unwrap(),
        );
        s.observe_usage(&h);
        assert_eq!(
            s.http.limiter.paused().unwrap().reason,
            PauseReason::DailyLimit
        );
    }

    #[test]
    fn collection_errors_are_classified_by_status_code() {
        let ok = json!({"id": "00Q1", "success": true, "errors": [], "created": true});
        assert_eq!(
            record_result(&ok),
            Ok(Delivered {
                crm_ref: Some(json!({"lead_id": "00Q1"}))
            })
        );
        let dup = json!({"success": false, "errors": [{"statusCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": []}]});
        assert!(
            matches!(record_result(&dup), Err(Failure::Permanent(m)) if m.contains("DUPLICATES_DETECTED: Use one of these records?"))
        );
        let lock = json!({"success": false, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access", "fields": []}]});
        assert!(matches!(record_result(&lock), Err(Failure::Transient(_))));
        let pick = json!({"success": false, "errors": [{"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "message": "bad value for restricted picklist field: Hot", "fields": ["Status"]}]});
        assert!(
            matches!(record_result(&pick), Err(Failure::Permanent(m)) if m.contains("(Status)"))
        );
    }

    #[test]
    fn whole_request_errors_use_the_error_code() {
        let s = sf();
        let a = |status: u16, body: Value| Answer {
            status,
            headers: Default::default(),
            text: body.to_string(),
            body,
        };
        let f = s.whole_request_failure(&a(
            400,
            json!([{"errorCode": "INVALID_FIELD", "message": "No such column 'Foo__c' on entity 'Lead'.", "fields": null}]),
        ));
        assert!(
            matches!(&f, Failure::Permanent(m) if m.contains("INVALID_FIELD: No such column 'Foo__c'")),
            "{f:?}"
        );
        let f = s.whole_request_failure(&a(
            403,
            json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]),
        ));
        assert!(matches!(f, Failure::Paused(_)));
        assert_eq!(
            s.http.limiter.paused().unwrap().reason,
            PauseReason::DailyLimit
        );
        let f = s.whole_request_failure(&a(
            503,
            json!([{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}]),
        ));
        assert!(matches!(f, Failure::Transient(_)));
    }
}
