//! The admin API under `/admin/`: look at a lead, the inbox, dead letters and the funnel, and
//! re-run what failed. Mounted only when the admin token variable is set, and only on the operator
//! listener; every request needs `Authorization: Bearer <token>` ([`crate::auth`]: constant-time
//! compare, 401, and 429 for an address sending too many wrong tokens). JSON throughout;
//! documented in README.md ("Admin API").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::auth::{ClientKey, Refusal, TokenGuard};
use crate::ingest::error_body;
use crate::lead::Email;
use crate::pipeline::SharedEngine;
use crate::qualify::{qualify, LeadState};
use crate::store::{
    EventId, EventStatus, FunnelCount, ReplayFilter, Store, StoreError, StoredEvent,
};

/// What the admin handlers share.
pub struct Admin {
    pub auth: TokenGuard,
    pub store: Arc<dyn Store>,
    pub engine: SharedEngine,
    /// Wakes the pipeline after a replay.
    pub pipeline_wake: Arc<Notify>,
    /// Wakes delivery after dead letters are re-queued.
    pub delivery_wake: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("too many wrong admin tokens from this address; retry after {} s", .0.as_secs())]
    RateLimited(Duration),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::RateLimited(_) => "rate_limited",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::NotFound(_) => "not_found",
            AdminError::Store(_) => "store_unavailable",
        };
        let mut res = HttpResponse::build(self.status_code());
        match self {
            AdminError::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"leadgate-admin\""));
            }
            AdminError::RateLimited(wait) => {
                res.insert_header((header::RETRY_AFTER, wait.as_secs().to_string()));
            }
            _ => {}
        }
        res.json(error_body(code, &self.to_string()))
    }
}

/// Registers `/admin/*` (call only when a token is configured).
pub fn routes(cfg: &mut web::ServiceConfig, admin: web::Data<Admin>) {
    cfg.service(
        web::scope("/admin")
            .app_data(admin)
            .wrap(from_fn(require_token))
            .route("/leads/{email}", web::get().to(get_lead))
            .route("/events", web::get().to(list_events))
            .route("/events/replay", web::post().to(replay_events))
            .route("/dead-letters", web::get().to(list_dead_letters))
            .route(
                "/dead-letters/{id}/replay",
                web::post().to(replay_dead_letter),
            )
            .route("/funnel", web::get().to(funnel)),
    );
}

