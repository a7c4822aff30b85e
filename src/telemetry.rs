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
use actix_web::{HttpMessage, HttpResponse, Responder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

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

/// The process-wide Prometheus recorder, installed on first use.
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
        describe_replica_metrics();
        handle
    })
}

/// `# HELP` for the series that tell replicas apart (README.md's metric table says the same).
fn describe_replica_metrics() {
    metrics::describe_gauge!(
        "leadgate_delivery_leader",
        "1 on the replica that holds the delivery lease (delivers), 0 on the others"
    );
    metrics::describe_gauge!(
        "leadgate_config_info",
        "1 for the rules and mappings this replica runs (0 for ones it ran before a reload)"
    );
    metrics::describe_counter!(
        "leadgate_leads_rebuilt_total",
        "leads re-applied in provider-time order after a late event (rebuilt), or merged because older inputs were not logged (merged)"
    );
}

/// `GET /metrics`: Prometheus text format.
pub async fn render_metrics() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics().render())
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
