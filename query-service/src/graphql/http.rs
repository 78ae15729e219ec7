//! GraphQL over HTTP: `POST /graphql`, `GET /graphql` (GraphiQL in a browser).
//!
//! Every error leaves here with `extensions.code` and `extensions.requestId`,
//! whichever layer raised it.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_graphql::http::GraphiQLSource;
use async_graphql::{Pos, ServerError, Value};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chronicle_platform::access_token::{TokenError, bearer};
use chronicle_platform::http::REQUEST_ID;
use chronicle_schema::{ConsistencyToken, ErrorCode, Role};
use tower_http::limit::RequestBodyLimitLayer;

use super::{ChronicleSchema, RequestContext, ResponseNotes, Services, Viewer};
use crate::command_client::Caller;
use crate::error::ApiError;
use crate::read_models::users;

pub const CONSISTENCY_TOKEN_HEADER: &str = "x-consistency-token";
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Clone)]
struct GraphqlState {
    schema: ChronicleSchema,
    services: Services,
    graphiql: bool,
}

pub fn router(
    schema: ChronicleSchema,
    services: Services,
    graphiql: bool,
    max_body_bytes: usize,
) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .with_state(GraphqlState {
            schema,
            services,
            graphiql,
        })
        // Refused by its Content-Length (or as it streams past the limit),
        // before any of it is parsed.
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(axum::middleware::map_response(coded_payload_too_large))
}

/// The limit layer answers 413 in plain text; clients get the usual error shape.
async fn coded_payload_too_large(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    refuse(
        ApiError::new(ErrorCode::BadUserInput, "the request body is too large"),
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    )
}

async fn graphql_post(
    State(state): State<GraphqlState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    match request {
        Ok(request) => execute(&state, peer, &headers, request.into_inner()).await,
        Err(rejection) => refuse(
            ApiError::new(
                ErrorCode::BadUserInput,
                format!("the request is not a GraphQL request: {}", rejection.0),
            ),
            StatusCode::BAD_REQUEST,
            request_id(&headers),
        ),
    }
}

/// A request refused before execution, with an HTTP status that says why.
fn refuse(error: ApiError, status: StatusCode, request_id: Option<String>) -> Response {
    let mut response = respond(error_response(error), request_id);
    *response.status_mut() = status;
    response
}

async fn graphql_get(
    State(state): State<GraphqlState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match request {
        Ok(request) if !wants_html => execute(&state, peer, &headers, request.into_inner()).await,
        _ if state.graphiql => Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .title("Chronicle")
                .finish(),
        )
        .into_response(),
        _ => refuse(
            ApiError::new(ErrorCode::BadUserInput, "send a GraphQL query"),
            StatusCode::BAD_REQUEST,
            request_id(&headers),
        ),
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn execute(
    state: &GraphqlState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> Response {
    let request_id = request_id(headers);
    let context = match request_context(state, peer, headers, request_id.clone()).await {
        Ok(context) => context,
        Err(error) => return respond(error_response(error), request_id),
    };
    let notes = context.notes.clone();
    let mut response = state.schema.execute(request.data(context)).await;
    add_notes(&mut response, &notes);
    respond(response, request_id)
}

/// Who asks and what they wait for; a bad token or header fails the request.
async fn request_context(
    state: &GraphqlState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request_id: Option<String>,
) -> Result<RequestContext, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let bearer = header(header::AUTHORIZATION.as_str())
        .and_then(bearer)
        .map(str::to_owned);
    let viewer = match &bearer {
        None => None,
        Some(token) => Some(viewer(state, token).await?),
    };
    let consistency_token = match header(CONSISTENCY_TOKEN_HEADER) {
        None => None,
        Some(value) => Some(value.parse::<ConsistencyToken>().map_err(|_| {
            ApiError::bad_input("X-Consistency-Token", "is not a consistency token")
        })?),
    };
    if let Some(token) = &consistency_token {
        let consistency = &state.services.consistency;
        if !consistency.wait_for(token, consistency.max_wait).await? {
            return Err(ApiError::unavailable(format!(
                "the read models have not caught up with this consistency token within {} ms; retry",
                consistency.max_wait.as_millis()
            )));
        }
    }
    let caller = Caller {
        bearer,
        client_address: peer.ip().to_string(),
        request_id,
        idempotency_key: header(IDEMPOTENCY_KEY_HEADER).map(str::to_owned),
        traceparent: header("traceparent").map(str::to_owned),
    };
    Ok(RequestContext::new(
        viewer,
        caller,
        consistency_token,
        state.services.pool.clone(),
    ))
}

/// The signed-in caller. The role is the one the read model has now (a
/// demotion applies at once); a deactivated account's token is refused.
async fn viewer(state: &GraphqlState, token: &str) -> Result<Viewer, ApiError> {
    let claims = state
        .services
        .access_tokens
        .verify(token)
        .map_err(|error| {
            let message = match error {
                TokenError::Expired => "the access token has expired; refresh it",
                TokenError::Invalid => "the access token is invalid",
            };
            ApiError::new(ErrorCode::Unauthenticated, message)
        })?;
    let current = users::by_id(&state.services.pool, claims.sub).await?;
    let role = match &current {
        Some(user) if !user.active => {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this account is deactivated",
            ));
        }
        Some(user) => Role::parse(&user.role),
        // Just registered and not projected yet: the token's word will do.
        None => Role::parse(&claims.role),
    };
    Ok(Viewer {
        id: claims.sub,
        role: role.unwrap_or(Role::User),
    })
}

fn error_response(error: ApiError) -> async_graphql::Response {
    let error: async_graphql::Error = error.into();
    async_graphql::Response::from_errors(vec![error.into_server_error(Pos::default())])
}

fn add_notes(response: &mut async_graphql::Response, notes: &Mutex<ResponseNotes>) {
    let notes = notes.lock().expect("notes are never poisoned");
    if !notes.pending_writes.is_empty() {
        let pending: Vec<Value> = notes
            .pending_writes
            .iter()
            .map(|token| Value::from(token.as_str()))
            .collect();
        let mut consistency = async_graphql::indexmap::IndexMap::new();
        consistency.insert(
            async_graphql::Name::new("pendingWrites"),
            Value::List(pending),
        );
        consistency.insert(
            async_graphql::Name::new("message"),
            Value::from("the write was accepted; the read side has not applied it yet"),
        );
        response
            .extensions
            .insert("consistency".to_owned(), Value::Object(consistency));
    }
}

/// Gives every error a code and the request id.
fn respond(mut response: async_graphql::Response, request_id: Option<String>) -> Response {
    let request_failed = response.data == Value::Null;
    for error in &mut response.errors {
        tag_error(error, request_failed, request_id.as_deref());
    }
    GraphQLResponse::from(response).into_response()
}

fn tag_error(error: &mut ServerError, request_failed: bool, request_id: Option<&str>) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        // Errors without a code come from async-graphql itself: a request it
        // could not parse or validate, or a value of the wrong type.
        let code = if request_failed || error.message.contains("Failed to parse") {
            ErrorCode::BadUserInput
        } else {
            ErrorCode::Internal
        };
        extensions.set("code", code.as_str());
    }
    if let Some(request_id) = request_id {
        extensions.set("requestId", request_id);
    }
}
