//! A HubSpot-like contacts API (crm-apis.md §2, §8 "HubSpot-like").
//!
//! - `Authorization: Bearer <token>`; otherwise 401 `INVALID_AUTHENTICATION`.
//! - `POST /crm/v3/objects/contacts/batch/upsert` (`idProperty: email`, at most 100 inputs,
//!   duplicate ids refused with 400), per-input validation against a property schema
//!   (`PROPERTY_DOESNT_EXIST`, `INVALID_OPTION`) answered as 207 with `errors[]` mapped by
//!   `objectWriteTraceId`; when every input fails, 400 with the first error (as HubSpot does for
//!   a batch that writes nothing).
//! - `lifecyclestage` only moves forward: a backwards value is accepted with 2xx and ignored;
//!   `""` clears it.
//! - `POST /crm/v3/objects/contacts` (create one): 409 `CONFLICT` with `Existing ID` for a known
//!   email. `POST /oauth/v1/token` refreshes OAuth tokens.
//! - A rolling window (default 100 per 10 s) and a daily cap, counting every request; 429 bodies
//!   with `policyName` `TEN_SECONDLY_ROLLING` or `DAILY`; the `X-HubSpot-RateLimit-*` headers on
//!   every answer; `Retry-After` on 429 only when configured.
//! - Outages: [`FakeHubSpot::go_down`] stops listening (connections refused) and
//!   [`FakeHubSpot::come_up`] listens again on the same port; [`FakeHubSpot::set_failing`]
//!   answers every request with a fault (e.g. 503) until cleared.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use crate::common::{correlation_id, lock, start, start_at, Arrival, Fault, Reply, Window};

/// The default lifecycle stages, in order.
pub const LIFECYCLE: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
];

/// Default `hs_lead_status` options.
pub const LEAD_STATUS: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
];

/// Which limit a forced 429 claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    TenSecondly,
    Daily,
}

#[derive(Debug, Clone)]
pub struct HubSpotOptions {
    pub token: String,
    /// Requests per rolling window (HubSpot: 100 per 10 s on Free/Starter).
    pub window_max: u32,
    pub window: Duration,
    pub daily_max: u64,
    /// Seconds sent as `Retry-After` with 429s; HubSpot does not promise one.
    pub retry_after_secs: Option<u64>,
    pub max_inputs: usize,
    /// Properties the portal has; others fail with `PROPERTY_DOESNT_EXIST`.
    pub properties: Vec<String>,
    /// OAuth: the client and refresh token that `POST /oauth/v1/token` accepts.
    pub oauth: Option<(String, String, String)>,
}

impl Default for HubSpotOptions {
    fn default() -> Self {
        Self {
            token: "hs-test-token".into(),
            window_max: 100,
            window: Duration::from_secs(10),
            daily_max: 250_000,
            retry_after_secs: None,
            max_inputs: 100,
            properties: [
                "email",
                "firstname",
                "lastname",
                "company",
                "jobtitle",
                "phone",
                "country",
                "industry",
                "website",
                "lifecyclestage",
                "hs_lead_status",
                "leadgate_score",
                "leadgate_reason",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            oauth: None,
        }
    }
}

/// A stored contact.
#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug)]
struct State {
    opts: HubSpotOptions,
    window: Window,
    daily_used: u64,
    faults: Vec<Fault>,
    /// Every request gets this fault until cleared (an outage of a given length).
    failing: Option<Fault>,
    forced_429: Vec<(Policy, Option<u64>)>,
    delay: Duration,
    arrivals: Vec<Arrival>,
    rate_limited: usize,
    batches: Vec<Vec<Value>>,
    contacts: HashMap<String, Contact>,
    created: HashMap<String, usize>,
    upserts: HashMap<String, usize>,
    next_id: u64,
    /// Backwards `lifecyclestage` values accepted and ignored.
    ignored_regressions: usize,
    /// Access tokens issued through OAuth refresh (accepted besides `opts.token`).
    issued: Vec<String>,
}

/// A running fake HubSpot.
pub struct FakeHubSpot {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    /// The server currently listening (replaced by [`come_up`](FakeHubSpot::come_up)).
    server: Mutex<ServerHandle>,
}

impl FakeHubSpot {
    pub async fn start() -> Self {
        Self::start_with(HubSpotOptions::default()).await
    }

