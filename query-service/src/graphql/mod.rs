//! The GraphQL API (contract: `schema/api.graphql`).

mod http;
mod mutation;
mod query;
mod types;

use std::sync::{Arc, Mutex};

use async_graphql::{EmptySubscription, Schema};
use chronicle_platform::access_token::AccessTokens;
use chronicle_schema::{ConsistencyToken, Role};
use sqlx::PgPool;
use uuid::Uuid;

use crate::command_client::{Caller, CommandClient};
use crate::consistency::Consistency;

pub use http::router;
pub use mutation::Mutation;
pub use query::Query;

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
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub viewer: Option<Viewer>,
    pub caller: Caller,
    pub consistency_token: Option<ConsistencyToken>,
    /// Written by resolvers, read into the response's `extensions`.
    pub notes: Arc<Mutex<ResponseNotes>>,
}

/// Facts a resolver reports for the whole response.
#[derive(Clone, Debug, Default)]
pub struct ResponseNotes {
    /// Writes accepted whose read-back timed out: the read side is behind.
    pub pending_writes: Vec<String>,
}

pub fn build_schema(services: Services, introspection: bool) -> ChronicleSchema {
    let mut builder = Schema::build(Query, Mutation, EmptySubscription).data(services);
    if !introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}
