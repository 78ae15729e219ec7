//! Serving a service's router with the middleware every service needs.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderName, Request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::trace_context;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds request ids (echoed, generated when absent), a request span carrying
/// the id, and request metrics.
pub fn with_standard_layers(router: Router) -> Router {
    router
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        // A 503 from a readiness probe is news, not an error.
                        .on_failure(DefaultOnFailure::new().level(Level::WARN))
                        .make_span_with(|request: &Request<_>| {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|value| value.to_str().ok())
                            };
                            let span = tracing::info_span!(
                                "request",
                                method = %request.method(),
                                path = %request.uri().path(),
                                request_id = header(REQUEST_ID.as_str()).unwrap_or_default(),
                                trace_id = tracing::field::Empty,
                            );
                            // Continue the caller's trace, if it sent one.
                            trace_context::continue_from(&span, header(trace_context::TRACEPARENT));
                            span.record("trace_id", trace_context::trace_id(&span));
                            span
                        }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Binds before serving so the caller learns the real port (tests bind port 0).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
