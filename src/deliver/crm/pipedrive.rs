//! Pipedrive: no batch API, so each lead is find-or-create of a person plus a lead carrying one
//! label per stage:
//! 1. person: the id remembered from an earlier delivery, else
//!    `GET /api/v2/persons/search?term=<email>&fields=email&exact_match=true` (its own, lower
//!    limit), then `PATCH /api/v2/persons/{id}` or `POST /api/v2/persons`;
//! 2. label: `GET /v1/leadLabels` once, creating a missing stage label with `POST /v1/leadLabels`;
//! 3. lead: the remembered id, else the person's open lead (`GET /v1/leads?person_id=`, which
//!    lists open leads only; no undocumented parameters), then `PATCH /v1/leads/{id}` or
//!    `POST /v1/leads`.
//!
//! Auth is the `x-api-token` header. Every answer's `x-ratelimit-*` and `x-daily-requests-left`
//! headers feed the limiter; a 429 stops the batch at once (persisting after 429s gets an API
//! token blocked). (crm-apis.md §4.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{
    header_num, scalar_string, stage_values, Answer, Connector, Delivered, Http, Item,
    PreparedRequest, Request,
};
use crate::config::{CrmAuth, CrmConfig, CrmKind, RateLimit};
use crate::deliver::limiter::{PauseReason, SubLimiter};
use crate::deliver::retry::{retry_after, until_next_utc_midnight, Failure};
use crate::ingest::verify::Secret;
use crate::lead::FieldName;

/// Pipedrive's burst window.
const WINDOW: Duration = Duration::from_secs(2);

fn default_stage_values(_stage: &str) -> Vec<(&'static str, &'static str)> {
    Vec::new()
}

#[derive(Debug)]
pub struct Pipedrive {
    http: Http,
    search: SubLimiter,
    base: String,
    token: Option<Secret>,
    properties: BTreeMap<FieldName, String>,
    batch_size: usize,
    daily_reserve_percent: u8,
    /// Lower-cased label name -> label id, fetched once.
    labels: tokio::sync::Mutex<Option<HashMap<String, String>>>,
    /// The credentials' variables, for the refused-credentials alarm.
    credentials: String,
}

/// A request outcome inside one record's steps.
type Step<T> = Result<T, Failure>;

impl Pipedrive {
    pub fn new(config: &CrmConfig, http: Http) -> Self {
        Self {
            http,
            search: SubLimiter::new(&config.search_rate_limit),
            base: config.base_url.clone(),
            token: match &config.auth {
                CrmAuth::Token(s) => Some(s.clone()),
                _ => None,
            },
            properties: config.properties.clone(),
            batch_size: config.batch_size,
            daily_reserve_percent: config.daily_reserve_percent,
            labels: tokio::sync::Mutex::new(None),
            credentials: config.credentials.clone(),
        }
    }

    /// The person body: `name` from the mapped name parts (or the email's local part when
    /// creating), the email, `phones`, and any other mapped keys (`custom_fields.<key>`).
    pub fn person_body(&self, item: &Item, create: bool) -> Value {
        let u = &item.update;
        let mut name_parts: Vec<String> = Vec::new();
        let mut body = Map::new();
        let mut custom = Map::new();
        for (field, prop) in &self.properties {
            let Some(v) = u.fields.get(field).and_then(scalar_string) else {
                continue;
            };
            match prop.as_str() {
                "name" => name_parts.push(v),
                "phones" => {
                    body.insert(
                        "phones".into(),
                        json!([{ "value": v, "primary": true, "label": "work" }]),
                    );
                }
                p => match p.strip_prefix("custom_fields.") {
                    Some(key) => {
                        custom.insert(key.to_string(), Value::String(v));
                    }
                    None => {
                        body.insert(p.to_string(), Value::String(v));
                    }
                },
            }
        }
        // `properties` is ordered by field name: first_name sorts before last_name.
        if !name_parts.is_empty() {
            body.insert("name".into(), Value::String(name_parts.join(" ")));
        } else if create {
            body.insert("name".into(), Value::String(u.email.local().to_string()));
        }
        if create {
            // On update the person already has this email (that is how it was found); sending
            // `emails` again would replace any others sales added.
            body.insert(
                "emails".into(),
                json!([{ "value": u.email.as_str(), "primary": true, "label": "work" }]),
            );
        }
        if !custom.is_empty() {
            body.insert("custom_fields".into(), Value::Object(custom));
        }
        Value::Object(body)
    }

