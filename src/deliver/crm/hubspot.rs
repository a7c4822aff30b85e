//! HubSpot: `POST /crm/v3/objects/contacts/batch/upsert` with `idProperty: email`, up to 100
//! inputs, each email once per batch. Results are mapped back per record through
//! `objectWriteTraceId` (207 partial results); an empty 2xx is a failure; the
//! `X-HubSpot-RateLimit-*` headers feed the limiter; a `DAILY` 429 parks delivery until the day
//! rolls over, a `TEN_SECONDLY_ROLLING` one until `Retry-After` or the window passes.
//! (crm-apis.md §2.)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{
    header_num, mapped_fields, scalar_string, stage_values, Answer, Connector, Delivered, Http,
    Item, PreparedRequest, Request,
};
use crate::config::{CrmAuth, CrmConfig, CrmKind, RateLimit};
use crate::deliver::limiter::PauseReason;
use crate::deliver::retry::{retry_after, until_next_utc_midnight, Failure};
use crate::ingest::verify::Secret;
use crate::lead::FieldName;

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
/// HubSpot locks a contact for 2 s under high-volume writes (423).
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// The rolling window HubSpot documents, when its header is missing.
const WINDOW: Duration = Duration::from_secs(10);

/// The default `lifecyclestage` for common stage names when the rules give no HubSpot values.
fn default_stage_values(stage: &str) -> Vec<(&'static str, &'static str)> {
    let v = match stage {
        "subscriber" | "contact" | "suspect" => "subscriber",
        "lead" | "inquiry" => "lead",
        "mql" | "marketingqualifiedlead" => "marketingqualifiedlead",
        "sql" | "salesqualifiedlead" | "sal" => "salesqualifiedlead",
        "opportunity" => "opportunity",
        "customer" => "customer",
        "evangelist" => "evangelist",
        _ => return Vec::new(),
    };
    vec![("lifecyclestage", v)]
}

/// Where the bearer token comes from.
#[derive(Debug)]
enum Token {
    Static(Secret),
    /// OAuth: refreshed before `expires_in` runs out (HubSpot: a 401 is not the signal to refresh).
    OAuth {
        token_url: String,
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
        cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    },
    /// Previews only.
    None,
}

#[derive(Debug)]
pub struct HubSpot {
    http: Http,
    base: String,
    token: Token,
    properties: BTreeMap<FieldName, String>,
    score_property: Option<String>,
    reason_property: Option<String>,
    batch_size: usize,
    daily_reserve_percent: u8,
    /// The credentials' variables, for the refused-credentials alarm.
    credentials: String,
}

impl HubSpot {
    pub fn new(config: &CrmConfig, http: Http) -> Self {
        let token = match &config.auth {
            CrmAuth::Token(s) => Token::Static(s.clone()),
            CrmAuth::OAuthRefresh {
                token_url,
                client_id,
                client_secret,
                refresh_token,
            } => Token::OAuth {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                refresh_token: refresh_token.clone(),
                cached: tokio::sync::Mutex::new(None),
            },
            _ => Token::None,
        };
        if !matches!(token, Token::None) {
            // A series that only moves on a rare event exists from the start, so increase()
            // sees its first event (previews, which send nothing, leave it alone).
            metrics::counter!("leadgate_crm_stage_kept_by_crm_total", "crm" => "hubspot")
                .increment(0);
        }
        Self {
            http,
            base: config.base_url.clone(),
            token,
            properties: config.properties.clone(),
            score_property: config.score_property.clone(),
            reason_property: config.reason_property.clone(),
            batch_size: config.batch_size,
            daily_reserve_percent: config.daily_reserve_percent,
            credentials: config.credentials.clone(),
        }
    }

