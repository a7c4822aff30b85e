//! A Salesforce-like REST API for Leads (crm-apis.md §3, §8 "Salesforce-like").
//!
//! - `POST /services/oauth2/token` (`client_credentials`) answers `{access_token, instance_url,
//!   token_type, issued_at, id, signature}`; [`FakeSalesforce::expire_tokens`] ends every session,
//!   after which calls get `401 [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`.
//! - `PATCH /services/data/vXX.X/composite/sobjects/Lead/{ExtField}`: up to 200 records, results
//!   in order `{id, success, errors[{statusCode, message, fields}], created}`; `allOrNone` rolls
//!   back; unknown fields refuse the whole request with `INVALID_FIELD`; restricted `Status`
//!   picklist, required `LastName`/`Company` on create, optional duplicate rule, converted leads.
//! - `PATCH /services/data/vXX.X/sobjects/Lead/{ExtField}/{value}`: single upsert, 201/200.
//! - Every REST answer carries `Sforce-Limit-Info: api-usage=N/M`; past the allocation,
//!   `403 REQUEST_LIMIT_EXCEEDED`. No 429, no `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use crate::common::{lock, start, Arrival, Fault, Reply, Running};

/// A new org's Lead Status picklist.
pub const STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];

#[derive(Debug, Clone)]
pub struct SalesforceOptions {
    pub client_id: String,
    pub client_secret: String,
    /// The org's daily API allocation.
    pub api_limit: u64,
    pub external_id_field: String,
    /// Lead fields the org has (besides the external id field).
    pub fields: Vec<String>,
    /// Refuse a create whose Email another lead already has (`DUPLICATES_DETECTED`).
    pub duplicate_rule: bool,
}

impl Default for SalesforceOptions {
    fn default() -> Self {
        Self {
            client_id: "sf-client".into(),
            client_secret: "sf-secret".into(),
            api_limit: 100_000,
            external_id_field: "Leadgate_Id__c".into(),
            fields: [
                "FirstName",
                "LastName",
                "Company",
                "Title",
                "Phone",
                "Country",
                "Industry",
                "Website",
                "NumberOfEmployees",
                "LeadSource",
                "Email",
                "Status",
                "Leadgate_Score__c",
                "Leadgate_Reason__c",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            duplicate_rule: false,
        }
    }
}

/// A stored Lead.
#[derive(Debug, Clone)]
pub struct Lead {
    pub id: String,
    pub fields: BTreeMap<String, Value>,
    pub converted: bool,
}

#[derive(Debug)]
struct State {
    opts: SalesforceOptions,
    base_url: String,
    tokens: Vec<String>,
    tokens_issued: usize,
    api_used: u64,
    faults: Vec<Fault>,
    delay: Duration,
    arrivals: Vec<Arrival>,
    /// External id -> lead.
    leads: HashMap<String, Lead>,
    created: HashMap<String, usize>,
    batches: Vec<usize>,
    next_id: u64,
}

pub struct FakeSalesforce {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    running: Running,
}

impl FakeSalesforce {
    pub async fn start() -> Self {
        Self::start_with(SalesforceOptions::default()).await
    }

    pub async fn start_with(opts: SalesforceOptions) -> Self {
        let state = Arc::new(Mutex::new(State {
            opts,
            base_url: String::new(),
            tokens: Vec::new(),
            tokens_issued: 0,
            api_used: 0,
            faults: Vec::new(),
            delay: Duration::ZERO,
            arrivals: Vec::new(),
            leads: HashMap::new(),
            created: HashMap::new(),
            batches: Vec::new(),
            next_id: 1,
        }));
        let running = start(Arc::clone(&state), handle);
        lock(&state).base_url = running.base_url.clone();
        Self {
            base_url: running.base_url.clone(),
            state,
            running,
        }
    }

    /// Ends every session: the next call with an old token gets 401 `INVALID_SESSION_ID`.
    pub fn expire_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    pub fn tokens_issued(&self) -> usize {
        lock(&self.state).tokens_issued
    }

    /// Sets the API calls used so far today.
    pub fn set_api_used(&self, used: u64) {
        lock(&self.state).api_used = used;
    }

    pub fn api_used(&self) -> u64 {
        lock(&self.state).api_used
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

    /// Marks a lead converted: later updates fail with `CANNOT_UPDATE_CONVERTED_LEAD`.
    pub fn convert(&self, external_id: &str) {
        if let Some(l) = lock(&self.state).leads.get_mut(external_id) {
            l.converted = true;
        }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state).arrivals.clone()
    }

    pub fn requests(&self) -> usize {
        lock(&self.state).arrivals.len()
    }

    /// Record counts of every collection upsert processed.
    pub fn batches(&self) -> Vec<usize> {
        lock(&self.state).batches.clone()
    }

    pub fn lead(&self, external_id: &str) -> Option<Lead> {
        lock(&self.state).leads.get(external_id).cloned()
    }