    pub async fn start_with(opts: HubSpotOptions) -> Self {
        let state = Arc::new(Mutex::new(State {
            window: Window::new(opts.window, opts.window_max),
            opts,
            daily_used: 0,
            faults: Vec::new(),
            failing: None,
            forced_429: Vec::new(),
            delay: Duration::ZERO,
            arrivals: Vec::new(),
            rate_limited: 0,
            batches: Vec::new(),
            contacts: HashMap::new(),
            created: HashMap::new(),
            upserts: HashMap::new(),
            next_id: 1001,
            ignored_regressions: 0,
            issued: Vec::new(),
        }));
        let running = start(Arc::clone(&state), handle);
        Self {
            base_url: running.base_url,
            state,
            addr: running.addr,
            server: Mutex::new(running.handle),
        }
    }

    /// Accepts `token` as well as the configured one (several senders, each with its own).
    pub fn accept_token(&self, token: &str) {
        lock(&self.state).issued.push(token.to_string());
    }

    pub fn token(&self) -> String {
        lock(&self.state).opts.token.clone()
    }

    // ---- faults

    /// The next `n` requests get `fault` (after authentication and rate limiting).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.faults.push(fault.clone());
        }
    }

    /// From now on every request gets `fault` (after authentication and rate limiting), until
    /// called again with `None`: a CRM answering 503 for a while.
    pub fn set_failing(&self, fault: Option<Fault>) {
        lock(&self.state).failing = fault;
    }

    /// Stops listening: new connections are refused and open ones are dropped, as when the CRM's
    /// host is down. Returns once a connection attempt is refused. State is kept for
    /// [`come_up`](Self::come_up).
    pub async fn go_down(&self) {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the fake HubSpot still accepts connections after stopping"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens again on the same port (same base URL, same contacts and counters).
    pub fn come_up(&self) {
        let running = start_at(self.addr, Arc::clone(&self.state), handle);
        *lock(&self.server) = running.handle;
    }

    /// The next `n` requests get a 429 of `policy`, with `Retry-After` if given.
    pub fn rate_limit_next(&self, n: usize, policy: Policy, retry_after_secs: Option<u64>) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.forced_429.push((policy, retry_after_secs));
        }
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, d: Duration) {
        lock(&self.state).delay = d;
    }

    /// Adds a property to the portal's schema (the "fix" before a replay).
    pub fn add_property(&self, name: &str) {
        lock(&self.state).opts.properties.push(name.to_string());
    }

    pub fn remove_property(&self, name: &str) {
        lock(&self.state).opts.properties.retain(|p| p != name);
    }

    /// Sets a contact's lifecycle stage directly (as a salesperson would in HubSpot).
    pub fn set_stage(&self, email: &str, stage: &str) {
        let mut s = lock(&self.state);
        let id = s.next_id;
        let c = s
            .contacts
            .entry(email.to_lowercase())
            .or_insert_with(|| Contact {
                id: id.to_string(),
                properties: BTreeMap::new(),
            });
        c.properties
            .insert("lifecyclestage".into(), stage.to_string());
        s.next_id += 1;
    }

    // ---- counters

    pub fn requests(&self) -> usize {
        lock(&self.state).arrivals.len()
    }

    /// Requests that reached the fake, including any still waiting out [`set_delay`](Self::set_delay)
    /// (more than [`requests`](Self::requests) while one is being answered).
    pub fn started(&self) -> u64 {
        lock(&self.state).daily_used
    }

    /// 429s sent.
    pub fn rate_limited(&self) -> usize {
        lock(&self.state).rate_limited
    }

    /// The most requests that arrived within any one rolling window.
    pub fn max_in_window(&self) -> usize {
        lock(&self.state).window.max_seen
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state).arrivals.clone()
    }

    /// The `inputs` of every batch upsert that was processed (not refused before processing).
    pub fn batches(&self) -> Vec<Vec<Value>> {
        lock(&self.state).batches.clone()
    }

    /// How many processed upsert inputs named this email.
    pub fn upserts_for(&self, email: &str) -> usize {
        lock(&self.state)
            .upserts
            .get(&email.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// How many times a contact was created for this email (more than 1 is a duplicate).
    pub fn created_for(&self, email: &str) -> usize {
        lock(&self.state)
            .created
            .get(&email.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub fn contact(&self, email: &str) -> Option<Contact> {
        lock(&self.state)
            .contacts
            .get(&email.to_lowercase())
            .cloned()
    }

    pub fn contact_count(&self) -> usize {
        lock(&self.state).contacts.len()
    }

    pub fn ignored_regressions(&self) -> usize {
        lock(&self.state).ignored_regressions
    }

    pub async fn stop(&self) {
        let server = lock(&self.server).clone();
        server.stop(false).await;
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, state: Arc<Mutex<State>>) -> HttpResponse {
    let now = Instant::now();
    let (in_window, delay) = {
        let mut s = lock(&state);
        s.daily_used += 1;
        (s.window.arrive(now), s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(&state);
    let reply = s.answer(&req, &body, in_window);
    let reply = s.with_limit_headers(reply, now);
    s.arrivals
        .push(Arrival::new(&req, &body, now, reply.status));
    if reply.status == 429 {
        s.rate_limited += 1;
    }
    reply.into_response()
}

fn error(status: u16, category: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": category,
        }),
    )
}

impl State {
    fn with_limit_headers(&mut self, r: Reply, now: Instant) -> Reply {
        let remaining = self.window.remaining(now);
        let max = self.opts.window_max;
        r.header("X-HubSpot-RateLimit-Max", max)
            .header("X-HubSpot-RateLimit-Remaining", remaining)
            .header(
                "X-HubSpot-RateLimit-Interval-Milliseconds",
                self.opts.window.as_millis(),
            )
            .header("X-HubSpot-RateLimit-Daily", self.opts.daily_max)
            .header(
                "X-HubSpot-RateLimit-Daily-Remaining",
                self.opts.daily_max.saturating_sub(self.daily_used),
            )
            .header("X-HubSpot-RateLimit-Secondly", max / 10)
            .header("X-HubSpot-RateLimit-Secondly-Remaining", remaining / 10)
    }

    fn too_many(&self, policy: Policy, retry_after: Option<u64>) -> Reply {
        let (message, name) = match policy {
            Policy::TenSecondly => (
                "You have reached your ten_secondly_rolling limit.",
                "TEN_SECONDLY_ROLLING",
            ),
            Policy::Daily => ("You have reached your daily limit.", "DAILY"),
        };
        let r = Reply::json(
            429,
            json!({
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation_id(),
                "policyName": name,
                "groupName": "publicapi:private-app-api-calls-ten-secondly:1",
            }),
        );
        match retry_after {
            Some(s) => r.header("Retry-After", s),
            None => r,
        }
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        let Some(v) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(tok) = v.strip_prefix("Bearer ") else {
            return false;
        };
        tok == self.opts.token || self.issued.iter().any(|t| t == tok)
    }

    fn answer(&mut self, req: &HttpRequest, body: &[u8], in_window: usize) -> Reply {
        let path = req.path();
        let method = req.method().as_str();
        if method == "POST" && path == "/oauth/v1/token" {
            return self.refresh(body);
        }
        if !self.authorized(req) {
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            );
        }
        if !self.forced_429.is_empty() {
            let (policy, ra) = self.forced_429.remove(0);
            return self.too_many(policy, ra);
        }
        if in_window > self.opts.window_max as usize {
            return self.too_many(Policy::TenSecondly, self.opts.retry_after_secs);
        }
        if self.daily_used > self.opts.daily_max {
            return self.too_many(Policy::Daily, self.opts.retry_after_secs);
        }
        let fault = match &self.failing {
            Some(f) => Some(f.clone()),
            None if !self.faults.is_empty() => Some(self.faults.remove(0)),
            None => None,
        };
        if let Some(fault) = fault {
            match fault {
                Fault::Status(423) => return error(423, "LOCKED", "Contact is locked"),
                Fault::Status(477) => {
                    return error(477, "MIGRATION_IN_PROGRESS", "Migration in progress")
                        .header("Retry-After", 1)
                }
                Fault::Status(s) => {
                    return error(s, "INTERNAL_ERROR", "internal error, please try again")
                }
                Fault::Empty => {
                    return Reply::json(
                        200,
                        json!({"status": "COMPLETE", "results": [], "startedAt": now_iso(), "completedAt": now_iso()}),
                    )
                }
            }
        }
        match (method, path) {
            ("POST", "/crm/v3/objects/contacts/batch/upsert") => self.upsert(body),
            ("POST", "/crm/v3/objects/contacts") => self.create_one(body),
            _ => error(404, "OBJECT_NOT_FOUND", "resource not found"),
        }
    }

    fn refresh(&mut self, body: &[u8]) -> Reply {
        let form: HashMap<String, String> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let ok = match &self.opts.oauth {
            Some((id, secret, refresh)) => {
                form.get("grant_type").map(String::as_str) == Some("refresh_token")
                    && form.get("client_id") == Some(id)
                    && form.get("client_secret") == Some(secret)
                    && form.get("refresh_token") == Some(refresh)
            }
            None => false,
        };
        if !ok {
            return Reply::json(
                400,
                json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token", "correlationId": correlation_id()}),
            );
        }
        let token = format!("oauth-{}", uuid::Uuid::new_v4().simple());
        self.issued.push(token.clone());
        Reply::json(
            200,
            json!({"token_type": "bearer", "refresh_token": form.get("refresh_token"), "access_token": token, "expires_in": 1800}),
        )
    }

    /// Problems with one input's properties, as HubSpot's per-property validation list.
    fn validate(&self, props: &Map<String, Value>) -> Vec<Value> {
        let mut problems = Vec::new();
        for (name, v) in props {
            if !self.opts.properties.iter().any(|p| p == name) {
                problems.push(json!({
                    "isValid": false,
                    "message": format!("Property \"{name}\" does not exist"),
                    "error": "PROPERTY_DOESNT_EXIST",
                    "name": name,
                    "localizedErrorMessage": format!("Property \"{name}\" does not exist"),
                    "portalId": 1234567
                }));
                continue;
            }
            let value = v.as_str().unwrap_or("");
            let options: Option<&[&str]> = match name.as_str() {
                "lifecyclestage" => Some(LIFECYCLE),
                "hs_lead_status" => Some(LEAD_STATUS),
                _ => None,
            };
            if let Some(opts) = options {
                if !value.is_empty() && value != "other" && !opts.contains(&value) {
                    problems.push(json!({
                        "isValid": false,
                        "message": format!("{value} was not one of the allowed options: [{}]", opts.join(", ")),
                        "error": "INVALID_OPTION",
                        "name": name,
                        "portalId": 1234567
                    }));
                }
            }
        }
        problems
    }

    fn apply(&mut self, email: &str, props: &Map<String, Value>) -> (Contact, bool) {
        let key = email.to_lowercase();
        let is_new = !self.contacts.contains_key(&key);
        if is_new {
            let id = self.next_id.to_string();
            self.next_id += 1;
            self.contacts.insert(
                key.clone(),
                Contact {
                    id,
                    properties: BTreeMap::new(),
                },
            );
            *self.created.entry(key.clone()).or_default() += 1;
        }
        let mut ignored = 0;
        if let Some(c) = self.contacts.get_mut(&key) {
            for (k, v) in props {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if k == "lifecyclestage" && !value.is_empty() {
                    let rank = |s: &str| LIFECYCLE.iter().position(|x| *x == s);
                    let current = c.properties.get(k).and_then(|cur| rank(cur));
                    if let (Some(cur), Some(new)) = (current, rank(&value)) {
                        if new < cur {
                            // Backwards: accepted with 2xx, ignored.
                            ignored += 1;
                            continue;
                        }
                    }
                }
                c.properties.insert(k.clone(), value);
            }
            c.properties.insert("email".into(), key.clone());
        }
        self.ignored_regressions += ignored;
        let c = self.contacts.get(&key).cloned().unwrap_or(Contact {
            id: String::new(),
            properties: BTreeMap::new(),
        });
        (c, is_new)
    }

    fn upsert(&mut self, body: &[u8]) -> Reply {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1");
        };
        let inputs = v
            .get("inputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if inputs.len() > self.opts.max_inputs {
            return error(
                400,
                "VALIDATION_ERROR",
                &format!(
                    "Batch input too large: {} inputs; the limit is {}",
                    inputs.len(),
                    self.opts.max_inputs
                ),
            );
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in &inputs {
            let id = i
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            *seen.entry(id).or_default() += 1;
        }
        let dups: Vec<&String> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        if !dups.is_empty() {
            let list: Vec<String> = dups.iter().map(|s| s.to_string()).collect();
            return Reply::json(
                400,
                json!({
                    "status": "error",
                    "message": format!("Duplicate IDs found in batch input: [{}]. IDs must be unique", list.join(", ")),
                    "correlationId": correlation_id(),
                    "context": {"ids": list},
                    "category": "VALIDATION_ERROR"
                }),
            );
        }
        self.batches.push(inputs.clone());
        let started = now_iso();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for input in &inputs {
            let id = input.get("id").and_then(Value::as_str).unwrap_or("");
            let trace = input.get("objectWriteTraceId").cloned();
            let props = input
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            *self.upserts.entry(id.to_lowercase()).or_default() += 1;
            let mut problems = self.validate(&props);
            if input.get("idProperty").and_then(Value::as_str) != Some("email") {
                problems.push(json!({"isValid": false, "message": "idProperty must be a unique property", "error": "INVALID_ID_PROPERTY", "name": "idProperty"}));
            }
            if !problems.is_empty() {
                let mut context = Map::new();
                match &trace {
                    Some(t) => {
                        context.insert("objectWriteTraceId".into(), json!([t]));
                    }
                    None => {
                        context.insert("ids".into(), json!([id]));
                    }
                }
                errors.push(json!({
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": format!("Property values were not valid: {}", Value::Array(problems)),
                    "context": context,
                }));
                continue;
            }
            let (c, is_new) = self.apply(id, &props);
            let mut r = json!({
                "id": c.id,
                "new": is_new,
                "properties": c.properties,
                "createdAt": started,
                "updatedAt": started,
                "archived": false,
            });
            if let Some(t) = trace {
                r["objectWriteTraceId"] = t;
            }
            results.push(r);
        }
        if results.is_empty() && !errors.is_empty() {
            let first = &errors[0];
            return Reply::json(
                400,
                json!({
                    "status": "error",
                    "message": first["message"],
                    "correlationId": correlation_id(),
                    "category": "VALIDATION_ERROR",
                    "context": first["context"],
                }),
            );
        }
        let mut body = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": now_iso(),
        });
        if errors.is_empty() {
            Reply::json(200, body)
        } else {
            body["numErrors"] = json!(errors.len());
            body["errors"] = Value::Array(errors);
            Reply::json(207, body)
        }
    }

    fn create_one(&mut self, body: &[u8]) -> Reply {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let props = v
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(email) = props
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return error(400, "VALIDATION_ERROR", "email is required");
        };
        if let Some(c) = self.contacts.get(&email.to_lowercase()) {
            return error(
                409,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {}", c.id),
            );
        }
        let problems = self.validate(&props);
        if !problems.is_empty() {
            return error(
                400,
                "VALIDATION_ERROR",
                &format!("Property values were not valid: {}", Value::Array(problems)),
            );
        }
        let (c, _) = self.apply(&email, &props);
        Reply::json(
            201,
            json!({"id": c.id, "properties": c.properties, "createdAt": now_iso(), "updatedAt": now_iso(), "archived": false}),
        )
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
