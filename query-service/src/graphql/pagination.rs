//! Relay connections: opaque cursors and page info.

use async_graphql::SimpleObject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

#[derive(SimpleObject, Clone, Debug, Default)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// Opaque to clients: a kind and a position, base64url-encoded.
pub fn encode_cursor(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

/// The position inside a cursor of `kind`; BAD_USER_INPUT for anything else.
pub fn decode_cursor(field: &str, kind: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::bad_input(field, "is not a cursor from this list");
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    raw.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or_else(invalid)
}

/// `first`/`last` checked against the limits.
pub fn page_size(
    field: &str,
    requested: Option<i32>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match requested {
        None => Ok(default),
        Some(size) if size >= 0 && (size as usize) <= max => Ok(size as usize),
        Some(_) => Err(ApiError::bad_input(
            field,
            format!("must be between 0 and {max}"),
        )),
    }
}
