//! The GraphQL API (contract: `schema/api.graphql`).

mod http;
pub mod loaders;
mod mutation;
mod pagination;
mod query;
mod search;
mod types;

use std::sync::{Arc, Mutex};

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptySubscription, Schema};
use chronicle_platform::access_token::AccessTokens;
use chronicle_schema::{ConsistencyToken, Role};
use sqlx::PgPool;
use uuid::Uuid;

use crate::command_client::{Caller, CommandClient};
use crate::consistency::Consistency;
use crate::read_models::posts::PostRow;

pub use http::router;
pub use mutation::Mutation;
pub use search::{SearchFilter, cursor_of, offset_after};

/// The root query: the core reads and search.
#[derive(async_graphql::MergedObject, Default)]
pub struct Query(query::CoreQuery, search::SearchQuery);

pub type ChronicleSchema = Schema<Query, Mutation, EmptySubscription>;

/// What resolvers share across requests.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub commands: CommandClient,
    pub consistency: Consistency,
    pub access_tokens: AccessTokens,
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
}

impl RequestContext {
    pub fn new(
        viewer: Option<Viewer>,
        caller: Caller,
        consistency_token: Option<ConsistencyToken>,
        pool: PgPool,
    ) -> RequestContext {
        RequestContext {
            viewer,
            caller,
            consistency_token,
            notes: Arc::new(Mutex::new(ResponseNotes::default())),
            loader: Arc::new(loaders::per_request(pool)),
        }
    }

    pub fn loader(&self) -> &DataLoader<loaders::Rows> {
        &self.loader
    }

    /// Drafts only to their author, moderators and admins; deleted posts to no one.
    pub fn can_see(&self, post: &PostRow) -> bool {
        if post.deleted {
            return false;
        }
        post.status == "PUBLISHED"
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
}

pub fn build_schema(services: Services, introspection: bool) -> ChronicleSchema {
    let mut builder = Schema::build(Query::default(), Mutation, EmptySubscription).data(services);
    if !introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}
