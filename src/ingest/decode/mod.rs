//! Body decoding: JSON, `application/x-www-form-urlencoded` (PHP bracket keys) and
//! `multipart/form-data`, in the request's charset, into one JSON value.
//! STUB: to be written.

mod form;
mod multipart;

use serde_json::Value;

/// What kind of body arrived; JSON bodies are stored once (raw), others also as decoded JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Multipart,
}

/// Bounds that keep a hostile body from costing much.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most fields a form or multipart body may carry.
    pub max_fields: usize,
    /// Deepest bracket-key or JSON nesting accepted.
    pub max_depth: usize,
    /// Form/multipart fields whose text is itself JSON and is parsed in place.
    pub json_fields: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_fields: 10_000,
            max_depth: 64,
            json_fields: vec![
                "rawRequest".into(),
                "mandrill_events".into(),
                "data.json".into(),
            ],
        }
    }
}

#[derive(Debug)]
pub struct Decoded {
    pub value: Value,
    pub kind: BodyKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// -> 415
    #[error("unsupported content type {0:?}; expected application/json, application/x-www-form-urlencoded or multipart/form-data")]
    Unsupported(String),
    /// -> 415
    #[error("missing Content-Type header")]
    MissingContentType,
    /// -> 400
    #[error("{0}")]
    Malformed(String),
}

pub fn decode(
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let _ = (content_type, limits);
    serde_json::from_slice(body)
        .map(|value| Decoded {
            value,
            kind: BodyKind::Json,
        })
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The decoded `key=value` pairs of a urlencoded body, in order (Mandrill signs them sorted).
pub fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let _ = body;
    Ok(Vec::new())
}
