//! `POST /webhooks/{source}`: rate limit -> read the body under the limit -> verify -> decode ->
//! persist -> 202. Also `GET`/`HEAD` for providers that validate URLs (Mailchimp, Mandrill).

use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use governor::clock::{Clock, DefaultClock};
use sha2::{Digest, Sha256};

use super::decode;
use super::verify::{Inbound, Verified};
use super::{Ingest, IngestError, Source};
use crate::store::{EventId, Inserted, NewEvent};
use crate::telemetry::LogNote;

/// The `source` label of refusals at a URL no source is configured for (not a valid source name,
/// so it never collides with one).
pub const UNKNOWN_SOURCE: &str = "(unknown)";

/// Longest provider event id kept verbatim; longer ones are hashed.
const MAX_EVENT_ID: usize = 200;

pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    ingest: web::Data<Ingest>,
) -> Result<HttpResponse, IngestError> {
    let Some(source) = ingest.source(&path) else {
        // A URL typo on the provider's side shows up here; the path itself is not a label
        // (anyone can invent paths, and labels must stay few).
        metrics::counter!(
            "leadgate_webhooks_rejected_total",
            "source" => UNKNOWN_SOURCE,
            "reason" => IngestError::UnknownSource.code()
        )
        .increment(1);
        return Err(IngestError::UnknownSource);
    };
    let result = accept(&req, payload, &ingest, &source).await;
    let (event_id, outcome, detail) = match &result {
        Ok(Accepted::Stored(id)) => (Some(id.to_string()), "stored", None),
        Ok(Accepted::Duplicate(id)) => (Some(id.to_string()), "duplicate", None),
        Ok(Accepted::UrlCheck) => (None, "url_check", None),
        Err(e) => {
            source.rejected(e.code());
            if let IngestError::Store(inner) = e {
                tracing::error!(error = %inner, "cannot store a webhook; answered 503 so the provider retries");
            }
            (None, e.code(), Some(e.to_string()))
        }
    };
    req.extensions_mut().insert(LogNote {
        source: source.cfg.name.as_str().to_string(),
        event_id,
        outcome,
        detail,
    });
    result.map(|a| match a {
        Accepted::Stored(id) => {
            HttpResponse::Accepted().json(serde_json::json!({ "id": id.to_string() }))
        }
        Accepted::Duplicate(id) => {
            HttpResponse::Ok().json(serde_json::json!({ "id": id.to_string(), "duplicate": true }))
        }
        Accepted::UrlCheck => HttpResponse::Ok().json(serde_json::json!({ "ok": true })),
    })
}

/// What happened to an accepted delivery.
enum Accepted {
    Stored(EventId),
    /// Seen before; nothing new stored.
    Duplicate(EventId),
    /// An empty POST a provider sends to check the URL; nothing to store.
    UrlCheck,
}

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    ingest: &Ingest,
    source: &Source,
) -> Result<Accepted, IngestError> {
    source.received.increment(1);
    if let Some(limiter) = &source.limiter {
        if let Err(not_until) = limiter.check() {
            return Err(IngestError::RateLimited(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
    }
    let body = read_body(req, payload, source.cfg.body_limit).await?;

    let now = SystemTime::now();
    let inbound = Inbound {
        method: req.method().as_str(),
        url: &source.cfg.url,
        url_is_exact: source.cfg.url_is_exact,
        query: req.query_string(),
        headers: req.headers(),
        body: &body,
        now,
    };
    let verified = source.cfg.verifier.verify(&inbound)?;

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if body.iter().all(u8::is_ascii_whitespace) && source.cfg.verifier.answers_url_check() {
        // Some providers "validate" a URL with an empty POST; nothing to store.
        return Ok(Accepted::UrlCheck);
    }
    let checked = decode::check(
        content_type,
        &body,
        &source.cfg.decode,
        source.cfg.event_id.as_ref(),
    )?;
    let dedupe_key = dedupe_key(verified, checked.event_id, &body);
    // JSON bodies are stored as they came; forms and multipart also as decoded JSON.
    let payload = checked.payload.map(|v| v.to_string());
    let event = NewEvent {
        source: source.cfg.name.as_str().to_string(),
        dedupe_key,
        received_at_ms: crate::ingest::verify::unix_millis(now),
        content_type: content_type.unwrap_or_default().to_string(),
        body,
        payload,
    };
    match ingest.store.insert_event(event).await? {
        Inserted::New(id) => {
            source.accepted.increment(1);
            ingest.events_waiting.notify_one();
            Ok(Accepted::Stored(id))
        }
        Inserted::Duplicate(id) => {
            source.duplicates.increment(1);
            Ok(Accepted::Duplicate(id))
        }
    }
}

/// Reads the body, refusing as soon as it is known to exceed `limit`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| IngestError::BodyRead)?;
        if buf.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The provider's id for this delivery, so a redelivery is recognised: the scheme's own id
/// (`webhook-id`, Mailgun token), else the one at the source's JSONPath (`$.event_id`), else a
/// hash of the body.
fn dedupe_key(verified: Verified, from_body: Option<String>, body: &[u8]) -> String {
    match verified.event_id.or(from_body) {
        Some(id) if id.len() <= MAX_EVENT_ID => id,
        Some(id) => format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes()))),
        None => format!("body-sha256:{}", hex::encode(Sha256::digest(body))),
    }
}

/// `GET`/`HEAD` on a source URL: 200 where the provider validates URLs that way, else 405.
pub async fn check_url(
    path: web::Path<String>,
    ingest: web::Data<Ingest>,
) -> Result<HttpResponse, IngestError> {
    let source: Arc<Source> = ingest.source(&path).ok_or(IngestError::UnknownSource)?;
    if source.cfg.verifier.answers_url_check() {
        Ok(HttpResponse::Ok().json(serde_json::json!({ "ok": true })))
    } else {
        Err(IngestError::MethodNotAllowed)
    }
}
