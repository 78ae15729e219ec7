//! Executing commands: each runs in one ACID transaction that loads, decides
//! and appends, together with whatever else the command writes (uniqueness
//! claims, credentials, its idempotency record).

mod comments;
mod idempotency;
mod posts;
mod sessions;
mod unique_claims;
mod users;

use std::sync::Arc;
use std::time::Duration;

use chronicle_platform::access_token::AccessTokens;
use chronicle_schema::{
    Command, CommandEnvelope, CommandReply, ConsistencyToken, DomainEvent, EventMetadata,
    StreamType,
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::aggregates::{Actor, Aggregate, Decision, Rejection};
use crate::auth::login_limit::LoginLimits;
use crate::error::CommandError;
use crate::event_store::{self, AppendContext};

use idempotency::IdempotencyScope;
pub use idempotency::{FingerprintKey, purge_expired as purge_expired_idempotency_keys};
use posts::Transition;

/// How many times a command without `expectedVersion` is re-decided after
/// losing an append race (each time against the new state, so it is only
/// re-applied where it is still valid).
const MAX_ATTEMPTS: usize = 4;

enum Begun {
    Fresh(Transaction<'static, Postgres>),
    Answered(CommandReply),
}

/// Runs `$body` in one command transaction, with idempotency and append-race
/// retries. `$body` uses `$connection: &mut PgConnection` and yields
/// `Result<Written, CommandError>`. A macro rather than a function taking an
/// async closure: the body borrows the caller's locals, and such closures are
/// not `Send` for every lifetime (rust-lang/rust#110338).
macro_rules! transact {
    ($execution:expr, retry_on_race: $retry:expr, |$connection:ident| $body:block) => {{
        let execution: &$crate::commands::Execution<'_> = $execution;
        let scope = execution.idempotency_scope()?;
        let mut attempt = 0;
        loop {
            let mut transaction = match execution.begin(scope.as_ref()).await? {
                $crate::commands::Begun::Answered(reply) => break Ok(reply),
                $crate::commands::Begun::Fresh(transaction) => transaction,
            };
            let result: Result<$crate::commands::Written, $crate::error::CommandError> = async {
                let $connection: &mut sqlx::PgConnection = &mut transaction;
                $body
            }
            .await;
            match execution
                .finish(transaction, result, scope.as_ref(), $retry, &mut attempt)
                .await
            {
                Ok(Some(reply)) => break Ok(reply),
                Ok(None) => continue,
                Err(error) => break Err(error),
            }
        }
    }};
}
pub(crate) use transact;

/// What the command handlers share.
#[derive(Clone)]
pub struct CommandServices {
    pub pool: PgPool,
    pub access_tokens: AccessTokens,
    /// Wakes the outbox relay after a commit, so publishing starts at once.
    pub relay_wake: Arc<Notify>,
    pub idempotency_ttl_seconds: u64,
    pub fingerprint_key: FingerprintKey,
    pub refresh_token_ttl: Duration,
    pub login_limits: LoginLimits,
}

/// Where a command comes from, beyond its envelope.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub bearer: Option<String>,
    /// The end client's address, as the trusted forwarder reports it.
    pub client: String,
    pub request_id: Option<String>,
}

/// The stream a command wrote to and its version after the command.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
}

impl Written {
    fn reply(self) -> CommandReply {
        CommandReply {
            stream_id: self.stream_id,
            version: self.version,
            consistency_token: ConsistencyToken {
                stream_type: self.stream_type,
                stream_id: self.stream_id,
                version: self.version,
            },
            session: None,
        }
    }
}

/// One command in flight: its envelope, where it came from, and who acts.
pub struct Execution<'a> {
    services: &'a CommandServices,
    envelope: &'a CommandEnvelope,
    request: &'a RequestContext,
}

