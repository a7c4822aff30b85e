//! `multipart/form-data` bodies: not decoded yet.

use encoding_rs::Encoding;
use serde_json::Value;

use super::{DecodeError, Limits};

pub(super) fn decode(
    _body: &[u8],
    _boundary: &str,
    _request_charset: &'static Encoding,
    _limits: &Limits,
) -> Result<Value, DecodeError> {
    Err(DecodeError::malformed(
        "multipart/form-data is not decoded yet",
    ))
}
