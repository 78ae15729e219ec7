//! The GraphQL API (contract: `schema/api.graphql`).

pub mod cost;
mod graphiql;
pub(crate) mod http;
pub mod loaders;
mod mutation;
pub mod pagination;
pub mod query;
#[cfg(test)]
mod sdl_tests;
mod search;
pub mod socket;
mod subscription;
mod types;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Schema;
use async_graphql::dataloader::DataLoader;
use chronicle_platform::access_token::AccessTokens;
use chronicle_schema::{ConsistencyToken, Role};
use sqlx::PgPool;
use uuid::Uuid;

use crate::command_client::{Caller, CommandClient};
use crate::consistency::Consistency;
use crate::read_models::cache::RowCache;
use crate::read_models::posts::PostRow;

pub use http::router;
pub use mutation::Mutation;
pub use search::{SearchFilter, cursor_of, offset_after};

/// The root query: the core reads and search.
#[derive(async_graphql::MergedObject, Default)]
pub struct Query(query::CoreQuery, search::SearchQuery);

pub use subscription::Subscription;

pub type ChronicleSchema = Schema<Query, Mutation, Subscription>;

/// What resolvers share across requests.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub commands: CommandClient,
    pub consistency: Consistency,
    pub access_tokens: AccessTokens,
    pub freshness: crate::freshness::Freshness,
    pub rows: RowCache,
    pub sessions: crate::sessions::Sessions,
    /// Images' renditions.
    pub images: std::sync::Arc<dyn object_store::ObjectStore>,
    /// Image uploads per signed-in user.
    pub upload_limit: crate::rate_limit::UploadLimit,
}

/// The signed-in caller, from a verified access token.
#[derive(Clone, Copy, Debug)]
pub struct Viewer {
    pub id: Uuid,
    pub role: Role,
}

/// Per request: who asks, and what they asked the API to wait for.
#[derive(Clone)]
pub struct RequestContext {
    pub viewer: Option<Viewer>,
    pub caller: Caller,
    pub consistency_token: Option<ConsistencyToken>,
    /// Written by resolvers, read into the response's `extensions`.
    pub notes: Arc<Mutex<ResponseNotes>>,
    loader: Arc<DataLoader<loaders::Rows>>,
    /// SQL statements run for this request (for `extensions.diagnostics`).
    statements: Arc<AtomicUsize>,
}

impl RequestContext {
    pub fn new(
        viewer: Option<Viewer>,
        caller: Caller,
        consistency_token: Option<ConsistencyToken>,
        services: &Services,
    ) -> RequestContext {
        let statements = Arc::new(AtomicUsize::new(0));
        RequestContext {
            viewer,
            caller,
            consistency_token,
            notes: Arc::new(Mutex::new(ResponseNotes::default())),
            loader: Arc::new(loaders::per_request(
                services.pool.clone(),
                services.rows.clone(),
                statements.clone(),
            )),
            statements,
        }
    }

    /// The read-model pool, for one statement (each read-model function runs one).
    pub fn pool<'a>(&self, services: &'a Services) -> &'a PgPool {
        self.statements.fetch_add(1, Ordering::Relaxed);
        &services.pool
    }

    pub fn statements(&self) -> usize {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn loader(&self) -> &DataLoader<loaders::Rows> {
        &self.loader
    }

    /// Drafts, and posts of deactivated authors, only to their author,
    /// moderators and admins; deleted posts to no one.
    pub fn can_see(&self, post: &PostRow) -> bool {
        if post.deleted {
            return false;
        }
        post.is_public()
            || self
                .viewer
                .is_some_and(|viewer| viewer.id == post.author_id || viewer.role.can_moderate())
    }

    pub fn note_pending_write(&self, token: &ConsistencyToken) {
        self.notes
            .lock()
            .expect("notes are never poisoned")
            .pending_writes
            .push(token.to_string());
    }
}

/// The request's context (always present: the HTTP layer adds it).
pub fn request<'a>(context: &'a async_graphql::Context<'_>) -> &'a RequestContext {
    context.data_unchecked::<RequestContext>()
}

pub fn services<'a>(context: &'a async_graphql::Context<'_>) -> &'a Services {
    context.data_unchecked::<Services>()
}

/// Facts a resolver reports for the whole response.
#[derive(Clone, Debug, Default)]
pub struct ResponseNotes {
    /// Writes accepted whose read-back timed out: the read side is behind.
    pub pending_writes: Vec<String>,
    /// The response read from the search index (not only the read models).
    pub touched_search: bool,
}

/// Limits that keep one query from costing what a thousand should.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub introspection: bool,
}

pub fn build_schema(services: Services, limits: Limits) -> ChronicleSchema {
    let mut builder = Schema::build(Query::default(), Mutation, Subscription)
        .data(services)
        .limit_depth(limits.max_depth)
        .extension(cost::QueryCost {
            limit: limits.max_complexity,
        })
        .extension(socket::SocketLimits);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema as SDL, as checked in at `schema/api.graphql`.
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation, Subscription)
        .finish()
        .sdl()
}
