//! The one error type of the command side, and its single mapping to the wire.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chronicle_schema::{ErrorBody, ErrorCode};

use crate::event_store::StoreError;
use crate::validation::FieldErrors;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("invalid input: {}", .0.field_names())]
    Invalid(FieldErrors),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness or state conflict; `fields` says which input collided.
    #[error("{message}")]
    Conflict {
        message: String,
        fields: FieldErrors,
    },
    /// The stream moved on since the version the caller expected.
    #[error("expected version {expected}, but the stream is at version {current}")]
    StaleVersion { expected: i32, current: i32 },
    /// Lost a race to append the same version; retried where still valid.
    #[error("another command changed this concurrently; try again")]
    ConcurrentWrite { current: i32 },
    #[error("too many attempts; try again in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(String),
}

impl CommandError {
    pub fn conflict(message: impl Into<String>) -> CommandError {
        CommandError::Conflict {
            message: message.into(),
            fields: FieldErrors::new(),
        }
    }

    /// A decision's answer about the request (not a failure of the
    /// service): made on other state, it could be another.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            CommandError::Invalid(_)
                | CommandError::PayloadTooLarge(_)
                | CommandError::UnsupportedMediaType(_)
                | CommandError::RateLimited { .. }
                | CommandError::Unavailable(_)
                | CommandError::Internal(_)
        )
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Invalid(_) => ErrorCode::BadUserInput,
            CommandError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            CommandError::Forbidden(_) => ErrorCode::Forbidden,
            CommandError::NotFound(_) => ErrorCode::NotFound,
            CommandError::Conflict { .. }
            | CommandError::StaleVersion { .. }
            | CommandError::ConcurrentWrite { .. } => ErrorCode::Conflict,
            CommandError::RateLimited { .. } => ErrorCode::RateLimited,
            CommandError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            CommandError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            CommandError::Unavailable(_) => ErrorCode::Unavailable,
            CommandError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        match self {
            CommandError::Invalid(fields) | CommandError::Conflict { fields, .. } => {
                body.fields = fields.clone().into_map();
            }
            CommandError::StaleVersion { current, .. }
            | CommandError::ConcurrentWrite { current } => {
                body.current_version = Some(*current);
            }
            CommandError::RateLimited {
                retry_after_seconds,
            } => {
                body.retry_after_seconds = Some(*retry_after_seconds);
            }
            _ => {}
        }
        body
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        if chronicle_platform::database::is_unavailable(&error) {
            CommandError::Unavailable(error)
        } else {
            CommandError::Internal(format!("database: {error}"))
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(error) => error.into(),
            StoreError::Conflict { current } => CommandError::ConcurrentWrite { current },
            StoreError::ClaimRace => {
                CommandError::conflict("a unique value was claimed by a concurrent request")
            }
            StoreError::Decode(error) => CommandError::Internal(format!("stored event: {error}")),
            StoreError::Malformed(error) => CommandError::Internal(error),
        }
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        match &self {
            CommandError::Internal(cause) => tracing::error!(%cause, "command failed"),
            CommandError::Unavailable(cause) => {
                tracing::warn!(%cause, "command failed: database unavailable")
            }
            other => {
                tracing::info!(code = other.code().as_str(), error = %other, "command rejected")
            }
        }
        let body = self.to_body();
        let status = StatusCode::from_u16(body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if let CommandError::RateLimited {
            retry_after_seconds,
        } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