impl Execution<'_> {
    fn metadata(&self, actor: Option<&Actor>) -> EventMetadata {
        EventMetadata {
            command_id: self.envelope.command_id,
            correlation_id: self.envelope.correlation_id,
            causation_id: self.envelope.command_id,
            actor_id: actor.map(|actor| actor.id),
            // The command's span: the relay and the projector continue from it.
            traceparent: chronicle_platform::trace_context::current_traceparent(),
        }
    }

    fn append_context(&self) -> AppendContext {
        AppendContext {
            request_id: self.request.request_id.clone(),
        }
    }

    /// Loads the aggregate, checks `expected_version`, decides and appends.
    /// This is the transaction's first write (see `event_store::append`).
    async fn decide_and_append<A: Aggregate>(
        &self,
        connection: &mut PgConnection,
        actor: Option<&Actor>,
        stream_id: Uuid,
        expected_version: Option<i32>,
        decide: impl FnOnce(&A) -> Decision<A::Event>,
    ) -> Result<Written, CommandError> {
        let loaded = event_store::load::<A>(connection, stream_id).await?;
        if let Some(expected) = expected_version
            && loaded.state.exists()
            && expected != loaded.version
        {
            return Err(CommandError::StaleVersion {
                expected,
                current: loaded.version,
            });
        }
        let events: Vec<DomainEvent> = decide(&loaded.state)?.into_iter().map(Into::into).collect();
        let version = event_store::append(
            connection,
            stream_id,
            A::STREAM_TYPE,
            loaded.version,
            &events,
            &self.metadata(actor),
            &self.append_context(),
        )
        .await?;
        Ok(Written {
            stream_id,
            stream_type: A::STREAM_TYPE,
            version,
        })
    }

    /// Starts a command's transaction; with an idempotency key, it may
    /// instead find the first outcome of this very command and answer that.
    async fn begin(&self, scope: Option<&IdempotencyScope>) -> Result<Begun, CommandError> {
        let mut transaction = self.services.pool.begin().await?;
        if let Some(scope) = scope
            && let Some(reply) = idempotency::lock_and_find(&mut transaction, scope).await?
        {
            return Ok(Begun::Answered(reply));
        }
        Ok(Begun::Fresh(transaction))
    }

    /// Commits a successful attempt (with its idempotency record), or decides
    /// whether a lost append race is retried: `Ok(None)` means try again.
    async fn finish(
        &self,
        mut transaction: Transaction<'static, Postgres>,
        result: Result<Written, CommandError>,
        scope: Option<&IdempotencyScope>,
        retry_on_race: bool,
        attempt: &mut usize,
    ) -> Result<Option<CommandReply>, CommandError> {
        *attempt += 1;
        match result {
            Ok(written) => {
                let reply = written.reply();
                if let Some(scope) = scope {
                    idempotency::remember(
                        &mut transaction,
                        scope,
                        &reply,
                        self.services.idempotency_ttl_seconds,
                    )
                    .await?;
                }
                transaction.commit().await?;
                self.services.relay_wake.notify_one();
                Ok(Some(reply))
            }
            Err(CommandError::ConcurrentWrite { .. })
                if retry_on_race && *attempt < MAX_ATTEMPTS =>
            {
                transaction.rollback().await?;
                metrics::counter!("chronicle_command_retries_total", "command" => self.envelope.command.name())
                    .increment(1);
                Ok(None)
            }
            Err(CommandError::ConcurrentWrite { .. }) => {
                transaction.rollback().await?;
                let current = self.current_version_after_race().await?;
                Err(CommandError::ConcurrentWrite { current })
            }
            Err(error) => Err(error),
        }
    }

    fn idempotency_scope(&self) -> Result<Option<IdempotencyScope>, CommandError> {
        self.envelope
            .idempotency_key
            .as_deref()
            .map(|key| {
                IdempotencyScope::new(
                    self.idempotency_caller(),
                    key,
                    &self.envelope.command,
                    &self.services.fingerprint_key,
                )
            })
            .transpose()
    }

    /// Keys are scoped per caller: the bearer's subject, else anonymous.
    fn idempotency_caller(&self) -> String {
        self.request
            .bearer
            .as_deref()
            .and_then(|token| self.services.access_tokens.verify(token).ok())
            .map_or_else(|| "anonymous".to_owned(), |claims| claims.sub.to_string())
    }

    async fn current_version_after_race(&self) -> Result<i32, CommandError> {
        match self.envelope.command.target_stream() {
            Some(stream_id) => {
                Ok(event_store::current_version(&self.services.pool, stream_id).await?)
            }
            None => Ok(0),
        }
    }

    async fn actor(&self, connection: &mut PgConnection) -> Result<Option<Actor>, CommandError> {
        crate::auth::resolve_actor(
            connection,
            &self.services.access_tokens,
            self.request.bearer.as_deref(),
        )
        .await
    }
}

impl From<Rejection> for CommandError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::NotFound(what) => CommandError::NotFound(format!("{what} not found")),
            Rejection::Forbidden(why) => CommandError::Forbidden(why.to_owned()),
            Rejection::Conflict(why) => CommandError::conflict(why),
            Rejection::Invalid(fields) => CommandError::Invalid(fields),
        }
    }
}

