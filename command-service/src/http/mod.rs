//! The internal command API: `POST /v1/commands` and `POST /v1/images`,
//! reachable only with the service credential (`X-Service-Token`), plus
//! health and metrics.

mod images;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chronicle_platform::health::Health;
use chronicle_platform::http::REQUEST_ID;
use chronicle_schema::{CommandEnvelope, ErrorBody, ErrorCode};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::commands::{self, CommandServices, RequestContext};

pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";
pub const CLIENT_ADDRESS_HEADER: &str = "x-client-address";
/// Post bodies are at most 100,000 characters (up to 4 bytes each) plus the envelope.
const MAX_BODY_BYTES: usize = 512 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub services: CommandServices,
    /// SHA-256 of the service credential (compared digest to digest).
    pub service_token_digest: Arc<[u8; 32]>,
}

pub fn router(state: ApiState, health: &Health) -> Router {
    let uploads = Router::new()
        .route("/v1/images", post(images::upload))
        .layer(DefaultBodyLimit::max(images::MAX_UPLOAD_BODY_BYTES));
    let commands = Router::new()
        .route("/v1/commands", post(execute))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(uploads)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_service_token,
        ))
        .with_state(state);
    let router = Router::new()
        .merge(commands)
        .merge(health.router())
        .merge(chronicle_platform::metrics::router());
    chronicle_platform::http::with_standard_layers(router)
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

async fn require_service_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(SERVICE_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(digest);
    if presented.as_ref() != Some(&*state.service_token_digest) {
        return error_response(ErrorBody::new(
            ErrorCode::Unauthenticated,
            "the command API needs a valid service credential",
        ));
    }
    next.run(request).await
}

async fn execute(
    State(state): State<ApiState>,
    headers: HeaderMap,
    envelope: Result<Json<CommandEnvelope>, JsonRejection>,
) -> Response {
    let envelope = match envelope {
        Ok(Json(envelope)) => envelope,
        Err(rejection) => {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "the command is too large"
            } else {
                "the command is not a valid command envelope"
            };
            return error_response(ErrorBody::new(
                ErrorCode::BadUserInput,
                format!("{code}: {}", rejection.body_text()),
            ));
        }
    };
    if let chronicle_schema::Command::AttachImage { .. } = envelope.command {
        return error_response(ErrorBody::new(
            ErrorCode::BadUserInput,
            "images are attached by uploading them (POST /v1/images)",
        ));
    }
    let request = request_context(&headers);
    let span = tracing::info_span!(
        "command",
        command = envelope.command.name(),
        command_id = %envelope.command_id,
        correlation_id = %envelope.correlation_id,
    );
    match commands::execute(&state.services, &request, &envelope)
        .instrument(span)
        .await
    {
        Ok(reply) => Json(reply).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Who the forwarder says the request comes from (the token is verified later).
fn request_context(headers: &HeaderMap) -> RequestContext {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    RequestContext {
        bearer: header("authorization")
            .as_deref()
            .and_then(chronicle_platform::access_token::bearer)
            .map(str::to_owned),
        client: header(CLIENT_ADDRESS_HEADER).unwrap_or_else(|| "unknown".to_owned()),
        request_id: header(REQUEST_ID.as_str()),
    }
}

fn error_response(body: ErrorBody) -> Response {
    let status = StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(body)).into_response()
}