    /// The upsert body for a batch; `objectWriteTraceId` is the record's index in the batch.
    pub fn body(&self, batch: &[Item]) -> Value {
        let inputs: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, item)| {
                json!({
                    "id": item.update.email.as_str(),
                    "idProperty": "email",
                    "objectWriteTraceId": i.to_string(),
                    "properties": self.properties_of(item),
                })
            })
            .collect();
        json!({ "inputs": inputs })
    }

    /// The batch upsert request (`token`: None in previews).
    fn upsert(&self, batch: &[Item], token: Option<&Secret>) -> Request {
        Request::new(Method::POST, format!("{}{UPSERT}", self.base))
            .credential("authorization", "Bearer ", token)
            .json(self.body(batch))
    }

    fn properties_of(&self, item: &Item) -> Map<String, Value> {
        let u = &item.update;
        let mut props = Map::new();
        for (prop, v) in mapped_fields(u, &self.properties) {
            if let Some(s) = scalar_string(v) {
                props.insert(prop.to_string(), Value::String(s));
            }
        }
        if item.send_stage {
            for (k, v) in stage_values(u, default_stage_values) {
                props.insert(k, Value::String(v));
            }
        }
        if let Some(p) = &self.score_property {
            props.insert(p.clone(), Value::String(u.score.to_string()));
        }
        if let Some(p) = &self.reason_property {
            props.insert(p.clone(), Value::String(u.reason.clone()));
        }
        // The id property last, so a mapping can never overwrite it.
        props.insert("email".into(), Value::String(u.email.as_str().to_string()));
        props
    }

    async fn bearer(&self) -> Result<Secret, Failure> {
        match &self.token {
            Token::Static(s) => Ok(s.clone()),
            Token::None => Err(Failure::Permanent(
                "hubspot: no credentials configured".into(),
            )),
            Token::OAuth {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                cached,
            } => {
                // Single-flight: concurrent callers wait for one refresh.
                let mut guard = cached.lock().await;
                if let Some((tok, exp)) = guard.as_ref() {
                    if *exp > Instant::now() {
                        return Ok(tok.clone());
                    }
                }
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.expose()),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                ];
                let a = self
                    .http
                    .execute(self.http.client.post(token_url).form(&form))
                    .await?;
                let token = a.body.get("access_token").and_then(Value::as_str);
                match (a.status, token) {
                    (200, Some(t)) => {
                        let expires = a
                            .body
                            .get("expires_in")
                            .and_then(Value::as_u64)
                            .unwrap_or(1800);
                        // Refresh a minute early so a token never expires mid-batch.
                        let exp =
                            Instant::now() + Duration::from_secs(expires.saturating_sub(60).max(1));
                        let s = Secret::new(t);
                        *guard = Some((s.clone(), exp));
                        Ok(s)
                    }
                    (s, _) if s >= 500 => Err(Failure::Transient(format!(
                        "hubspot: token refresh answered {s}"
                    ))),
                    (s, _) => {
                        self.http.limiter.credentials_refused(
                            "hubspot",
                            s,
                            &format!(
                                "the OAuth token refresh was refused; check the app's client id, secret and refresh token in {}, then restart",
                                self.credentials
                            ),
                        );
                        Err(Failure::Paused(format!(
                            "hubspot: token refresh refused ({s}): {}",
                            message(&a.body)
                        )))
                    }
                }
            }
        }
    }

    async fn forget_token(&self) {
        if let Token::OAuth { cached, .. } = &self.token {
            *cached.lock().await = None;
        }
    }

    /// Reads the rate-limit headers every response carries and pauses before HubSpot has to.
    fn observe_headers(&self, h: &reqwest::header::HeaderMap) {
        let limits = RateHeaders::parse(h);
        if limits.remaining == Some(0) {
            let window = limits.interval.unwrap_or(WINDOW);
            self.http
                .limiter
                .pause_for(window, PauseReason::RateLimited);
        }
        if let (Some(daily), Some(left)) = (limits.daily, limits.daily_remaining) {
            let reserve = daily * u64::from(self.daily_reserve_percent) / 100;
            if left <= reserve {
                tracing::warn!(
                    crm = "hubspot",
                    daily,
                    daily_remaining = left,
                    "daily API allowance used up to the reserve; pausing delivery until tomorrow"
                );
                self.http.limiter.pause_for(
                    until_next_utc_midnight().max(Duration::from_secs(60)),
                    PauseReason::DailyLimit,
                );
            }
        }
    }

    /// Sends one upsert request and maps its answer to per-record results. A whole-batch 400 is
    /// split in halves so one bad record cannot hold back the others.
    fn send_batch<'a>(
        &'a self,
        batch: &'a [Item],
    ) -> futures_util::future::BoxFuture<'a, Vec<Result<Delivered, Failure>>> {
        Box::pin(async move {
            let all = |f: Failure| batch.iter().map(|_| Err(f.clone())).collect::<Vec<_>>();
            let token = match self.bearer().await {
                Ok(t) => t,
                Err(f) => return all(f),
            };
            let a = match self.http.send(&self.upsert(batch, Some(&token))).await {
                Ok(a) => a,
                Err(f) => return all(f),
            };
            self.observe_headers(&a.headers);
            let correlation = a.body.get("correlationId").and_then(Value::as_str);
            tracing::debug!(
                crm = "hubspot",
                status = a.status,
                records = batch.len(),
                correlation_id = correlation.unwrap_or(""),
                "batch upsert answered"
            );
            match a.status {
                200..=299 => map_results(batch, &a),
                400 if batch.len() > 1 => {
                    tracing::info!(
                        crm = "hubspot",
                        records = batch.len(),
                        correlation_id = correlation.unwrap_or(""),
                        "batch refused as a whole; splitting it to find the bad records"
                    );
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let mut out = self.send_batch(left).await;
                    out.extend(self.send_batch(right).await);
                    out
                }
                401 | 403 => {
                    self.forget_token().await;
                    self.http.limiter.credentials_refused(
                        "hubspot",
                        a.status,
                        &format!(
                            "set {} to a valid private-app token or Service Key with the crm.objects.contacts.read and crm.objects.contacts.write scopes (a revoked or rotated token is refused), then restart; delivery is retried every minute meanwhile",
                            self.credentials
                        ),
                    );
                    all(Failure::Paused(format!(
                        "hubspot {}: {}",
                        a.status,
                        message(&a.body)
                    )))
                }
                423 => {
                    self.http.limiter.pause_for(
                        retry_after(&a.headers).unwrap_or(LOCK_WAIT),
                        PauseReason::RateLimited,
                    );
                    all(Failure::Paused("hubspot 423: contacts locked".into()))
                }
                429 => {
                    let (wait, reason) = pause_for_429(&a.headers, &a.body);
                    let policy = a
                        .body
                        .get("policyName")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    tracing::warn!(
                        crm = "hubspot",
                        policy,
                        wait_ms = wait.as_millis() as u64,
                        correlation_id = correlation.unwrap_or(""),
                        "rate limited; pausing delivery"
                    );
                    self.http.limiter.pause_for(wait, reason);
                    all(Failure::Paused(format!(
                        "hubspot 429: {}",
                        message(&a.body)
                    )))
                }
                477 => {
                    let wait = retry_after(&a.headers).unwrap_or(Duration::from_secs(300));
                    self.http.limiter.pause_for(wait, PauseReason::RateLimited);
                    all(Failure::Paused("hubspot 477: migration in progress".into()))
                }
                s if s >= 500 || s == 408 => all(Failure::Transient(format!(
                    "hubspot {s}: {}",
                    message_or_text(&a)
                ))),
                s => all(Failure::Permanent(format!(
                    "hubspot {s}: {}",
                    message_or_text(&a)
                ))),
            }
        })
    }
}

