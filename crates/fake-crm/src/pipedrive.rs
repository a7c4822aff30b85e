//! A Pipedrive-like API for persons and leads (crm-apis.md §4, §8 "Pipedrive-like").
//!
//! - `x-api-token` header or `?api_token=`; otherwise 401 with the error envelope
//!   `{success:false, error, error_info, data:null, additional_data:null}`.
//! - `GET /api/v2/persons/search?term=&fields=email&exact_match=true`, `POST /api/v2/persons`,
//!   `PATCH /api/v2/persons/{id}`, `GET/POST /v1/leadLabels`, `GET /v1/leads?person_id=`,
//!   `POST /v1/leads` (title and person_id/organization_id required), `PATCH /v1/leads/{id}`.
//! - Query parameters an operation does not document are refused (400), see [`documented`].
//! - A rolling 2 s window per token (default 20) and a separate search window (10 per 2 s) ->
//!   429; a daily token budget with per-endpoint costs -> 429 until reset; headers
//!   `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`, `x-daily-requests-left`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::common::{lock, query, start, Arrival, Fault, Reply, Running, Window};

#[derive(Debug, Clone)]
pub struct PipedriveOptions {
    pub token: String,
    pub window_max: u32,
    pub window: Duration,
    pub search_max: u32,
    /// Daily token budget (30,000 x plan multiplier x seats).
    pub daily_budget: u64,
}

impl Default for PipedriveOptions {
    fn default() -> Self {
        Self {
            token: "pd-test-token".into(),
            window_max: 20,
            window: Duration::from_secs(2),
            search_max: 10,
            daily_budget: 30_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub emails: Vec<String>,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Lead {
    pub id: String,
    pub title: String,
    pub person_id: Option<i64>,
    pub label_ids: Vec<String>,
}

#[derive(Debug)]
struct State {
    opts: PipedriveOptions,
    window: Window,
    search_window: Window,
    budget_used: u64,
    faults: Vec<Fault>,
    delay: Duration,
    arrivals: Vec<Arrival>,
    rate_limited: usize,
    persons: Vec<Person>,
    persons_created: HashMap<String, usize>,
    leads: Vec<Lead>,
    labels: Vec<(String, String)>,
    searches: usize,
    next_person: i64,
}

pub struct FakePipedrive {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    running: Running,
}

impl FakePipedrive {
    pub async fn start() -> Self {
        Self::start_with(PipedriveOptions::default()).await
    }

    pub async fn start_with(opts: PipedriveOptions) -> Self {
        let state = Arc::new(Mutex::new(State {
            window: Window::new(opts.window, opts.window_max),
            search_window: Window::new(opts.window, opts.search_max),
            opts,
            budget_used: 0,
            faults: Vec::new(),
            delay: Duration::ZERO,
            arrivals: Vec::new(),
            rate_limited: 0,
            persons: Vec::new(),
            persons_created: HashMap::new(),
            leads: Vec::new(),
            // Pipedrive's default labels.
            labels: vec![
                ("f981a8c0-0000-4000-8000-000000000001".into(), "Hot".into()),
                ("f981a8c0-0000-4000-8000-000000000002".into(), "Warm".into()),
                ("f981a8c0-0000-4000-8000-000000000003".into(), "Cold".into()),
            ],
            searches: 0,
            next_person: 1,
        }));
        let running = start(Arc::clone(&state), handle);
        Self {
            base_url: running.base_url.clone(),
            state,
            running,
        }
    }

    /// Adds a person as if created in Pipedrive by hand; returns its id.
    pub fn add_person(&self, name: &str, email: &str) -> i64 {
        let mut s = lock(&self.state);
        let id = s.next_person;
        s.next_person += 1;
        s.persons.push(Person {
            id,
            name: name.into(),
            emails: vec![email.to_lowercase()],
            body: json!({}),
        });
        id
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.faults.push(fault.clone());
        }
    }

    pub fn set_delay(&self, d: Duration) {
        lock(&self.state).delay = d;
    }

    pub fn requests(&self) -> usize {
        lock(&self.state).arrivals.len()
    }

    pub fn rate_limited(&self) -> usize {
        lock(&self.state).rate_limited
    }

    pub fn max_in_window(&self) -> usize {
        lock(&self.state).window.max_seen
    }

    pub fn max_searches_in_window(&self) -> usize {
        lock(&self.state).search_window.max_seen
    }

    pub fn searches(&self) -> usize {
        lock(&self.state).searches
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state).arrivals.clone()
    }

    pub fn persons_with(&self, email: &str) -> Vec<Person> {
        let e = email.to_lowercase();
        lock(&self.state)
            .persons
            .iter()
            .filter(|p| p.emails.contains(&e))
            .cloned()
            .collect()
    }

    /// Persons created through the API for this email.
    pub fn created_for(&self, email: &str) -> usize {
        lock(&self.state)
            .persons_created
            .get(&email.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub fn leads_of(&self, person_id: i64) -> Vec<Lead> {
        lock(&self.state)
            .leads
            .iter()
            .filter(|l| l.person_id == Some(person_id))
            .cloned()
            .collect()
    }

    /// Label name by id.
    pub fn label_name(&self, id: &str) -> Option<String> {
        lock(&self.state)
            .labels
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
    }

    pub async fn stop(&self) {
        self.running.handle.stop(false).await;
    }
}

fn fail(status: u16, error: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "success": false,
            "error": error,
            "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
            "data": null,
            "additional_data": null
        }),
    )
}

