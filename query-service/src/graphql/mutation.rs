use async_graphql::{Context, InputObject, Object, SimpleObject};
use chronicle_schema::commands::Secret;
use chronicle_schema::{Command, CommandReply};

use super::types::User;
use super::{RequestContext, Services};
use crate::error::ApiError;
use crate::read_models::users;

pub struct Mutation;

#[derive(InputObject)]
pub struct RegisterUserInput {
    pub email: String,
    pub handle: String,
    pub display_name: String,
    pub password: String,
}

/// Every write payload carries the new stream version and a consistency
/// token; its entity is read from the projections once they include the write
/// (null if they did not within the wait; `extensions.consistency` says so).
#[derive(SimpleObject)]
pub struct UserPayload {
    pub user: Option<User>,
    pub version: i32,
    pub consistency_token: String,
}

#[Object]
impl Mutation {
    async fn register_user(
        &self,
        context: &Context<'_>,
        input: RegisterUserInput,
    ) -> Result<UserPayload, ApiError> {
        let command = Command::RegisterUser {
            email: input.email,
            handle: input.handle,
            display_name: input.display_name,
            password: Secret::new(input.password),
        };
        let accepted = send(context, command).await?;
        let pool = &context.data_unchecked::<Services>().pool;
        let user = accepted
            .read_back(users::by_id(pool, accepted.reply.stream_id))
            .await?;
        Ok(UserPayload {
            user: user.map(User),
            version: accepted.reply.version,
            consistency_token: accepted.reply.consistency_token.to_string(),
        })
    }
}

/// A command the command-service accepted, and whether the projections
/// included it within the wait (if not, the payload's entity is null and the
/// response's `extensions.consistency` lists the pending write).
struct Accepted {
    reply: CommandReply,
    projected: bool,
}

impl Accepted {
    /// The written entity, read back from the projections if they include it.
    async fn read_back<Row>(
        &self,
        load: impl Future<Output = Result<Option<Row>, sqlx::Error>>,
    ) -> Result<Option<Row>, ApiError> {
        if !self.projected {
            return Ok(None);
        }
        Ok(load.await?)
    }
}

async fn send(context: &Context<'_>, command: Command) -> Result<Accepted, ApiError> {
    let services = context.data_unchecked::<Services>();
    let request = context.data_unchecked::<RequestContext>();
    let reply = services.commands.send(&request.caller, command).await?;
    let projected = services
        .consistency
        .wait_for(&reply.consistency_token, services.consistency.max_wait)
        .await?;
    if !projected {
        request
            .notes
            .lock()
            .expect("notes are never poisoned")
            .pending_writes
            .push(reply.consistency_token.to_string());
    }
    Ok(Accepted { reply, projected })
}
