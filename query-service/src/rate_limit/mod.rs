//! Rate limits on the public endpoints: a token bucket per client address
//! and, for signed-in callers, per user (`governor`, GCRA). Every answer says
//! where the caller stands (`X-RateLimit-Limit`, `-Remaining`, `-Reset`); a
//! refusal is 429 with `Retry-After` and the usual coded error body.
//!
//! The buckets live in this process and keep one replica's traffic smooth;
//! the per-minute counts are also shared by every replica through Postgres
//! (`shared`), so N replicas behind a load balancer do not allow N times the
//! limit. Clients are keyed as `client::ClientAddress` says (one key per IPv6 /64),
//! and buckets idle long enough to be full again are forgotten, at least once
//! a minute and whenever more than [`MAX_TRACKED`] keys are held.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chronicle_platform::access_token::{AccessTokens, bearer};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::ClientAddress;

mod shared;
mod uploads;

pub use shared::{SYNC_EVERY, SharedWindows};
pub use uploads::UploadLimit;

/// Keys held per limiter before idle ones are dropped at once.
const MAX_TRACKED: usize = 100_000;

type Buckets =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

#[derive(Clone)]
pub struct RateLimits {
    per_client: Arc<Buckets>,
    per_user: Arc<Buckets>,
    shared: SharedWindows,
    client_limit: u32,
    user_limit: u32,
    access_tokens: AccessTokens,
}

/// One replica's buckets, a limit of `per_minute` each.
fn buckets(per_minute: NonZeroU32) -> Arc<Buckets> {
    Arc::new(
        RateLimiter::keyed(Quota::per_minute(per_minute))
            .with_middleware::<StateInformationMiddleware>(),
    )
}

/// Takes from this replica's bucket, then from the shared count (`kind`
/// keeps client, user and upload keys apart there).
fn take(
    buckets: &Buckets,
    shared: &SharedWindows,
    kind: &str,
    key: String,
    limit: u32,
) -> Result<Standing, Duration> {
    if buckets.len() > MAX_TRACKED {
        buckets.retain_recent();
        buckets.shrink_to_fit();
    }
    // The limiter's own clock: making a new one calibrates it (cpuid) each time.
    let now = buckets.clock().now();
    let snapshot = buckets
        .check_key(&key)
        .map_err(|not_until| not_until.wait_time_from(now))?;
    let shared_remaining = shared.take(&format!("{kind}:{key}"), limit)?;
    let remaining = snapshot.remaining_burst_capacity();
    let per_token = snapshot.quota().replenish_interval();
    Ok(Standing {
        limit,
        remaining: remaining.min(shared_remaining),
        reset: per_token * (limit - remaining),
    })
}

/// Where the caller stands in the bucket that applied.
pub struct Standing {
    limit: u32,
    remaining: u32,
    /// Until the bucket is full again.
    reset: Duration,
}

impl RateLimits {
    pub fn new(
        client_per_minute: NonZeroU32,
        user_per_minute: NonZeroU32,
        access_tokens: AccessTokens,
        shared: SharedWindows,
        shutdown: CancellationToken,
    ) -> RateLimits {
        let limits = RateLimits {
            per_client: buckets(client_per_minute),
            per_user: buckets(user_per_minute),
            shared,
            client_limit: client_per_minute.get(),
            user_limit: user_per_minute.get(),
            access_tokens,
        };
        // Forget full buckets now and then, or every address ever seen stays.
        let (per_client, per_user) = (limits.per_client.clone(), limits.per_user.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                per_client.retain_recent();
                per_user.retain_recent();
            }
        });
        limits
    }

    /// Takes one request from the client's bucket and, when signed in, the
    /// user's; `Err` says how long to wait, and which limit applied.
    pub fn check(
        &self,
        client: ClientAddress,
        user: Option<Uuid>,
    ) -> Result<Standing, (Duration, u32)> {
        let mut standing = take(
            &self.per_client,
            &self.shared,
            "client",
            client.limit_key(),
            self.client_limit,
        )
        .map_err(|wait| (wait, self.client_limit))?;
        if let Some(user) = user {
            match take(
                &self.per_user,
                &self.shared,
                "user",
                user.to_string(),
                self.user_limit,
            ) {
                // Report the tighter of the two.
                Ok(for_user) if for_user.remaining < standing.remaining => standing = for_user,
                Ok(_) => {}
                Err(wait) => return Err((wait, self.user_limit)),
            }
        }
        Ok(standing)
    }

    /// The signed-in user a bearer token names, if it verifies.
    pub fn user_of(&self, authorization: Option<&str>) -> Option<Uuid> {
        authorization
            .and_then(bearer)
            .and_then(|token| self.access_tokens.verify(token).ok())
            .map(|claims| claims.sub)
    }
}

/// The middleware (after `client::identify`).
pub async fn limit(State(limits): State<RateLimits>, request: Request, next: Next) -> Response {
    let client = *request
        .extensions()
        .get::<ClientAddress>()
        .expect("client::identify runs before the rate limits");
    let user = limits.user_of(
        request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok()),
    );
    let standing = match limits.check(client, user) {
        Ok(standing) => standing,
        Err((wait, limit)) => return refuse(wait, limit),
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(standing.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(standing.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(standing.reset.as_secs_f64().ceil() as u64),
    );
    response
}

pub fn refuse(wait: Duration, limit: u32) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    metrics::counter!("chronicle_rate_limited_total").increment(1);
    let body = json!({
        "errors": [{
            "message": format!("too many requests; retry in {seconds} s"),
            "extensions": {"code": "RATE_LIMITED", "retryAfterSeconds": seconds},
        }],
        "code": "RATE_LIMITED",
        "message": format!("too many requests; retry in {seconds} s"),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("retry-after", HeaderValue::from(seconds));
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
    headers.insert("x-ratelimit-reset", HeaderValue::from(seconds));
    response
}
