//! Logs, request spans and metrics.
//!
//! Logging policy: a line may carry ids (request, event, source name), codes and counts. It never
//! carries a secret, a signature, a body, an email address or a name. Request spans record the
//! route pattern, not the raw URL, because token-scheme sources carry their secret in the query.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::deliver::limiter::PauseReason;
use crate::store::{EventStatus, Store, StoreError};

/// Installs the global log subscriber once; later calls are no-ops (tests build many apps).
///
/// Lines are written to stdout by a background thread, so a request never waits on a `write`
/// syscall; the buffer blocks rather than drops when full. Keep the returned guard alive until
/// exit: dropping it flushes what is buffered.
pub fn init_logging(cfg: &LogConfig) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        // When stdout is gone (a closed pipe), tracing-subscriber reports the failed write with
        // `eprintln!`, which panics if stderr is gone too, killing whichever task logged: the
        // shutdown task or a worker. Losing log lines is better than hanging on SIGTERM.
        .log_internal_errors(false);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// A metric family's type, as `# TYPE` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family leadgate exports, with its `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn doc(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every family `/metrics` exports. README.md's metric table says the same words (without its
/// backticks); tests/it/docs.rs keeps the two in step.
pub const METRIC_DOCS: &[MetricDoc] = &[
    doc("leadgate_webhooks_received_total", Counter, &["source"], "deliveries to a configured source"),
    doc("leadgate_webhooks_accepted_total", Counter, &["source"], "stored and answered 202"),
    doc("leadgate_webhooks_duplicate_total", Counter, &["source"], "redeliveries answered 200, not stored"),
    doc("leadgate_webhooks_rejected_total", Counter, &["source", "reason"], "refused, by error code (invalid_signature, rate_limited, ...); source=\"(unknown)\" for unknown_source"),
    doc("leadgate_inbox_pending", Gauge, &[], "stored events waiting to be mapped, counted when scraped"),
    doc("leadgate_events_processed_total", Counter, &["source", "outcome"], "events mapped (processed) or kept unmappable"),
    doc("leadgate_stage_transitions_total", Counter, &["source", "stage", "from"], "leads entering a stage (stage), by the stage they left (from, new for a new lead) and the source of the event"),
    doc("leadgate_reloads_total", Counter, &["outcome"], "mapping/rules reloads, ok or refused"),
    doc("leadgate_outbox_pending", Gauge, &[], "CRM updates waiting, counted when scraped"),
    doc("leadgate_outbox_in_flight", Gauge, &[], "CRM updates being sent, counted when scraped"),
    doc("leadgate_dead_letters", Gauge, &[], "dead letters waiting for a fix and a replay, counted when scraped"),
    doc("leadgate_crm_requests_total", Counter, &["crm", "status"], "HTTP requests to the CRM by connector and status code (error: no answer, e.g. timeout)"),
    doc("leadgate_crm_records_total", Counter, &["crm", "outcome"], "records delivered, to retry, paused (not charged) or dead_letter"),
    doc("leadgate_crm_pauses_total", Counter, &["reason"], "delivery paused: rate_limited, daily_limit, auth, endpoint_gone"),
    doc("leadgate_crm_stage_kept_by_crm_total", Counter, &["crm"], "HubSpot kept a later lifecycle stage than the one sent"),
    doc("leadgate_ratelimit_wait_seconds", Histogram, &[], "time each CRM request waited for the rate limiter"),
    doc("leadgate_crm_batch_seconds", Histogram, &["crm"], "time to send one batch and record the outcomes"),
    doc("leadgate_delivery_latency_seconds", Histogram, &["crm"], "from a lead state's queueing to the CRM accepting it"),
    doc("leadgate_admin_auth_failures_total", Counter, &["outcome"], "admin requests refused for a missing or wrong token: unauthorized (401) or rate_limited (429)"),
    doc("leadgate_delivery_leader", Gauge, &["crm"], "1 on the replica that holds the delivery lease (delivers), 0 on the others"),
    doc("leadgate_leads_rebuilt_total", Counter, &["outcome"], "leads re-applied in provider-time order after a late event (rebuilt), or merged because older inputs were not logged (merged)"),
    doc("leadgate_config_info", Gauge, &["rules_version", "mappings_version"], "1 for the rules and mappings this replica runs (0 for ones it ran before a reload)"),
];

