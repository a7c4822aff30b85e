//! Everything that can refuse a webhook, mapped to HTTP exactly once, as the contract in
//! DESIGN.md says: a status code and `{"error": "<code>", "message": "<text>"}`. Bodies never echo
//! secrets, signatures or the payload.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use super::decode::DecodeError;
use super::verify::VerifyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source is configured at this URL")]
    UnknownSource,
    #[error("too many requests for this source; retry after {} s", retry_secs(.0))]
    RateLimited(Duration),
    #[error("the body is larger than this source's limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body could not be read")]
    BodyRead,
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the event could not be stored; retry later")]
    Store(#[from] StoreError),
    #[error("this URL accepts POST")]
    MethodNotAllowed,
}

fn retry_secs(d: &Duration) -> u64 {
    // Round up so a client waiting this long is never early.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IngestError {
    /// Stable machine code, also the `reason` label of the rejection metric.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::UnknownSource => "unknown_source",
            IngestError::RateLimited(_) => "rate_limited",
            IngestError::TooLarge(_) => "body_too_large",
            IngestError::BodyRead => "body_read_failed",
            IngestError::Verify(e) => e.code(),
            IngestError::Decode(DecodeError::Unsupported(_) | DecodeError::MissingContentType) => {
                "unsupported_media_type"
            }
            IngestError::Decode(DecodeError::Malformed(_)) => "invalid_body",
            IngestError::Store(_) => "store_unavailable",
            IngestError::MethodNotAllowed => "method_not_allowed",
        }
    }

    fn message(&self) -> String {
        match self {
            IngestError::Verify(VerifyError::MissingHeader(h)) => {
                format!("the {h} header is missing")
            }
            IngestError::Verify(VerifyError::Malformed(..) | VerifyError::Mismatch) => {
                "the signature does not verify".into()
            }
            IngestError::Verify(VerifyError::Stale(_) | VerifyError::Future(_)) => {
                "the signed timestamp is outside the replay window; check the sender's clock".into()
            }
            IngestError::Verify(VerifyError::MissingCredentials) => {
                "credentials are missing".into()
            }
            IngestError::Verify(VerifyError::BadCredentials) => {
                "the credentials are not valid".into()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::UnknownSource => StatusCode::NOT_FOUND,
            IngestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyRead => StatusCode::BAD_REQUEST,
            IngestError::Verify(_) => StatusCode::UNAUTHORIZED,
            IngestError::Decode(DecodeError::Malformed(_)) => StatusCode::BAD_REQUEST,
            IngestError::Decode(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            IngestError::RateLimited(wait) => {
                res.insert_header((header::RETRY_AFTER, retry_secs(wait).max(1).to_string()));
            }
            IngestError::Store(_) => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            IngestError::MethodNotAllowed => {
                res.insert_header((header::ALLOW, "POST"));
            }
            _ => {}
        }
        res.json(error_body(self.code(), &self.message()))
    }
}

/// The one JSON error shape used across the HTTP API.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "message": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_the_contract_status() {
        let cases: Vec<(IngestError, u16, &str)> = vec![
            (IngestError::UnknownSource, 404, "unknown_source"),
            (
                IngestError::RateLimited(Duration::from_millis(1500)),
                429,
                "rate_limited",
            ),
            (IngestError::TooLarge(10), 413, "body_too_large"),
            (VerifyError::Mismatch.into(), 401, "invalid_signature"),
            (VerifyError::Stale(400).into(), 401, "stale_timestamp"),
            (
                DecodeError::Unsupported("text/plain".into()).into(),
                415,
                "unsupported_media_type",
            ),
            (
                DecodeError::Malformed("bad".into()).into(),
                400,
                "invalid_body",
            ),
            (StoreError::Closed.into(), 503, "store_unavailable"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status_code().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let res = IngestError::RateLimited(Duration::from_millis(1500)).error_response();
        assert_eq!(res.headers().get("retry-after").unwrap(), "2");
        let res = IngestError::RateLimited(Duration::from_millis(1)).error_response();
        assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    }
}