    pub fn lead_count(&self) -> usize {
        lock(&self.state).leads.len()
    }

    pub fn created_for(&self, external_id: &str) -> usize {
        lock(&self.state)
            .created
            .get(external_id)
            .copied()
            .unwrap_or(0)
    }

    pub async fn stop(&self) {
        self.running.handle.stop(false).await;
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, state: Arc<Mutex<State>>) -> HttpResponse {
    let now = Instant::now();
    let delay = lock(&state).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(&state);
    let reply = s.answer(&req, &body);
    s.arrivals
        .push(Arrival::new(&req, &body, now, reply.status));
    reply.into_response()
}

fn errors(status: u16, list: Value) -> Reply {
    Reply::json(status, list)
}

fn one_error(status: u16, code: &str, message: &str) -> Reply {
    errors(status, json!([{ "message": message, "errorCode": code }]))
}

impl State {
    fn answer(&mut self, req: &HttpRequest, body: &[u8]) -> Reply {
        let path = req.path().to_string();
        if req.method().as_str() == "POST" && path == "/services/oauth2/token" {
            return self.token(body);
        }
        let authed = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.tokens.iter().any(|x| x == t));
        if !authed {
            return one_error(401, "INVALID_SESSION_ID", "Session expired or invalid");
        }
        self.api_used += 1;
        let r = self.rest(req, &path, body);
        let info = format!("api-usage={}/{}", self.api_used, self.opts.api_limit);
        r.header("Sforce-Limit-Info", info)
    }

    fn token(&mut self, body: &[u8]) -> Reply {
        let form: HashMap<String, String> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Reply::json(
                400,
                json!({"error": "unsupported_grant_type", "error_description": "grant type not supported"}),
            );
        }
        if form.get("client_id") != Some(&self.opts.client_id)
            || form.get("client_secret") != Some(&self.opts.client_secret)
        {
            return Reply::json(
                400,
                json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
            );
        }
        let token = format!("00Dfake!{}", uuid::Uuid::new_v4().simple());
        self.tokens.push(token.clone());
        self.tokens_issued += 1;
        let issued = chrono::Utc::now().timestamp_millis().to_string();
        Reply::json(
            200,
            json!({
                "access_token": token,
                "signature": "c2lnbmF0dXJl",
                "token_format": "opaque",
                "scope": "api",
                "instance_url": self.base_url,
                "id": format!("{}/id/00Dfake/005fake", self.base_url),
                "token_type": "Bearer",
                "issued_at": issued,
            }),
        )
    }

