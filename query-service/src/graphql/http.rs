//! GraphQL over HTTP (as the GraphQL-over-HTTP spec says): `POST /graphql`,
//! `GET /graphql` for queries (GraphiQL for browsers), and subscriptions on
//! `/graphql/ws` (graphql-transport-ws).
//!
//! Every error leaves here with `extensions.code` and `extensions.requestId`,
//! whichever layer raised it. Clients that accept
//! `application/graphql-response+json` get request errors as 4xx statuses;
//! `application/json` clients get 200, as that media type requires.

use std::sync::Mutex;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, ServerError, Value};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLWebSocket};
use axum::Router;
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chronicle_platform::access_token::{TokenError, bearer};
use chronicle_platform::http::REQUEST_ID;
use chronicle_schema::{ConsistencyToken, ErrorCode, Role};
use tower_http::limit::RequestBodyLimitLayer;

use super::{ChronicleSchema, RequestContext, ResponseNotes, Services, Viewer, socket};
use crate::client::ClientAddress;
use crate::command_client::Caller;
use crate::error::ApiError;
use crate::rate_limit::RateLimits;
use crate::read_models::users;

pub const CONSISTENCY_TOKEN_HEADER: &str = "x-consistency-token";
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Ask for `extensions.diagnostics` (SQL statements the request ran).
pub const DIAGNOSTICS_HEADER: &str = "x-query-diagnostics";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

#[derive(Clone)]
struct GraphqlState {
    schema: ChronicleSchema,
    services: Services,
    graphiql: bool,
    limits: RateLimits,
    connections: socket::Connections,
    max_message_bytes: usize,
}

pub fn router(
    schema: ChronicleSchema,
    services: Services,
    graphiql: bool,
    max_body_bytes: usize,
    limits: RateLimits,
) -> Router {
    let ide = if graphiql {
        Router::new().route(super::graphiql::ASSETS_PATH, get(super::graphiql::asset))
    } else {
        Router::new()
    };
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .merge(ide.with_state(()))
        .with_state(GraphqlState {
            schema,
            services,
            graphiql,
            limits,
            connections: socket::Connections::default(),
            max_message_bytes: max_body_bytes,
        })
        // Refused by its Content-Length (or as it streams past the limit),
        // before any of it is parsed.
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(axum::middleware::map_response(coded_payload_too_large))
}

/// The response media type the client asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphqlResponseJson,
    /// The legacy type, and the default when the client names neither.
    Json,
}

fn media_type(headers: &HeaderMap) -> MediaType {
    let accepts = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if accepts.contains(GRAPHQL_RESPONSE_JSON) {
        MediaType::GraphqlResponseJson
    } else {
        MediaType::Json
    }
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
        MediaType::Json,
    )
}

async fn graphql_post(
    State(state): State<GraphqlState>,
    Extension(client): Extension<ClientAddress>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    // GraphQL over HTTP: a POST says what it sends; only JSON is understood.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
        });
    if !is_json {
        return refuse(
            ApiError::new(
                ErrorCode::BadUserInput,
                "send the GraphQL request as JSON, with Content-Type: application/json",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            request_id(&headers),
            media_type(&headers),
        );
    }
    match request {
        Ok(request) => execute(&state, client, &headers, request.into_inner()).await,
        Err(rejection) => refuse(
            ApiError::new(
                ErrorCode::BadUserInput,
                format!("the request is not a GraphQL request: {}", rejection.0),
            ),
            StatusCode::BAD_REQUEST,
            request_id(&headers),
            media_type(&headers),
        ),
    }
}

async fn graphql_get(
    State(state): State<GraphqlState>,
    Extension(client): Extension<ClientAddress>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match request {
        Ok(request) if !wants_html => {
            let request = request.into_inner();
            // GET must not change anything (a link or a prefetch could run it).
            if operation(&request).is_some_and(|(kind, _)| kind == OperationType::Mutation) {
                let mut response = refuse(
                    ApiError::new(ErrorCode::BadUserInput, "mutations are sent with POST"),
                    StatusCode::METHOD_NOT_ALLOWED,
                    request_id(&headers),
                    media_type(&headers),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return response;
            }
            execute(&state, client, &headers, request).await
        }
        _ if state.graphiql => super::graphiql::page(),
        _ => refuse(
            ApiError::new(ErrorCode::BadUserInput, "send a GraphQL query"),
            StatusCode::BAD_REQUEST,
            request_id(&headers),
            media_type(&headers),
        ),
    }
}

/// The operation the request would run (none if it does not parse): its type,
/// and a label for metrics, its root fields (bounded by the schema, unlike
/// client-chosen operation names), e.g. "posts,viewer".
fn operation(request: &async_graphql::Request) -> Option<(OperationType, String)> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let mut operations = document.operations.iter();
    let (_, operation) = match &request.operation_name {
        Some(name) => operations.find(|(operation_name, _)| {
            operation_name.is_some_and(|operation_name| operation_name.as_str() == name)
        }),
        None => operations.next(),
    }?;
    let mut fields: Vec<&str> = operation
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|selection| match &selection.node {
            async_graphql::parser::types::Selection::Field(field) => {
                Some(field.node.name.node.as_str())
            }
            _ => None,
        })
        .collect();
    fields.sort_unstable();
    fields.dedup();
    fields.truncate(3);
    Some((operation.node.ty, fields.join(",")))
}