/// The stream a command names, where it names one (for CONFLICT details).
trait TargetStream {
    fn target_stream(&self) -> Option<Uuid>;
}

impl TargetStream for Command {
    fn target_stream(&self) -> Option<Uuid> {
        match self {
            Command::ChangeRole { user_id, .. } | Command::DeactivateUser { user_id, .. } => {
                Some(*user_id)
            }
            Command::EditPost { post_id, .. }
            | Command::PublishPost { post_id, .. }
            | Command::UnpublishPost { post_id, .. }
            | Command::DeletePost { post_id, .. } => Some(*post_id),
            Command::EditComment { comment_id, .. } | Command::DeleteComment { comment_id, .. } => {
                Some(*comment_id)
            }
            _ => None,
        }
    }
}

fn expected_version(command: &Command) -> Option<i32> {
    match command {
        Command::UpdateProfile {
            expected_version, ..
        }
        | Command::ChangeRole {
            expected_version, ..
        }
        | Command::DeactivateUser {
            expected_version, ..
        }
        | Command::EditPost {
            expected_version, ..
        }
        | Command::PublishPost {
            expected_version, ..
        }
        | Command::UnpublishPost {
            expected_version, ..
        }
        | Command::DeletePost {
            expected_version, ..
        }
        | Command::EditComment {
            expected_version, ..
        }
        | Command::DeleteComment {
            expected_version, ..
        } => *expected_version,
        _ => None,
    }
}

/// Executes one command envelope.
pub async fn execute(
    services: &CommandServices,
    request: &RequestContext,
    envelope: &CommandEnvelope,
) -> Result<CommandReply, CommandError> {
    let execution = Execution {
        services,
        envelope,
        request,
    };
    let started = std::time::Instant::now();
    let result = dispatch(&execution, &envelope.command).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.code().as_str(),
    };
    metrics::histogram!("chronicle_command_duration_seconds", "command" => envelope.command.name(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

async fn dispatch(
    execution: &Execution<'_>,
    command: &Command,
) -> Result<CommandReply, CommandError> {
    let retry_on_race = expected_version(command).is_none();
    match command {
        Command::RegisterUser {
            email,
            handle,
            display_name,
            password,
        } => users::register(execution, email, handle, display_name, password.expose()).await,
        Command::UpdateProfile {
            display_name,
            bio,
            expected_version,
        } => {
            users::update_profile(
                execution,
                display_name.as_deref(),
                bio.as_deref(),
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::ChangeRole {
            user_id,
            role,
            expected_version,
        } => users::change_role(execution, *user_id, *role, *expected_version, retry_on_race).await,
        Command::DeactivateUser {
            user_id,
            expected_version,
        } => users::deactivate(execution, *user_id, *expected_version, retry_on_race).await,
        Command::Login { email, password } => {
            sessions::login(execution, email, password.expose()).await
        }
        Command::RefreshToken { refresh_token } => {
            sessions::refresh(execution, refresh_token.expose()).await
        }
        Command::Logout { refresh_token } => {
            sessions::logout(execution, refresh_token.expose()).await
        }
        Command::CreatePost {
            title,
            body,
            tags,
            slug,
        } => posts::create(execution, title, body, tags.as_deref(), slug.as_deref()).await,
        Command::EditPost {
            post_id,
            title,
            body,
            tags,
            expected_version,
        } => {
            posts::edit(
                execution,
                *post_id,
                title.as_deref(),
                body.as_deref(),
                tags.as_deref(),
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::PublishPost {
            post_id,
            expected_version,
        } => {
            posts::transition(
                execution,
                *post_id,
                Transition::Publish,
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::UnpublishPost {
            post_id,
            expected_version,
        } => {
            posts::transition(
                execution,
                *post_id,
                Transition::Unpublish,
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::DeletePost {
            post_id,
            expected_version,
        } => {
            posts::transition(
                execution,
                *post_id,
                Transition::Delete,
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::AddComment {
            post_id,
            body,
            parent_id,
        } => comments::add(execution, *post_id, body, *parent_id).await,
        Command::EditComment {
            comment_id,
            body,
            expected_version,
        } => {
            comments::edit(
                execution,
                *comment_id,
                body,
                *expected_version,
                retry_on_race,
            )
            .await
        }
        Command::DeleteComment {
            comment_id,
            expected_version,
        } => comments::delete(execution, *comment_id, *expected_version, retry_on_race).await,
    }
}