fn ok(status: u16, data: Value) -> Reply {
    Reply::json(
        status,
        json!({"success": true, "data": data, "additional_data": null}),
    )
}

/// The query parameters an operation documents in Pipedrive's current OpenAPI specs (v1 and
/// v2). Anything else is refused with a 400: the real API ignores some unknown parameters, but a
/// fake that refuses them makes a connector that sends one (say the removed `archived_status`
/// of `GET /v1/leads`) fail its tests.
fn documented(method: &str, parts: &[&str]) -> &'static [&'static str] {
    match (method, parts) {
        ("GET", ["api", "v2", "persons", "search"]) => &[
            "term",
            "fields",
            "exact_match",
            "organization_id",
            "include_fields",
            "limit",
            "cursor",
        ],
        ("GET", ["v1", "leads"]) => &[
            "limit",
            "start",
            "owner_id",
            "person_id",
            "organization_id",
            "filter_id",
            "updated_since",
            "sort",
        ],
        _ => &[],
    }
}

/// Token cost per operation (v2 endpoints cost less), from the specs' `x-token-cost`.
fn cost(method: &str, path: &str) -> u64 {
    match (method, path) {
        ("GET", "/api/v2/persons/search") => 20,
        ("POST", "/api/v2/persons") | ("PATCH", _) if path.starts_with("/api/v2/persons") => 5,
        ("POST", "/v1/leads") => 10,
        ("PATCH", p) if p.starts_with("/v1/leads/") => 10,
        ("GET", "/v1/leads") => 20,
        _ => 2,
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, state: Arc<Mutex<State>>) -> HttpResponse {
    let now = Instant::now();
    let path = req.path().to_string();
    let (in_window, in_search, delay) = {
        let mut s = lock(&state);
        let w = s.window.arrive(now);
        let sw = if path == "/api/v2/persons/search" {
            s.search_window.arrive(now)
        } else {
            0
        };
        (w, sw, s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(&state);
    let reply = s.answer(&req, &path, &body, in_window, in_search);
    let remaining = s.window.remaining(now);
    let reset = s.window.reset_in(now).as_secs_f64().ceil() as u64;
    let left = s.opts.daily_budget.saturating_sub(s.budget_used);
    let reply = reply
        .header("x-ratelimit-limit", s.opts.window_max)
        .header("x-ratelimit-remaining", remaining)
        .header("x-ratelimit-reset", reset.max(1))
        .header("x-daily-requests-left", left);
    if reply.status == 429 {
        s.rate_limited += 1;
    }
    s.arrivals
        .push(Arrival::new(&req, &body, now, reply.status));
    reply.into_response()
}

impl State {
    fn answer(
        &mut self,
        req: &HttpRequest,
        path: &str,
        body: &[u8],
        in_window: usize,
        in_search: usize,
    ) -> Reply {
        let q = query(req);
        let token = req
            .headers()
            .get("x-api-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                q.iter()
                    .find(|(k, _)| k == "api_token")
                    .map(|(_, v)| v.clone())
            });
        if token.as_deref() != Some(self.opts.token.as_str()) {
            return fail(401, "You need to be authorized to make this request.");
        }
        if in_window > self.opts.window_max as usize || in_search > self.opts.search_max as usize {
            return fail(429, "Request over limit");
        }
        let method = req.method().as_str().to_string();
        let c = cost(&method, path);
        if self.budget_used + c > self.opts.daily_budget {
            return fail(429, "Daily request budget exceeded");
        }
        self.budget_used += c;
        if !self.faults.is_empty() {
            match self.faults.remove(0) {
                Fault::Status(429) => return fail(429, "Request over limit"),
                Fault::Status(s) => return fail(s, "Internal server error"),
                Fault::Empty => return ok(200, Value::Null),
            }
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(unknown) = q
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| *k != "api_token" && !documented(&method, &parts).contains(k))
        {
            return fail(
                400,
                &format!("Unknown query parameter {unknown:?} for {method} {path}"),
            );
        }
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["api", "v2", "persons", "search"]) => self.search(&q),
            ("POST", ["api", "v2", "persons"]) => self.create_person(&v),
            ("PATCH", ["api", "v2", "persons", id]) => self.patch_person(id, &v),
            ("GET", ["v1", "leadLabels"]) => ok(
                200,
                Value::Array(
                    self.labels
                        .iter()
                        .map(|(id, n)| json!({"id": id, "name": n, "color": "gray"}))
                        .collect(),
                ),
            ),
            ("POST", ["v1", "leadLabels"]) => {
                let Some(name) = v.get("name").and_then(Value::as_str) else {
                    return fail(400, "Validation failed: name is required");
                };
                let id = uuid::Uuid::new_v4().to_string();
                self.labels.push((id.clone(), name.to_string()));
                ok(
                    200,
                    json!({"id": id, "name": name, "color": v.get("color")}),
                )
            }
            ("GET", ["v1", "leads"]) => {
                let pid = q
                    .iter()
                    .find(|(k, _)| k == "person_id")
                    .and_then(|(_, v)| v.parse::<i64>().ok());
                let list: Vec<Value> = self
                    .leads
                    .iter()
                    .filter(|l| pid.is_none() || l.person_id == pid)
                    .map(lead_json)
                    .collect();
                ok(200, Value::Array(list))
            }
            ("POST", ["v1", "leads"]) => self.create_lead(&v),
            ("PATCH", ["v1", "leads", id]) => self.patch_lead(id, &v),
            _ => fail(404, "Unknown method ."),
        }
    }

    fn search(&mut self, q: &[(String, String)]) -> Reply {
        self.searches += 1;
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(term) = get("term").filter(|t| t.len() >= 2) else {
            return fail(400, "term must be at least 2 characters long");
        };
        let exact = get("exact_match") == Some("true");
        let term = term.to_lowercase();
        let items: Vec<Value> = self
            .persons
            .iter()
            .filter(|p| {
                p.emails
                    .iter()
                    .any(|e| if exact { *e == term } else { e.contains(&term) })
            })
            .map(|p| {
                json!({"result_score": 1.0, "item": {
                    "id": p.id, "type": "person", "name": p.name,
                    "emails": p.emails, "phones": [], "visible_to": 3,
                    "owner": {"id": 1}, "organization": null, "custom_fields": []
                }})
            })
            .collect();
        Reply::json(
            200,
            json!({"success": true, "data": {"items": items}, "additional_data": {"next_cursor": null}}),
        )
    }

    fn person_json(p: &Person) -> Value {
        json!({
            "id": p.id,
            "name": p.name,
            "emails": p.emails.iter().enumerate().map(|(i, e)| json!({"value": e, "primary": i == 0, "label": "work"})).collect::<Vec<_>>(),
            "phones": p.body.get("phones").cloned().unwrap_or(json!([])),
        })
    }

    fn create_person(&mut self, v: &Value) -> Reply {
        let Some(name) = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return fail(400, "Validation failed: name: Name must be given");
        };
        let emails: Vec<String> = v
            .get("emails")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|e| e.get("value").and_then(Value::as_str))
                    .map(str::to_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let id = self.next_person;
        self.next_person += 1;
        for e in &emails {
            *self.persons_created.entry(e.clone()).or_default() += 1;
        }
        let p = Person {
            id,
            name: name.to_string(),
            emails,
            body: v.clone(),
        };
        let out = Self::person_json(&p);
        self.persons.push(p);
        ok(200, out)
    }

    fn patch_person(&mut self, id: &str, v: &Value) -> Reply {
        let Some(p) = id
            .parse::<i64>()
            .ok()
            .and_then(|id| self.persons.iter_mut().find(|p| p.id == id))
        else {
            return fail(404, "Person not found");
        };
        if let Some(n) = v.get("name").and_then(Value::as_str) {
            p.name = n.to_string();
        }
        if let (Some(body), Some(patch)) = (p.body.as_object_mut(), v.as_object()) {
            for (k, val) in patch {
                body.insert(k.clone(), val.clone());
            }
        }
        let out = Self::person_json(p);
        ok(200, out)
    }

    fn check_labels(&self, v: &Value) -> Result<Vec<String>, Reply> {
        let ids: Vec<String> = v
            .get("label_ids")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            if !self.labels.iter().any(|(l, _)| l == id) {
                return Err(fail(400, "Lead label not found"));
            }
        }
        Ok(ids)
    }

    fn create_lead(&mut self, v: &Value) -> Reply {
        let Some(title) = v
            .get("title")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return fail(400, "Validation failed: title: Title is required");
        };
        let person_id = v.get("person_id").and_then(Value::as_i64);
        if person_id.is_none() && v.get("organization_id").and_then(Value::as_i64).is_none() {
            return fail(
                400,
                "A lead must be linked to a person or an organization or both.",
            );
        }
        if let Some(pid) = person_id {
            if !self.persons.iter().any(|p| p.id == pid) {
                return fail(400, "Person not found");
            }
        }
        let labels = match self.check_labels(v) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let lead = Lead {
            id: uuid::Uuid::new_v4().to_string(),
            title: title.to_string(),
            person_id,
            label_ids: labels,
        };
        let out = lead_json(&lead);
        self.leads.push(lead);
        ok(201, out)
    }

    fn patch_lead(&mut self, id: &str, v: &Value) -> Reply {
        let labels = if v.get("label_ids").is_some() {
            match self.check_labels(v) {
                Ok(l) => Some(l),
                Err(r) => return r,
            }
        } else {
            None
        };
        let Some(lead) = self.leads.iter_mut().find(|l| l.id == id) else {
            return fail(404, "Lead not found");
        };
        if let Some(t) = v.get("title").and_then(Value::as_str) {
            lead.title = t.to_string();
        }
        if let Some(l) = labels {
            lead.label_ids = l;
        }
        let out = lead_json(lead);
        ok(200, out)
    }
}

fn lead_json(l: &Lead) -> Value {
    json!({
        "id": l.id, "title": l.title, "person_id": l.person_id, "organization_id": null,
        "label_ids": l.label_ids, "source_name": "API", "origin": "API", "is_archived": false,
        "was_seen": false, "value": null
    })
}