/// GraphQL over WebSocket (graphql-transport-ws). The connection's caller
/// is who signs in in `connection_init` (`{"authorization": "Bearer …"}`),
/// else anonymous; the limits of `socket` apply to every operation.
async fn graphql_ws(
    State(state): State<GraphqlState>,
    Extension(client): Extension<ClientAddress>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(slot) = state.connections.admit(client) else {
        return refuse(
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "a client holds at most {} WebSocket connections at once",
                    socket::MAX_CONNECTIONS_PER_CLIENT
                ),
            ),
            StatusCode::TOO_MANY_REQUESTS,
            request_id(&headers),
            MediaType::Json,
        );
    };
    let request_id = request_id(&headers);
    let max_message_bytes = state.max_message_bytes;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max_message_bytes)
        .max_frame_size(max_message_bytes)
        .on_upgrade(move |socket| async move {
            let on_init_state = state.clone();
            GraphQLWebSocket::new(socket, state.schema, protocol)
                .on_connection_init(move |payload| async move {
                    socket_session(&on_init_state, client, request_id, &payload).await
                })
                .serve()
                .await;
            drop(slot);
        })
}

/// The session data of a socket, from its `connection_init` payload.
async fn socket_session(
    state: &GraphqlState,
    client: ClientAddress,
    request_id: Option<String>,
    payload: &serde_json::Value,
) -> async_graphql::Result<Data> {
    let authorization = ["authorization", "Authorization"]
        .iter()
        .find_map(|key| payload.get(*key))
        .and_then(|value| value.as_str());
    let bearer = authorization.and_then(bearer).map(str::to_owned);
    let viewer = match &bearer {
        Some(token) => Some(
            viewer(&state.services, token)
                .await
                .map_err(async_graphql::Error::from)?,
        ),
        None => None,
    };
    let caller = Caller {
        bearer,
        client_address: client.0.to_string(),
        request_id,
        idempotency_key: None,
    };
    let mut data = Data::default();
    data.insert(socket::SocketSession::new(
        client,
        viewer.map(|viewer| viewer.id),
        state.limits.clone(),
    ));
    data.insert(RequestContext::new(viewer, caller, None, &state.services));
    Ok(data)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn execute(
    state: &GraphqlState,
    client: ClientAddress,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> Response {
    let request_id = request_id(headers);
    let media = media_type(headers);
    if request.query.trim().is_empty() {
        return refuse(
            ApiError::bad_input("query", "the request has no GraphQL document in `query`"),
            StatusCode::BAD_REQUEST,
            request_id,
            media,
        );
    }
    let context = match request_context(state, client, headers, request_id.clone()).await {
        Ok(context) => context,
        Err(error) => {
            let status =
                StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return refuse(error, status, request_id, media);
        }
    };
    let notes = context.notes.clone();
    let diagnostics = headers
        .contains_key(DIAGNOSTICS_HEADER)
        .then(|| context.clone());
    let (operation, kind) = match operation(&request) {
        Some((OperationType::Query, label)) => (label, "query"),
        Some((OperationType::Mutation, label)) => (label, "mutation"),
        Some((OperationType::Subscription, label)) => (label, "subscription"),
        None => ("unparsable".to_owned(), "unknown"),
    };
    let started = std::time::Instant::now();
    let mut response = state.schema.execute(request.data(context)).await;
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!("chronicle_graphql_requests_total",
        "operation" => operation.clone(), "type" => kind, "outcome" => outcome)
    .increment(1);
    metrics::histogram!("chronicle_graphql_request_duration_seconds", "operation" => operation, "type" => kind)
        .record(started.elapsed().as_secs_f64());
    add_notes(&mut response, &notes);
    add_freshness(&mut response, &state.services.freshness, &notes);
    if let Some(context) = diagnostics {
        let mut fields = async_graphql::indexmap::IndexMap::new();
        fields.insert(
            async_graphql::Name::new("sqlStatements"),
            Value::from(context.statements() as u64),
        );
        response
            .extensions
            .insert("diagnostics".to_owned(), Value::Object(fields));
    }
    respond(response, request_id, media, None)
}

/// Who asks and what they wait for; a bad token or header fails the request.
async fn request_context(
    state: &GraphqlState,
    client: ClientAddress,
    headers: &HeaderMap,
    request_id: Option<String>,
) -> Result<RequestContext, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let bearer = header(header::AUTHORIZATION.as_str())
        .and_then(bearer)
        .map(str::to_owned);
    let viewer = match &bearer {
        None => None,
        Some(token) => Some(viewer(&state.services, token).await?),
    };
    let consistency_token = match header(CONSISTENCY_TOKEN_HEADER) {
        None => None,
        Some(value) => Some(value.parse::<ConsistencyToken>().map_err(|_| {
            ApiError::bad_input("X-Consistency-Token", "is not a consistency token")
        })?),
    };
    if let Some(token) = &consistency_token {
        let consistency = &state.services.consistency;
        consistency
            .wait_for(token, consistency.max_wait)
            .await?
            .into_result("the read models", consistency.max_wait)?;
    }
    let caller = Caller {
        bearer,
        client_address: client.0.to_string(),
        request_id,
        idempotency_key: header(IDEMPOTENCY_KEY_HEADER).map(str::to_owned),
    };
    Ok(RequestContext::new(
        viewer,
        caller,
        consistency_token,
        &state.services,
    ))
}

/// The signed-in caller. The role is the one the read model has now (a
/// demotion applies at once); a deactivated account's token is refused.
pub(crate) async fn viewer(services: &Services, token: &str) -> Result<Viewer, ApiError> {
    let claims = services.access_tokens.verify(token).map_err(|error| {
        let message = match error {
            TokenError::Expired => "the access token has expired; refresh it",
            TokenError::Invalid => "the access token is invalid",
        };
        ApiError::new(ErrorCode::Unauthenticated, message)
    })?;
    let session_open = match claims.sid {
        Some(session_id) => services.sessions.is_open(session_id, claims.sub).await?,
        None => false,
    };
    if !session_open {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "the session has ended (signed out, or the account was secured); sign in again",
        ));
    }
    let current = users::by_id(&services.pool, claims.sub).await?;
    let role = match &current {
        Some(user) if !user.active => {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this account is deactivated",
            ));
        }
        Some(user) => Some(user.role),
        // Just registered and not projected yet: the token's word will do.
        None => Role::parse(&claims.role),
    };
    Ok(Viewer {
        id: claims.sub,
        role: role.unwrap_or(Role::User),
    })
}

