//! The projector's admin API (for `projector replay` and `projector redrive`),
//! open only to callers with the internal service credential.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::dead_letters;
use crate::rebuild::{Projection, RebuildError, RebuildOptions, Rebuilder};

pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";

#[derive(Clone)]
pub struct AdminState {
    pub rebuilder: Rebuilder,
    pub pool: PgPool,
    /// SHA-256 of the service credential; without one the admin API is closed.
    pub token_digest: Option<Arc<[u8; 32]>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RebuildRequest {
    pub projection: Projection,
    pub swap: bool,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/rebuild", get(progress).post(rebuild))
        .route("/admin/redrive", post(redrive))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(SERVICE_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(digest);
    match (&state.token_digest, presented) {
        (Some(expected), Some(presented)) if **expected == presented => next.run(request).await,
        (None, _) => refuse(
            StatusCode::UNAUTHORIZED,
            "the admin API is closed: set COMMAND_API_TOKEN",
        ),
        _ => refuse(
            StatusCode::UNAUTHORIZED,
            "the admin API needs the service credential (X-Service-Token)",
        ),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let code = if status == StatusCode::CONFLICT {
        "CONFLICT"
    } else {
        "UNAUTHENTICATED"
    };
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

async fn rebuild(State(state): State<AdminState>, Json(request): Json<RebuildRequest>) -> Response {
    match state
        .rebuilder
        .start(request.projection, RebuildOptions { swap: request.swap })
    {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"started": request.projection.name()})),
        )
            .into_response(),
        Err(error @ RebuildError::AlreadyRunning(_)) => {
            refuse(StatusCode::CONFLICT, &error.to_string())
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"code": "INTERNAL", "message": error.to_string()})),
        )
            .into_response(),
    }
}

async fn progress(State(state): State<AdminState>) -> Response {
    Json(state.rebuilder.progress()).into_response()
}

async fn redrive(State(state): State<AdminState>) -> Response {
    match dead_letters::redrive(&state.pool).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"code": "UNAVAILABLE", "message": format!("database: {error}")})),
        )
            .into_response(),
    }
}
