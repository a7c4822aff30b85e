//! Probes: `GET /healthz` (the process answers) and `GET /readyz` (config loaded, store writable,
//! not draining), on both listeners. Readiness turns false as soon as shutdown starts, so load
//! balancers stop routing before the listeners close, and while the store cannot take a write
//! (database down, read-only or full), so traffic goes to replicas that can. Both answers of
//! `/readyz` name the rules and mappings versions this replica runs, so replicas that differ
//! mid-rollout show.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::pipeline::SharedEngine;
use crate::store::Store;

pub struct Health {
    pub store: Arc<dyn Store>,
    pub draining: Arc<AtomicBool>,
    pub engine: SharedEngine,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// `GET /metrics` (mounted with the operator routes): the recorded families plus the queue
/// gauges, read from the store when scraped.
pub async fn metrics(health: web::Data<Health>) -> HttpResponse {
    crate::telemetry::render_metrics(health.store.as_ref()).await
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let engine = health.engine.load();
    let versions = |mut body: serde_json::Value| {
        body["rules_version"] = engine.rules.version().into();
        body["mappings_version"] = engine.mappings_version.as_str().into();
        body
    };
    if health.draining.load(Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(versions(crate::ingest::error_body(
            "draining",
            "shutting down",
        )));
    }
    match health.store.check_writable().await {
        Ok(()) => HttpResponse::Ok().json(versions(serde_json::json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: store not writable");
            HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
                .json(versions(crate::ingest::error_body(
                    "store_unavailable",
                    "the store is not writable",
                )))
        }
    }
}