async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let Some(admin) = req.app_data::<web::Data<Admin>>() else {
        return Ok(req.into_response(AdminError::Unauthorized.error_response()));
    };
    let client = req
        .peer_addr()
        .map(|a| ClientKey::of(a.ip()))
        .unwrap_or_else(ClientKey::unknown);
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Err(refusal) = admin.auth.check(client, presented) {
        let err = match refusal {
            Refusal::Unauthorized => AdminError::Unauthorized,
            Refusal::RateLimited(wait) => AdminError::RateLimited(wait),
        };
        return Ok(req.into_response(err.error_response()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339()
}

/// `GET /admin/leads/{email}`: stored state, stage history, the score explained as of now, the
/// events that touched the lead, and where its CRM update stands.
async fn get_lead(
    path: web::Path<String>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    let email = Email::parse(&path).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let (rec, events) = admin
        .store
        .lead(email.as_str())
        .await?
        .ok_or_else(|| AdminError::NotFound("no lead with this email".into()))?;
    let state: LeadState = serde_json::from_str(&rec.state)
        .map_err(|e| AdminError::Store(StoreError::Corrupt(format!("lead state: {e}"))))?;
    // Re-evaluating with no new input explains the score as of now (engagement decays) without
    // storing anything.
    let engine = admin.engine.load();
    let explained = qualify(&engine.rules, Some(&state), &[], &[], Utc::now())
        .map(|d| {
            json!({
                "stage": d.stage, "fit_score": d.fit_score, "engagement_score": d.engagement_score,
                "score": d.score, "summary": d.summary, "reasons": d.reasons, "breakdown": d.breakdown,
                "bant": d.bant, "rules_version": d.rules_version,
            })
        })
        .unwrap_or(Value::Null);
    let delivery = admin.store.lead_delivery(email.as_str()).await?;
    let crm = json!({
        "delivered": delivery.delivered.map(|(version, at)| json!({
            "version": version, "at": rfc3339(at),
        })),
        "pending": delivery.pending.map(|p| json!({
            "version": p.version, "attempts": p.attempts, "in_flight": p.in_flight,
            "next_attempt_at": rfc3339(p.next_attempt_at_ms), "last_error": p.last_error,
        })),
        "dead_letters": delivery.dead_letters,
    });
    Ok(HttpResponse::Ok().json(json!({
        "email": rec.email,
        "stage": rec.stage,
        "score": rec.score,
        "version": rec.version,
        "source": rec.source,
        "campaign": rec.campaign,
        "created_at": rfc3339(rec.created_at_ms),
        "updated_at": rfc3339(rec.updated_at_ms),
        "now": explained,
        "history": state.history,
        "events": events.iter().map(EventId::to_string).collect::<Vec<_>>(),
        "crm": crm,
        "state": state,
    })))
}

#[derive(Deserialize)]
struct EventsQuery {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct EventSummary {
    id: String,
    source: String,
    status: EventStatus,
    reason: Option<String>,
    received_at: String,
    content_type: String,
    bytes: usize,
}

impl From<StoredEvent> for EventSummary {
    fn from(e: StoredEvent) -> Self {
        EventSummary {
            id: e.id.to_string(),
            source: e.source,
            status: e.status,
            reason: e.status_reason,
            received_at: rfc3339(e.received_at_ms),
            content_type: e.content_type,
            bytes: e.body.len(),
        }
    }
}

/// `GET /admin/events?status=unmappable&limit=50`: newest first, without bodies.
async fn list_events(
    q: web::Query<EventsQuery>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            AdminError::BadRequest(format!(
                "status {s:?} is not one of received, processed, unmappable"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let events: Vec<EventSummary> = admin
        .store
        .recent_events(status, limit)
        .await?
        .into_iter()
        .map(EventSummary::from)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    source: Option<String>,
    /// RFC 3339 time; only events received since then.
    since: Option<String>,
    /// Also re-process events that were processed (not only unmappable ones).
    #[serde(default)]
    include_processed: bool,
}

/// `POST /admin/events/replay`: re-map stored events after a mapping fix.
async fn replay_events(
    body: Option<web::Json<ReplayBody>>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    let b = body.map(web::Json::into_inner).unwrap_or_default();
    let since_ms = match b.since.as_deref() {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    AdminError::BadRequest(format!("since {s:?} is not an RFC 3339 time: {e}"))
                })?
                .timestamp_millis(),
        ),
        None => None,
    };
    let n = admin
        .store
        .replay_events(ReplayFilter {
            source: b.source,
            since_ms,
            include_processed: b.include_processed,
        })
        .await?;
    admin.pipeline_wake.notify_one();
    Ok(HttpResponse::Ok().json(json!({ "replayed": n })))
}

/// `GET /admin/dead-letters`: updates the CRM refused for good, with its message.
async fn list_dead_letters(admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    let list: Vec<Value> = admin
        .store
        .dead_letters(None)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id, "email": d.email, "version": d.version, "crm": d.crm, "message": d.message,
                "attempts": d.attempts, "first_queued_at": rfc3339(d.first_queued_at_ms),
                "dead_at": rfc3339(d.dead_at_ms), "stage": d.update.stage,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": list })))
}

/// `POST /admin/dead-letters/{id}/replay`: back into the outbox with fresh attempts.
async fn replay_dead_letter(
    path: web::Path<i64>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    let id = path.into_inner();
    let r = admin.store.requeue_dead_letters(Some(vec![id])).await?;
    if !r.not_found.is_empty() {
        return Err(AdminError::NotFound(format!("no dead letter {id}")));
    }
    admin.delivery_wake.notify_one();
    Ok(HttpResponse::Ok().json(json!({ "requeued": r.requeued, "superseded": r.superseded })))
}

/// Counts per stage and the conversion between consecutive stages, for one slice of leads.
#[derive(Serialize, Default)]
struct FunnelSlice {
    leads: u64,
    /// Leads currently at each stage.
    at_stage: BTreeMap<String, u64>,
    /// Leads that reached each stage or a later one (disqualification is not progress).
    reached: BTreeMap<String, u64>,
    /// reached(next) / reached(stage), for consecutive funnel stages.
    conversion: Vec<Conversion>,
}

#[derive(Serialize)]
struct Conversion {
    from: String,
    to: String,
    rate: Option<f64>,
}

fn slice(counts: &[&FunnelCount], stages: &[String]) -> FunnelSlice {
    let mut s = FunnelSlice::default();
    for name in stages {
        s.at_stage.insert(name.clone(), 0);
        s.reached.insert(name.clone(), 0);
    }
    for c in counts {
        s.leads += c.leads;
        *s.at_stage.entry(c.stage.clone()).or_default() += c.leads;
        for (rank, name) in stages.iter().enumerate() {
            if c.max_rank as usize >= rank {
                *s.reached.entry(name.clone()).or_default() += c.leads;
            }
        }
    }
    for pair in stages.windows(2) {
        let from = s.reached.get(&pair[0]).copied().unwrap_or(0);
        let to = s.reached.get(&pair[1]).copied().unwrap_or(0);
        s.conversion.push(Conversion {
            from: pair[0].clone(),
            to: pair[1].clone(),
            rate: (from > 0).then(|| to as f64 / from as f64),
        });
    }
    s
}

/// `GET /admin/funnel`: counts per stage (overall and per first-touch source and campaign) with
/// conversion rates between consecutive stages.
async fn funnel(admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    let engine = admin.engine.load();
    let all: Vec<String> = engine
        .rules
        .stages()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let disqualified = all.get(engine.rules.disqualified_rank() as usize).cloned();
    // Conversion runs along the funnel; the disqualified stage is an exit, not a step.
    let stages: Vec<String> = all
        .iter()
        .filter(|s| Some(*s) != disqualified.as_ref())
        .cloned()
        .collect();
    let counts = admin.store.funnel().await?;
    let total = slice(&counts.iter().collect::<Vec<_>>(), &stages);
    let mut groups: BTreeMap<(Option<String>, Option<String>), Vec<&FunnelCount>> = BTreeMap::new();
    for c in &counts {
        groups
            .entry((c.source.clone(), c.campaign.clone()))
            .or_default()
            .push(c);
    }
    let by_source: Vec<Value> = groups
        .into_iter()
        .map(|((source, campaign), cs)| {
            json!({ "source": source, "campaign": campaign, "funnel": slice(&cs, &stages),
                    "disqualified": disqualified.as_ref().map(|d| cs.iter().filter(|c| &c.stage == d).map(|c| c.leads).sum::<u64>()) })
        })
        .collect();
    let disq_total: u64 = counts
        .iter()
        .filter(|c| Some(&c.stage) == disqualified.as_ref())
        .map(|c| c.leads)
        .sum();
    Ok(HttpResponse::Ok().json(json!({
        "rules_version": engine.rules.version(),
        "stages": stages,
        "disqualified": disq_total,
        "total": total,
        "by_source": by_source,
    })))
}
