//! Receiving webhooks: route ([`receive`]), verify (one file per scheme), decode, then hand the
//! event to the store. Nothing after the store runs in the request: a slow CRM never fails a
//! provider's webhook.

pub mod decode;
mod error;
mod receive;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web;
use governor::DefaultDirectRateLimiter;
use metrics::Counter;
use tokio::sync::Notify;

pub use self::error::{error_body, IngestError};
use crate::config::SourceConfig;
use crate::store::Store;

/// A configured source with its runtime state (rate limiter, metric handles).
pub struct Source {
    pub cfg: SourceConfig,
    limiter: Option<DefaultDirectRateLimiter>,
    received: Counter,
    accepted: Counter,
    duplicates: Counter,
}

impl Source {
    pub fn new(cfg: SourceConfig) -> Self {
        let label = cfg.name.as_str().to_string();
        // README's alert on refused signatures uses rate(): the series exist before the first.
        for reason in ["invalid_signature", "missing_signature"] {
            metrics::counter!("leadgate_webhooks_rejected_total", "source" => label.clone(), "reason" => reason)
                .increment(0);
        }
        Source {
            limiter: cfg
                .rate_limit
                .map(|r| governor::RateLimiter::direct(r.quota())),
            received: metrics::counter!("leadgate_webhooks_received_total", "source" => label.clone()),
            accepted: metrics::counter!("leadgate_webhooks_accepted_total", "source" => label.clone()),
            duplicates: metrics::counter!("leadgate_webhooks_duplicate_total", "source" => label),
            cfg,
        }
    }

    fn rejected(&self, reason: &'static str) {
        metrics::counter!(
            "leadgate_webhooks_rejected_total",
            "source" => self.cfg.name.as_str().to_string(),
            "reason" => reason
        )
        .increment(1);
    }
}

/// What the webhook routes share across HTTP workers.
pub struct Ingest {
    sources: HashMap<String, Arc<Source>>,
    store: Arc<dyn Store>,
    /// Woken after each stored event so the pipeline picks it up without polling delay.
    events_waiting: Arc<Notify>,
}

impl Ingest {
    pub fn new(
        sources: &[SourceConfig],
        store: Arc<dyn Store>,
        events_waiting: Arc<Notify>,
    ) -> Self {
        Ingest {
            sources: sources
                .iter()
                .map(|s| {
                    (
                        s.name.as_str().to_string(),
                        Arc::new(Source::new(s.clone())),
                    )
                })
                .collect(),
            store,
            events_waiting,
        }
    }

    fn source(&self, name: &str) -> Option<Arc<Source>> {
        self.sources.get(name).cloned()
    }
}

/// Registers `/webhooks/{source}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks/{source}")
            .route(web::post().to(receive::receive))
            .route(web::get().to(receive::check_url))
            .route(web::head().to(receive::check_url))
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(IngestError::MethodNotAllowed)
            })),
    );
}