/// How long a 429 pauses delivery: `Retry-After` when given; a `DAILY` policy until the day
/// rolls over; otherwise until the rolling window (`X-HubSpot-RateLimit-Interval-Milliseconds`,
/// 10 s by default) has passed.
pub fn pause_for_429(h: &reqwest::header::HeaderMap, body: &Value) -> (Duration, PauseReason) {
    let daily = body.get("policyName").and_then(Value::as_str) == Some("DAILY");
    let reason = if daily {
        PauseReason::DailyLimit
    } else {
        PauseReason::RateLimited
    };
    let wait = match retry_after(h) {
        Some(d) => d,
        None if daily => until_next_utc_midnight().max(Duration::from_secs(60)),
        None => RateHeaders::parse(h).interval.unwrap_or(WINDOW),
    };
    (wait, reason)
}

/// `X-HubSpot-RateLimit-*` response headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub max: Option<u64>,
    pub remaining: Option<u64>,
    pub interval: Option<Duration>,
    pub daily: Option<u64>,
    pub daily_remaining: Option<u64>,
}

impl RateHeaders {
    pub fn parse(h: &reqwest::header::HeaderMap) -> Self {
        Self {
            max: header_num(h, "x-hubspot-ratelimit-max"),
            remaining: header_num(h, "x-hubspot-ratelimit-remaining"),
            interval: header_num(h, "x-hubspot-ratelimit-interval-milliseconds")
                .map(Duration::from_millis),
            daily: header_num(h, "x-hubspot-ratelimit-daily"),
            daily_remaining: header_num(h, "x-hubspot-ratelimit-daily-remaining"),
        }
    }
}

