//! The one error type of the public API, mapped in one place to GraphQL
//! errors (`extensions.code`, `extensions.fields`, ...) and REST answers.

use std::collections::BTreeMap;

use async_graphql::ErrorExtensions as _;
use chronicle_schema::{ErrorBody, ErrorCode};

/// Deliberately not `Display`: async-graphql turns any `Display` error into a
/// GraphQL error without a code, and a `?` would then leak its text. This type
/// converts only through the mapping below.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub fields: BTreeMap<String, String>,
    pub current_version: Option<i32>,
    pub retry_after_seconds: Option<u64>,
    /// The version of a stream the read models set aside (a consistency
    /// token's wait ended on it).
    pub dead_lettered: Option<i32>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            fields: BTreeMap::new(),
            current_version: None,
            retry_after_seconds: None,
            dead_lettered: None,
        }
    }

    pub fn bad_input(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        let mut error = ApiError::new(ErrorCode::BadUserInput, format!("{field}: {message}"));
        error.fields.insert(field.to_owned(), message);
        error
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// An internal failure: logged with its cause, reported without it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        ApiError {
            code: body.code,
            message: body.message,
            fields: body.fields,
            current_version: body.current_version,
            retry_after_seconds: body.retry_after_seconds,
            dead_lettered: None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(&error)
    }
}

/// Errors of a batched load, shared by every field that waited on it.
impl From<std::sync::Arc<sqlx::Error>> for ApiError {
    fn from(error: std::sync::Arc<sqlx::Error>) -> Self {
        ApiError::from(&*error)
    }
}

impl From<&sqlx::Error> for ApiError {
    fn from(error: &sqlx::Error) -> Self {
        if chronicle_platform::database::is_unavailable(error) {
            tracing::warn!(%error, "database unavailable");
            ApiError::unavailable("the database is unavailable; try again shortly")
        } else {
            ApiError::internal(format!("database: {error}"))
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let ApiError {
            code,
            message,
            fields,
            current_version,
            retry_after_seconds,
            dead_lettered,
        } = error;
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            extensions.set("code", code.as_str());
            if !fields.is_empty() {
                let fields: async_graphql::indexmap::IndexMap<
                    async_graphql::Name,
                    async_graphql::Value,
                > = fields
                    .iter()
                    .map(|(field, message)| {
                        (
                            async_graphql::Name::new(field),
                            async_graphql::Value::from(message.as_str()),
                        )
                    })
                    .collect();
                extensions.set("fields", async_graphql::Value::Object(fields));
            }
            if let Some(version) = current_version {
                extensions.set("currentVersion", version);
            }
            if let Some(seconds) = retry_after_seconds {
                extensions.set("retryAfterSeconds", seconds);
            }
            if let Some(version) = dead_lettered {
                extensions.set("deadLetteredVersion", version);
            }
        })
    }
}