    fn title(item: &Item) -> String {
        let f = &item.update.fields;
        let get = |k: &str| {
            FieldName::parse(k)
                .ok()
                .and_then(|n| f.get(&n))
                .and_then(scalar_string)
        };
        let name: Vec<String> = ["first_name", "last_name"]
            .iter()
            .filter_map(|k| get(k))
            .collect();
        match (name.is_empty(), get("company")) {
            (false, Some(c)) => format!("{} ({c})", name.join(" ")),
            (false, None) => name.join(" "),
            (true, Some(c)) => c,
            (true, None) => "Lead from leadgate".to_string(),
        }
    }

    /// The label name for the update's stage: the rules' `label` value, else the stage name.
    fn label_name(item: &Item) -> String {
        stage_values(&item.update, default_stage_values)
            .remove("label")
            .unwrap_or_else(|| item.update.stage.clone())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    // ---- the requests, each built in one place for sending and for previews ----

    /// A request to `path` with the API token header.
    fn request(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Request {
        Request::with_query(method, &self.url(path), query).credential(
            "x-api-token",
            "",
            self.token.as_ref(),
        )
    }

    /// `GET /api/v2/persons/search`: an exact match on the email.
    fn search_request(&self, email: &str) -> Request {
        let query = [
            ("term", email),
            ("fields", "email"),
            ("exact_match", "true"),
        ];
        self.request(Method::GET, "/api/v2/persons/search", &query)
    }

    fn create_person_request(&self, item: &Item) -> Request {
        self.request(Method::POST, "/api/v2/persons", &[])
            .json(self.person_body(item, true))
    }

    fn update_person_request(&self, id: i64, item: &Item) -> Request {
        self.request(Method::PATCH, &format!("/api/v2/persons/{id}"), &[])
            .json(self.person_body(item, false))
    }

    /// `GET /v1/leads?person_id=`: the person's leads. Only documented parameters (Pipedrive's
    /// current spec): this endpoint returns open leads only; archived ones are under
    /// `/v1/leads/archived`.
    fn leads_of_request(&self, person_id: i64) -> Request {
        let id = person_id.to_string();
        self.request(Method::GET, "/v1/leads", &[("person_id", &id)])
    }

    /// The lead body: its title, the person (`person`: an id, or a placeholder in previews) and
    /// the stage's label when the stage is sent.
    fn lead_body(item: &Item, person: Option<Value>, label: Option<Value>) -> Value {
        let mut body = json!({ "title": Self::title(item) });
        if let Some(p) = person {
            body["person_id"] = p;
        }
        if let Some(l) = label {
            body["label_ids"] = json!([l]);
        }
        body
    }

    /// Sends one request, reads the limit headers, and turns 429s and auth failures into
    /// pauses. Returns the answer for any other status.
    async fn call(&self, req: Request) -> Step<Answer> {
        let a = self.http.send(&req).await?;
        let left = header_num(&a.headers, "x-daily-requests-left");
        if a.status == 429 {
            let daily = left == Some(0);
            let (wait, reason) = match (retry_after(&a.headers), daily) {
                (Some(d), false) => (d, PauseReason::RateLimited),
                (_, true) => (
                    until_next_utc_midnight().max(Duration::from_secs(60)),
                    PauseReason::DailyLimit,
                ),
                (None, false) => (
                    header_num(&a.headers, "x-ratelimit-reset")
                        .map(Duration::from_secs)
                        .unwrap_or(WINDOW)
                        .max(Duration::from_secs(1)),
                    PauseReason::RateLimited,
                ),
            };
            tracing::warn!(
                crm = "pipedrive",
                wait_ms = wait.as_millis() as u64,
                daily,
                "rate limited; stopping delivery until the limit resets"
            );
            self.http.limiter.pause_for(wait, reason);
            return Err(Failure::Paused(format!(
                "pipedrive 429: {}",
                error_text(&a)
            )));
        }
        if a.status == 401 || a.status == 403 {
            self.http.limiter.credentials_refused(
                "pipedrive",
                a.status,
                &format!(
                    "set {} to a valid API token (Personal preferences > API; tokens are per user and company), then restart; delivery is retried every minute meanwhile",
                    self.credentials
                ),
            );
            return Err(Failure::Paused(format!(
                "pipedrive {}: {}",
                a.status,
                error_text(&a)
            )));
        }
        if header_num(&a.headers, "x-ratelimit-remaining") == Some(0) {
            let wait = header_num(&a.headers, "x-ratelimit-reset")
                .map(Duration::from_secs)
                .unwrap_or(WINDOW)
                .max(Duration::from_millis(500));
            self.http.limiter.pause_for(wait, PauseReason::RateLimited);
        }
        if let Some(left) = left {
            // The daily budget is counted in tokens; the reserve is a share of the base budget of
            // 30,000 tokens (0 by default: pause only when nothing is left).
            let floor = 30_000 * u64::from(self.daily_reserve_percent) / 100;
            if left <= floor {
                self.http.limiter.pause_for(
                    until_next_utc_midnight().max(Duration::from_secs(60)),
                    PauseReason::DailyLimit,
                );
            }
        }
        Ok(a)
    }

    fn fail(a: &Answer, what: &str) -> Failure {
        let text = format!("pipedrive {} ({what}): {}", a.status, error_text(a));
        if a.status >= 500 || a.status == 408 {
            Failure::Transient(text)
        } else {
            Failure::Permanent(text)
        }
    }

    async fn find_person(&self, email: &str) -> Step<Option<i64>> {
        self.search.acquire().await;
        let a = self.call(self.search_request(email)).await?;
        if a.status != 200 {
            return Err(Self::fail(&a, "person search"));
        }
        Ok(a.body
            .pointer("/data/items")
            .and_then(Value::as_array)
            .and_then(|items| {
                items.iter().find_map(|it| {
                    let item = it.get("item")?;
                    let matches = item
                        .get("emails")
                        .and_then(Value::as_array)
                        .map(|es| {
                            es.iter().any(|e| {
                                e.get("value")
                                    .or(Some(e))
                                    .and_then(Value::as_str)
                                    .is_some_and(|v| v.eq_ignore_ascii_case(email))
                            })
                        })
                        .unwrap_or(true);
                    matches
                        .then(|| item.get("id").and_then(Value::as_i64))
                        .flatten()
                })
            }))
    }

    /// Person id for the lead, creating or updating the person. Returns `(id, existed)`.
    async fn upsert_person(&self, item: &Item) -> Step<(i64, bool)> {
        let known = item
            .crm_ref
            .as_ref()
            .and_then(|r| r.get("person_id"))
            .and_then(Value::as_i64);
        let email = item.update.email.as_str();
        let id = match known {
            Some(id) => Some(id),
            None => self.find_person(email).await?,
        };
        if let Some(id) = id {
            let a = self.call(self.update_person_request(id, item)).await?;
            match a.status {
                200 => return Ok((id, true)),
                // Deleted or merged in Pipedrive since we stored its id: look it up again.
                404 if known.is_some() => {
                    if let Some(found) = self.find_person(email).await? {
                        let a = self.call(self.update_person_request(found, item)).await?;
                        if a.status == 200 {
                            return Ok((found, true));
                        }
                        return Err(Self::fail(&a, "person update"));
                    }
                }
                _ => return Err(Self::fail(&a, "person update")),
            }
        }
        let a = self.call(self.create_person_request(item)).await?;
        match (a.status, a.body.pointer("/data/id").and_then(Value::as_i64)) {
            (200 | 201, Some(id)) => Ok((id, false)),
            _ => Err(Self::fail(&a, "person create")),
        }
    }

    async fn label_id(&self, name: &str) -> Step<String> {
        let mut guard = self.labels.lock().await;
        if guard.is_none() {
            let a = self
                .call(self.request(Method::GET, "/v1/leadLabels", &[]))
                .await?;
            if a.status != 200 {
                return Err(Self::fail(&a, "lead labels"));
            }
            let map = a
                .body
                .get("data")
                .and_then(Value::as_array)
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| {
                            Some((
                                l.get("name")?.as_str()?.to_lowercase(),
                                l.get("id")?.as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            *guard = Some(map);
        }
        let key = name.to_lowercase();
        if let Some(id) = guard.as_ref().and_then(|m| m.get(&key)) {
            return Ok(id.clone());
        }
        let req = self
            .request(Method::POST, "/v1/leadLabels", &[])
            .json(json!({ "name": name, "color": "gray" }));
        let a = self.call(req).await?;
        match (a.status, a.body.pointer("/data/id").and_then(Value::as_str)) {
            (200 | 201, Some(id)) => {
                tracing::info!(crm = "pipedrive", "created a lead label for a stage");
                if let Some(m) = guard.as_mut() {
                    m.insert(key, id.to_string());
                }
                Ok(id.to_string())
            }
            _ => Err(Self::fail(&a, "lead label create")),
        }
    }

    async fn existing_lead(&self, person_id: i64) -> Step<Option<String>> {
        let a = self.call(self.leads_of_request(person_id)).await?;
        if a.status != 200 {
            return Err(Self::fail(&a, "lead lookup"));
        }
        Ok(a.body
            .get("data")
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    async fn one(&self, item: &Item) -> Step<Delivered> {
        let (person_id, existed) = self.upsert_person(item).await?;
        let label = if item.send_stage {
            Some(self.label_id(&Self::label_name(item)).await?)
        } else {
            None
        };
        let known_lead = item
            .crm_ref
            .as_ref()
            .and_then(|r| r.get("lead_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let lead = match known_lead {
            Some(id) => Some(id),
            None if existed => self.existing_lead(person_id).await?,
            None => None,
        };
        let mut lead_id = None;
        let label = label.map(Value::String);
        if let Some(id) = lead {
            let req = self
                .request(Method::PATCH, &format!("/v1/leads/{id}"), &[])
                .json(Self::lead_body(item, None, label.clone()));
            let a = self.call(req).await?;
            match a.status {
                200 => lead_id = Some(id),
                404 => {}
                _ => return Err(Self::fail(&a, "lead update")),
            }
        }
        let lead_id = match lead_id {
            Some(id) => id,
            None => {
                let req = self
                    .request(Method::POST, "/v1/leads", &[])
                    .json(Self::lead_body(item, Some(json!(person_id)), label));
                let a = self.call(req).await?;
                match (a.status, a.body.pointer("/data/id").and_then(Value::as_str)) {
                    (200 | 201, Some(id)) => id.to_string(),
                    _ => return Err(Self::fail(&a, "lead create")),
                }
            }
        };
        Ok(Delivered {
            crm_ref: Some(json!({ "person_id": person_id, "lead_id": lead_id })),
        })
    }
}

/// Pipedrive's `error` (and `error_info`) or a description of a non-JSON body.
fn error_text(a: &Answer) -> String {
    match a.body.get("error").and_then(Value::as_str) {
        Some(e) => e.to_string(),
        None if a.body.is_object() => "no error message".to_string(),
        None => super::describe_text(&a.text),
    }
}

#[async_trait]
impl Connector for Pipedrive {
    fn name(&self) -> &'static str {
        "pipedrive"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn default_quota(&self) -> RateLimit {
        CrmKind::Pipedrive.default_rate_limit()
    }

    /// The requests for leads Pipedrive does not know yet: search, create person, create lead
    /// (the ids Pipedrive assigns shown as placeholders). The label list, fetched once per
    /// process, and a missing label's creation come first on a fresh start.
    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest> {
        let mut out = Vec::new();
        for item in batch {
            let label = item
                .send_stage
                .then(|| json!(format!("<label {:?}>", Self::label_name(item))));
            let lead = self
                .request(Method::POST, "/v1/leads", &[])
                .json(Self::lead_body(item, Some(json!("<person id>")), label));
            let requests = [
                self.search_request(item.update.email.as_str()),
                self.create_person_request(item),
                lead,
            ];
            out.extend(requests.iter().map(Request::preview));
        }
        out
    }

    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>> {
        let mut out = Vec::with_capacity(batch.len());
        let mut stopped: Option<Failure> = None;
        for item in batch {
            if let Some(f) = &stopped {
                out.push(Err(f.clone()));
                continue;
            }
            let r = self.one(item).await;
            if let Err(f @ Failure::Paused(_)) = &r {
                // Stop on 429: every further request would only prolong the block.
                stopped = Some(f.clone());
            }
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::deliver::crm::test_support::update;
    use crate::deliver::limiter::Limiter;

    fn pd() -> Pipedrive {
        let env = [("PIPEDRIVE_TOKEN".to_string(), "tok".to_string())]
            .into_iter()
            .collect();
        let c = Config::from_toml(
            "[crm]\nkind = \"pipedrive\"\n[crm.properties]\n\"custom.timeline\" = \"custom_fields.abc123\"\n",
            "t.toml",
            std::path::Path::new("/tmp"),
            &env,
        )
        .unwrap();
        let http = Http::new(
            "pipedrive",
            Arc::new(Limiter::new(&c.crm.rate_limit)),
            Duration::from_secs(5),
        )
        .unwrap();
        Pipedrive::new(&c.crm, http)
    }

    #[test]
    fn person_bodies_join_the_name_and_only_send_emails_on_create() {
        let p = pd();
        let mut u = update("ada@example.com", "mql", 3);
        u.fields
            .insert(FieldName::parse("phone").unwrap(), json!("+441234567890"));
        u.fields
            .insert(FieldName::parse("custom.timeline").unwrap(), json!("Q3"));
        let item = Item::new(u);
        let create = p.person_body(&item, true);
        assert_eq!(create["name"], "Ada Lovelace");
        assert_eq!(create["emails"][0]["value"], "ada@example.com");
        assert_eq!(create["emails"][0]["primary"], true);
        assert_eq!(create["phones"][0]["value"], "+441234567890");
        assert_eq!(create["custom_fields"]["abc123"], "Q3");
        let patch = p.person_body(&item, false);
        assert!(patch.get("emails").is_none());
        assert_eq!(Pipedrive::title(&item), "Ada Lovelace (Analytical)");
        assert_eq!(Pipedrive::label_name(&item), "mql");
    }

    #[test]
    fn a_person_without_a_name_is_created_under_the_email_local_part() {
        let p = pd();
        let mut u = update("grace@navy.mil", "lead", 2);
        u.fields.clear();
        let b = p.person_body(&Item::new(u), true);
        assert_eq!(b["name"], "grace");
    }

    #[test]
    fn previews_show_search_then_create_with_the_token_redacted() {
        let p = pd();
        let reqs = p.prepare(&[Item::new(update("ada@example.com", "mql", 3))]);
        assert_eq!(reqs.len(), 3);
        assert!(reqs[0].url.contains(
            "/api/v2/persons/search?term=ada%40example.com&fields=email&exact_match=true"
        ));
        assert_eq!(reqs[1].url, "https://api.pipedrive.com/api/v2/persons");
        assert_eq!(reqs[2].url, "https://api.pipedrive.com/v1/leads");
        assert!(!serde_json::to_string(&reqs).unwrap().contains("tok\""));
    }
}