/// HubSpot's error `message` with its category, e.g. `VALIDATION_ERROR: Property ... does not exist`.
fn message(body: &Value) -> String {
    let msg = body.get("message").and_then(Value::as_str).unwrap_or("");
    match body.get("category").and_then(Value::as_str) {
        Some(c) if !msg.is_empty() => format!("{c}: {msg}"),
        Some(c) => c.to_string(),
        None if !msg.is_empty() => msg.to_string(),
        None => "no message".to_string(),
    }
}

fn message_or_text(a: &Answer) -> String {
    if a.body.is_object() {
        message(&a.body)
    } else {
        super::describe_text(&a.text)
    }
}

/// Maps a 200/207 answer back to the batch: results and errors by `objectWriteTraceId` (falling
/// back to the email), anything unaccounted for is a transient failure.
fn map_results(batch: &[Item], a: &Answer) -> Vec<Result<Delivered, Failure>> {
    let results = a.body.get("results").and_then(Value::as_array);
    let errors = a.body.get("errors").and_then(Value::as_array);
    let none = |v: Option<&Vec<Value>>| v.is_none_or(|v| v.is_empty());
    if none(results) && none(errors) {
        // A 2xx that accounts for nothing must not count as delivered (RudderStack's
        // "silent failure").
        return batch
            .iter()
            .map(|_| {
                Err(Failure::Transient(format!(
                    "hubspot {}: empty result for a batch write",
                    a.status
                )))
            })
            .collect();
    }
    let index_of_email: HashMap<String, usize> = batch
        .iter()
        .enumerate()
        .map(|(i, it)| (it.update.email.as_str().to_string(), i))
        .collect();
    let by_trace = |v: &Value| -> Option<usize> {
        v.as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < batch.len())
    };
    let mut out: Vec<Option<Result<Delivered, Failure>>> = vec![None; batch.len()];
    for r in results.into_iter().flatten() {
        let idx = r.get("objectWriteTraceId").and_then(by_trace).or_else(|| {
            let email = r
                .pointer("/properties/email")
                .or_else(|| r.get("id"))
                .and_then(Value::as_str)?;
            index_of_email.get(&email.to_ascii_lowercase()).copied()
        });
        let Some(i) = idx else { continue };
        if batch[i].send_stage {
            let wanted = batch[i]
                .update
                .stage_values
                .get("lifecyclestage")
                .cloned()
                .or_else(|| {
                    stage_values(&batch[i].update, default_stage_values).remove("lifecyclestage")
                });
            let kept = r
                .pointer("/properties/lifecyclestage")
                .and_then(Value::as_str);
            if let (Some(w), Some(k)) = (wanted, kept) {
                if w != k {
                    // HubSpot accepts a backwards stage with 2xx and keeps the later one.
                    metrics::counter!("leadgate_crm_stage_kept_by_crm_total", "crm" => "hubspot")
                        .increment(1);
                    let contact_id = r.get("id").and_then(|v| v.as_str()).unwrap_or("");
                    tracing::info!(
                        crm = "hubspot",
                        contact_id,
                        "HubSpot kept a later lifecycle stage than the one sent"
                    );
                }
            }
        }
        out[i] = Some(Ok(Delivered::default()));
    }
    for e in errors.into_iter().flatten() {
        let msg = message(e);
        let permanent = matches!(
            e.get("category").and_then(Value::as_str),
            Some("VALIDATION_ERROR" | "OBJECT_NOT_FOUND" | "CONFLICT" | "INVALID_EMAIL")
        ) || e.get("category").is_none();
        let failure = if permanent {
            Failure::Permanent(format!("hubspot: {msg}"))
        } else {
            Failure::Transient(format!("hubspot: {msg}"))
        };
        let traces = e
            .pointer("/context/objectWriteTraceId")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(by_trace).collect::<Vec<_>>())
            .unwrap_or_default();
        let targets = if traces.is_empty() {
            e.pointer("/context/ids")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| index_of_email.get(&s.to_ascii_lowercase()).copied())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            traces
        };
        for i in targets {
            out[i] = Some(Err(failure.clone()));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Failure::Transient(
                    "hubspot: no result for this record in the batch answer".into(),
                ))
            })
        })
        .collect()
}

