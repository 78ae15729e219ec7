//! `/health/live`, `/health/ready` and `/health/startup`, the same on every service.
//!
//! live: the process answers. startup: initialisation (migrations, topic,
//! index) is done. ready: every dependency answers now, checked concurrently
//! with a short timeout so a load balancer's probe is never slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Health {
    started: Arc<AtomicBool>,
    checks: Vec<(&'static str, Check)>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Adds a dependency that must answer for the service to be ready.
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Health
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name,
            Arc::new(move || Box::pin(check()) as BoxFuture<'static, _>),
        ));
        self
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route(
                "/health/live",
                get(|| async { Json(json!({"status": "live"})) }),
            )
            .route("/health/startup", get(startup))
            .route("/health/ready", get(ready))
            .with_state(self.clone())
    }

    /// Runs every check; `Ok` when all pass, else the failures by name.
    pub async fn check(&self) -> Result<Map<String, Value>, Map<String, Value>> {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let check = check.clone();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (*name, outcome)
            }
        }))
        .await;
        let healthy = results.iter().all(|(_, outcome)| outcome.is_ok());
        let report = results
            .into_iter()
            .map(|(name, outcome)| {
                let value = match outcome {
                    Ok(()) => Value::from("ok"),
                    Err(error) => Value::from(error),
                };
                (name.to_owned(), value)
            })
            .collect();
        if healthy { Ok(report) } else { Err(report) }
    }
}

async fn startup(State(health): State<Health>) -> Response {
    if health.is_started() {
        Json(json!({"status": "started"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
            .into_response()
    }
}

async fn ready(State(health): State<Health>) -> Response {
    if !health.is_started() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
            .into_response();
    }
    match health.check().await {
        Ok(checks) => Json(json!({"status": "ready", "checks": checks})).into_response(),
        Err(checks) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "checks": checks})),
        )
            .into_response(),
    }
}