/// The process-wide Prometheus recorder, installed on first use, with every family described
/// and the event-driven series that have fixed labels registered at 0, so `increase()` and
/// alerts see their first event.
pub fn metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ])
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays empty.
        let _ = metrics::set_global_recorder(recorder);
        for m in METRIC_DOCS
            .iter()
            .filter(|m| !STORE_GAUGES.contains(&m.name))
        {
            match m.kind {
                Counter => metrics::describe_counter!(m.name, m.help),
                Gauge => metrics::describe_gauge!(m.name, m.help),
                Histogram => metrics::describe_histogram!(m.name, m.help),
            }
        }
        for outcome in ["ok", "refused"] {
            metrics::counter!("leadgate_reloads_total", "outcome" => outcome).increment(0);
        }
        for reason in PauseReason::ALL {
            metrics::counter!("leadgate_crm_pauses_total", "reason" => reason.as_str())
                .increment(0);
        }
        handle
    })
}

/// Gauges read from the store at each scrape instead of recorded as things change: they are
/// right whenever scraped (a worker waiting on a hanging CRM request updates nothing), cost the
/// ingest path nothing, and each app reports its own store (one recorder serves the process).
pub const STORE_GAUGES: [&str; 4] = [
    "leadgate_inbox_pending",
    "leadgate_outbox_pending",
    "leadgate_outbox_in_flight",
    "leadgate_dead_letters",
];

/// The [`STORE_GAUGES`] values, in that order. Reads only, from the store's readers.
pub async fn queue_depths(store: &dyn Store) -> Result<[u64; 4], StoreError> {
    let inbox = store.count_events(EventStatus::Received).await?;
    let depth = store.outbox_depth().await?;
    Ok([inbox, depth.pending, depth.in_flight, depth.dead_letters])
}

/// `GET /metrics`: Prometheus text format, the recorded families plus the queue gauges of
/// `store`.
pub async fn render_metrics(store: &dyn Store) -> HttpResponse {
    let mut text = metrics().render();
    match queue_depths(store).await {
        Ok(values) => {
            for (name, value) in STORE_GAUGES.iter().zip(values) {
                let help = METRIC_DOCS
                    .iter()
                    .find(|m| m.name == *name)
                    .map_or("", |m| m.help);
                text.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n\n"
                ));
            }
        }
        // Absent series say "unknown" honestly; the recorded families are still worth a scrape.
        Err(e) => tracing::warn!(error = %e, "cannot read the queue depths for /metrics"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a handler wants on its request's log line (put in the request's extensions). Logging it
/// with the completion event, rather than recording span fields as the request goes, keeps a
/// webhook to one cheap line: each span-field record re-formats the span's fields.
#[derive(Debug, Clone)]
pub struct LogNote {
    pub source: String,
    pub event_id: Option<String>,
    /// `stored`, `duplicate`, or the refusal's error code.
    pub outcome: &'static str,
    /// Why a request was refused (never a secret or payload content).
    pub detail: Option<String>,
}

/// Wraps each request in a span with a request id, and logs one line when it completes.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let quiet = matches!(req.path(), "/healthz" | "/readyz" | "/metrics");
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    let route = res.request().match_pattern();
    let route = route.as_deref().unwrap_or("unmatched");
    let note = res.request().extensions().get::<LogNote>().cloned();
    match note {
        Some(n) => tracing::info!(
            parent: &span,
            %method,
            route,
            status,
            latency_us,
            source = %n.source,
            event_id = n.event_id.as_deref().unwrap_or(""),
            outcome = n.outcome,
            detail = n.detail.as_deref().unwrap_or(""),
            "request completed"
        ),
        None if quiet => {
            tracing::debug!(parent: &span, %method, route, status, latency_us, "request completed")
        }
        None => {
            tracing::info!(parent: &span, %method, route, status, latency_us, "request completed")
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    Ok(res)
}