    fn rest(&mut self, req: &HttpRequest, path: &str, body: &[u8]) -> Reply {
        if self.api_used > self.opts.api_limit {
            return one_error(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            );
        }
        if !self.faults.is_empty() {
            match self.faults.remove(0) {
                Fault::Status(503) => {
                    return one_error(503, "SERVER_UNAVAILABLE", "Server unavailable")
                }
                Fault::Status(s) => {
                    return one_error(s, "UNKNOWN_EXCEPTION", "An unexpected error occurred.")
                }
                Fault::Empty => return Reply::json(200, json!([])),
            }
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().as_str();
        match (method, parts.as_slice()) {
            ("PATCH", ["services", "data", v, "composite", "sobjects", "Lead", field])
                if v.starts_with('v') =>
            {
                self.collection(field, body)
            }
            ("PATCH", ["services", "data", v, "sobjects", "Lead", field, value])
                if v.starts_with('v') =>
            {
                self.single(field, value, body)
            }
            _ => one_error(404, "NOT_FOUND", "The requested resource does not exist"),
        }
    }

    fn unknown_field(&self, record: &Map<String, Value>) -> Option<String> {
        record
            .keys()
            .find(|k| {
                k.as_str() != "attributes"
                    && **k != self.opts.external_id_field
                    && !self.opts.fields.iter().any(|f| f == *k)
            })
            .cloned()
    }

    /// Validates and (unless `dry`) writes one record; returns the result object.
    fn upsert_one(&mut self, ext_value: &str, record: &Map<String, Value>, dry: bool) -> Value {
        let fail = |code: &str, msg: &str, fields: Vec<&str>| json!({"success": false, "errors": [{"statusCode": code, "message": msg, "fields": fields}]});
        if ext_value.is_empty() {
            return fail(
                "MISSING_ARGUMENT",
                &format!("{} not specified", self.opts.external_id_field),
                vec![],
            );
        }
        if let Some(Value::String(st)) = record.get("Status") {
            if !STATUSES.contains(&st.as_str()) {
                return fail(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("bad value for restricted picklist field: {st}"),
                    vec!["Status"],
                );
            }
        }
        let existing = self.leads.get(ext_value).cloned();
        match &existing {
            Some(l) if l.converted => {
                return fail(
                    "CANNOT_UPDATE_CONVERTED_LEAD",
                    "cannot reference converted lead",
                    vec![],
                )
            }
            Some(_) => {}
            None => {
                let missing: Vec<&str> = ["LastName", "Company"]
                    .into_iter()
                    .filter(|f| {
                        record
                            .get(*f)
                            .and_then(Value::as_str)
                            .is_none_or(|s| s.is_empty())
                    })
                    .collect();
                if !missing.is_empty() {
                    return fail(
                        "REQUIRED_FIELD_MISSING",
                        &format!("Required fields are missing: [{}]", missing.join(", ")),
                        missing,
                    );
                }
                if self.opts.duplicate_rule {
                    let email = record.get("Email").and_then(Value::as_str).unwrap_or("");
                    let dup = self.leads.values().find(|l| {
                        l.fields.get("Email").and_then(Value::as_str) == Some(email)
                            && !email.is_empty()
                    });
                    if let Some(d) = dup {
                        return json!({"success": false, "errors": [{
                            "statusCode": "DUPLICATES_DETECTED",
                            "message": "Use one of these records?",
                            "fields": [],
                            "duplicateResult": {
                                "allowSave": false,
                                "duplicateRule": "Standard_Lead_Duplicate_Rule",
                                "duplicateRuleEntityType": "Lead",
                                "matchResults": [{"entityType": "Lead", "rule": "Standard_Lead_Match_Rule_v1_0",
                                    "matchRecords": [{"record": {"Id": d.id}, "matchConfidence": 95.0}]}]
                            }
                        }]});
                    }
                }
            }
        }
        if dry {
            return json!({"success": true});
        }
        let created = existing.is_none();
        let id = match existing {
            Some(l) => l.id,
            None => {
                let id = format!("00Q{:015}", self.next_id);
                self.next_id += 1;
                *self.created.entry(ext_value.to_string()).or_default() += 1;
                id
            }
        };
        let lead = self.leads.entry(ext_value.to_string()).or_insert(Lead {
            id: id.clone(),
            fields: BTreeMap::new(),
            converted: false,
        });
        for (k, v) in record {
            if k != "attributes" {
                lead.fields.insert(k.clone(), v.clone());
            }
        }
        json!({"id": id, "success": true, "errors": [], "created": created})
    }

    fn collection(&mut self, field: &str, body: &[u8]) -> Reply {
        if field != self.opts.external_id_field {
            return one_error(
                400,
                "INVALID_FIELD",
                &format!(
                    "Field name provided, {field} is not an External ID or indexed field for Lead"
                ),
            );
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return one_error(400, "JSON_PARSER_ERROR", "Unexpected character at [line:1]");
        };
        let records = v
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if records.len() > 200 {
            return one_error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            );
        }
        let all_or_none = v.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
        let maps: Vec<Map<String, Value>> = records
            .iter()
            .map(|r| r.as_object().cloned().unwrap_or_default())
            .collect();
        for m in &maps {
            if let Some(bad) = self.unknown_field(m) {
                return errors(
                    400,
                    json!([{"errorCode": "INVALID_FIELD", "message": format!("No such column '{bad}' on sobject of type Lead"), "fields": null}]),
                );
            }
        }
        self.batches.push(maps.len());
        let ext_of = |m: &Map<String, Value>, f: &str| {
            m.get(f).and_then(Value::as_str).unwrap_or("").to_string()
        };
        if all_or_none {
            let checks: Vec<Value> = maps
                .iter()
                .map(|m| {
                    let ext = ext_of(m, field);
                    self.upsert_one(&ext, m, true)
                })
                .collect();
            if checks.iter().any(|c| c["success"] != json!(true)) {
                let out: Vec<Value> = checks
                    .into_iter()
                    .map(|c| {
                        if c["success"] == json!(true) {
                            json!({"success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []}]})
                        } else {
                            c
                        }
                    })
                    .collect();
                return Reply::json(200, Value::Array(out));
            }
        }
        let out: Vec<Value> = maps
            .iter()
            .map(|m| {
                let ext = ext_of(m, field);
                self.upsert_one(&ext, m, false)
            })
            .collect();
        Reply::json(200, Value::Array(out))
    }

    fn single(&mut self, field: &str, value: &str, body: &[u8]) -> Reply {
        if field != self.opts.external_id_field {
            return one_error(
                400,
                "INVALID_FIELD",
                &format!(
                    "Field name provided, {field} is not an External ID or indexed field for Lead"
                ),
            );
        }
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return one_error(400, "JSON_PARSER_ERROR", "Unexpected character at [line:1]");
        };
        if let Some(bad) = self.unknown_field(&m) {
            return errors(
                400,
                json!([{"errorCode": "INVALID_FIELD", "message": format!("No such column '{bad}' on sobject of type Lead"), "fields": null}]),
            );
        }
        let r = self.upsert_one(value, &m, false);
        if r["success"] == json!(true) {
            let status = if r["created"] == json!(true) {
                201
            } else {
                200
            };
            Reply::json(status, r)
        } else {
            let list: Vec<Value> = r["errors"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| json!({"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}))
                .collect();
            errors(400, Value::Array(list))
        }
    }
}
