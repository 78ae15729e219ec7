//! The same limits on `/graphql/ws` as over HTTP, per operation.
//!
//! The upgrade request passes the HTTP middleware (client identity, rate
//! limits, body size). After it, each operation on the socket (query,
//! mutation or subscription) takes from the same per-client and per-user
//! buckets, a message is at most the HTTP body limit, a client holds at most
//! [`MAX_CONNECTIONS_PER_CLIENT`] sockets, and a socket runs at most
//! [`MAX_OPERATIONS_PER_CONNECTION`] operations at once (subscriptions are
//! the ones that last).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextSubscribe};
use async_graphql::{Response, ServerError};
use chronicle_schema::ErrorCode;
use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::client::ClientAddress;
use crate::rate_limit::RateLimits;

pub const MAX_CONNECTIONS_PER_CLIENT: usize = 16;
pub const MAX_OPERATIONS_PER_CONNECTION: usize = 32;

/// One socket: who is on it, and what it runs now (its session data).
pub struct SocketSession {
    pub client: ClientAddress,
    pub user: Option<Uuid>,
    pub limits: RateLimits,
    running: Arc<AtomicUsize>,
}

impl SocketSession {
    pub fn new(client: ClientAddress, user: Option<Uuid>, limits: RateLimits) -> SocketSession {
        SocketSession {
            client,
            user,
            limits,
            running: Arc::default(),
        }
    }
}

/// Open sockets per client, across the process.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<HashMap<String, usize>>>);

/// Holds one of a client's connection slots until dropped.
pub struct ConnectionSlot {
    connections: Connections,
    key: String,
}

impl Connections {
    /// A slot for one more socket of `client`, unless it holds its maximum.
    pub fn admit(&self, client: ClientAddress) -> Option<ConnectionSlot> {
        let key = client.limit_key();
        let mut open = self.0.lock().expect("never poisoned");
        let count = open.entry(key.clone()).or_default();
        if *count >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            connections: self.clone(),
            key,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.connections.0.lock().expect("never poisoned");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Applies the limits to every operation started on a socket.
pub struct SocketLimits;

impl ExtensionFactory for SocketLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SocketLimits)
    }
}

fn refused(
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
) -> BoxStream<'static, Response> {
    let mut error = ServerError::new(message, None);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code.as_str());
    if let Some(seconds) = retry_after {
        extensions.set("retryAfterSeconds", seconds);
    }
    futures::stream::once(async move { Response::from_errors(vec![error]) }).boxed()
}

/// Gives back an operation's place when its stream ends or is dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Extension for SocketLimits {
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // Over HTTP the middleware has limited the request already.
        let Some(session) = ctx.data_opt::<SocketSession>() else {
            return next.run(ctx, stream);
        };
        if let Err((wait, limit)) = session.limits.check(session.client, session.user) {
            metrics::counter!("chronicle_rate_limited_total").increment(1);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return refused(
                ErrorCode::RateLimited,
                format!("too many requests (limit {limit} a minute); retry in {seconds} s"),
                Some(seconds),
            );
        }
        let running = session.running.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = Running(session.running.clone());
        if running > MAX_OPERATIONS_PER_CONNECTION {
            drop(guard);
            return refused(
                ErrorCode::RateLimited,
                format!(
                    "a connection runs at most {MAX_OPERATIONS_PER_CONNECTION} operations at once; \
                     complete one first"
                ),
                None,
            );
        }
        next.run(ctx, stream)
            .map(move |response| {
                let _ = &guard;
                response
            })
            .boxed()
    }
}