/// A request-level error: it has no place in the document, so no `locations`.
fn error_response(error: ApiError) -> async_graphql::Response {
    let error: async_graphql::Error = error.into();
    let mut server_error = ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    async_graphql::Response::from_errors(vec![server_error])
}

/// A request refused before execution, with an HTTP status that says why.
fn refuse(
    error: ApiError,
    status: StatusCode,
    request_id: Option<String>,
    media: MediaType,
) -> Response {
    respond(error_response(error), request_id, media, Some(status))
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

/// How far behind the event store each projection the response read from is.
fn add_freshness(
    response: &mut async_graphql::Response,
    freshness: &crate::freshness::Freshness,
    notes: &Mutex<ResponseNotes>,
) {
    let touched_search = notes
        .lock()
        .expect("notes are never poisoned")
        .touched_search;
    let mut fields = async_graphql::indexmap::IndexMap::new();
    let projections = [
        ("readModels", "read_models", true),
        ("search", "search", touched_search),
    ];
    for (name, projection, touched) in projections {
        if let Some(projection) = freshness.of(projection).filter(|_| touched)
            && let Ok(value) =
                Value::from_json(serde_json::to_value(projection).unwrap_or_default())
        {
            fields.insert(async_graphql::Name::new(name), value);
        }
    }
    if !fields.is_empty() {
        response
            .extensions
            .insert("freshness".to_owned(), Value::Object(fields));
    }
}

/// Gives every error a code and the request id, and picks the status.
fn respond(
    mut response: async_graphql::Response,
    request_id: Option<String>,
    media: MediaType,
    refused: Option<StatusCode>,
) -> Response {
    // No data at all: the request failed as a whole (parse, validation, refusal).
    let request_failed = response.data == Value::Null && !response.errors.is_empty();
    for error in &mut response.errors {
        tag_error(error, request_failed, request_id.as_deref());
    }
    let status = match (refused, media) {
        // A request that is not well-formed GraphQL over HTTP says so in any type.
        (Some(status), _)
            if status == StatusCode::BAD_REQUEST
                || status == StatusCode::PAYLOAD_TOO_LARGE
                || status == StatusCode::METHOD_NOT_ALLOWED
                || status == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
        {
            status
        }
        (Some(status), MediaType::GraphqlResponseJson) => status,
        (None, MediaType::GraphqlResponseJson) if request_failed => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let content_type = match media {
        MediaType::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
        MediaType::Json => "application/json",
    };
    let body = serde_json::to_value(&response).map(|mut body| {
        // A request that failed before execution has no `data` entry at all
        // (GraphQL spec, "Response Format").
        if request_failed && let Some(fields) = body.as_object_mut() {
            fields.remove("data");
        }
        body
    });
    match body.and_then(|body| serde_json::to_vec(&body)) {
        Ok(body) => (status, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not serialise a GraphQL response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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