#[async_trait]
impl Connector for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn default_quota(&self) -> RateLimit {
        CrmKind::Hubspot.default_rate_limit()
    }

    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest> {
        batch
            .chunks(self.batch_size.max(1))
            .map(|chunk| self.upsert(chunk, None).preview())
            .collect()
    }

    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>> {
        self.send_batch(batch).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::deliver::crm::test_support::update;
    use crate::deliver::limiter::Limiter;

    fn hubspot() -> HubSpot {
        let env = [("HS".to_string(), "pat-1".to_string())]
            .into_iter()
            .collect();
        let c = Config::from_toml(
            "[crm]\nkind = \"hubspot\"\ntoken_env = \"HS\"\n",
            "t.toml",
            std::path::Path::new("/tmp"),
            &env,
        )
        .unwrap();
        let http = Http::new(
            "hubspot",
            Arc::new(Limiter::new(&c.crm.rate_limit)),
            Duration::from_secs(5),
        )
        .unwrap();
        HubSpot::new(&c.crm, http)
    }

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Default::default(),
            text: body.to_string(),
            body,
        }
    }

    #[test]
    fn the_upsert_body_carries_mapped_properties_stage_and_score_as_strings() {
        let h = hubspot();
        let mut second = Item::new(update("grace@navy.mil", "lead", 2));
        second.send_stage = false;
        let body = h.body(&[Item::new(update("ada@example.com", "mql", 3)), second]);
        let first = &body["inputs"][0];
        assert_eq!(first["id"], "ada@example.com");
        assert_eq!(first["idProperty"], "email");
        assert_eq!(first["objectWriteTraceId"], "0");
        let p = &first["properties"];
        assert_eq!(p["firstname"], "Ada");
        assert_eq!(p["lastname"], "Lovelace");
        assert_eq!(p["company"], "Analytical");
        assert_eq!(p["lifecyclestage"], "marketingqualifiedlead");
        assert_eq!(p["leadgate_score"], "65");
        assert_eq!(p["leadgate_reason"], "fit 40; asked for a demo");
        assert_eq!(p["email"], "ada@example.com");
        let withheld = &body["inputs"][1]["properties"];
        assert!(withheld.get("lifecyclestage").is_none());
        assert_eq!(withheld["firstname"], "Ada");
        let prepared = h.prepare(&[Item::new(update("ada@example.com", "mql", 3))]);
        assert_eq!(
            prepared[0].url,
            "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
        );
        assert!(!serde_json::to_string(&prepared).unwrap().contains("pat-1"));
    }

    #[test]
    fn rules_stage_values_win_over_the_defaults() {
        let h = hubspot();
        let mut u = update("ada@example.com", "sal", 4);
        u.stage_values
            .insert("lifecyclestage".into(), "1234567".into());
        u.stage_values
            .insert("hs_lead_status".into(), "IN_PROGRESS".into());
        let body = h.body(&[Item::new(u)]);
        assert_eq!(body["inputs"][0]["properties"]["lifecyclestage"], "1234567");
        assert_eq!(
            body["inputs"][0]["properties"]["hs_lead_status"],
            "IN_PROGRESS"
        );
    }

    #[test]
    fn a_207_maps_errors_back_by_trace_id_and_unaccounted_records_retry() {
        let batch: Vec<Item> = ["a@x.io", "b@x.io", "c@x.io"]
            .iter()
            .map(|e| Item::new(update(e, "lead", 2)))
            .collect();
        let a = answer(
            207,
            json!({
                "status": "COMPLETE",
                "numErrors": 1,
                "results": [{"id": "101", "properties": {"email": "a@x.io", "lifecyclestage": "lead"}, "objectWriteTraceId": "0"}],
                "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                            "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"leadgate_score\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"leadgate_score\"}]",
                            "context": {"objectWriteTraceId": ["1"]}}]
            }),
        );
        let r = map_results(&batch, &a);
        assert!(r[0].is_ok());
        match &r[1] {
            Err(Failure::Permanent(m)) => {
                assert!(
                    m.contains("VALIDATION_ERROR") && m.contains("PROPERTY_DOESNT_EXIST"),
                    "{m}"
                )
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(&r[2], Err(Failure::Transient(_))));
    }

    #[test]
    fn an_empty_2xx_is_not_a_delivery() {
        let batch = vec![Item::new(update("a@x.io", "lead", 2))];
        let r = map_results(
            &batch,
            &answer(200, json!({"status": "COMPLETE", "results": []})),
        );
        assert!(matches!(&r[0], Err(Failure::Transient(m)) if m.contains("empty")));
    }

    #[test]
    fn results_without_trace_ids_match_by_email() {
        let batch = vec![
            Item::new(update("a@x.io", "lead", 2)),
            Item::new(update("b@x.io", "lead", 2)),
        ];
        let a = answer(
            200,
            json!({"status": "COMPLETE", "results": [
                {"id": "2", "properties": {"email": "B@x.io"}},
                {"id": "1", "properties": {"email": "a@x.io"}}]}),
        );
        assert!(map_results(&batch, &a).iter().all(Result::is_ok));
    }

    #[test]
    fn rate_limit_headers_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("X-HubSpot-RateLimit-Max", "100".parse().unwrap());
        h.insert("X-HubSpot-RateLimit-Remaining", "0".parse().unwrap());
        h.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".parse().unwrap(),
        );
        h.insert("X-HubSpot-RateLimit-Daily", "250000".parse().unwrap());
        h.insert(
            "X-HubSpot-RateLimit-Daily-Remaining",
            "249000".parse().unwrap(),
        );
        let r = RateHeaders::parse(&h);
        assert_eq!(
            r,
            RateHeaders {
                max: Some(100),
                remaining: Some(0),
                interval: Some(Duration::from_secs(10)),
                daily: Some(250_000),
                daily_remaining: Some(249_000),
            }
        );
        let hs = hubspot();
        hs.observe_headers(&h);
        let p = hs.http.limiter.paused().unwrap();
        assert_eq!(p.reason, PauseReason::RateLimited);
    }

    #[test]
    fn daily_and_ten_secondly_429s_are_told_apart() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            "10000".parse().unwrap(),
        );
        let ten = json!({"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"TEN_SECONDLY_ROLLING"});
        assert_eq!(
            pause_for_429(&h, &ten),
            (Duration::from_secs(10), PauseReason::RateLimited)
        );
        let daily = json!({"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"DAILY"});
        let (wait, reason) = pause_for_429(&h, &daily);
        assert_eq!(reason, PauseReason::DailyLimit);
        assert!(wait >= Duration::from_secs(60));
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            pause_for_429(&h, &ten),
            (Duration::from_secs(2), PauseReason::RateLimited)
        );
    }
}
