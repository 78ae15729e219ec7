//! Executing commands. Each command type decides on what it reads (through
//! the aggregate cache, or the store) and answers a `Decided`: the events,
//! the stream they go to and the version they were decided on, the unique
//! values they claim, and what else must commit with them. One statement
//! then checks that nothing it read moved, that the actor's session is open,
//! claims, appends and records the idempotency key (`event_store::append_decision`).
//! If something it read moved, the decision is made again on the new state
//! (unless the client named the version it expected: then that is a conflict).

mod cache;
mod comments;
mod erasure;
mod idempotency;
mod images;
mod posts;
mod sessions;
mod users;

use std::sync::Arc;
use std::time::Duration;

use chronicle_platform::access_token::{AccessTokens, Claims, TokenError};
use chronicle_schema::events::{CommentEvent, PostEvent};
use chronicle_schema::privacy;
use chronicle_schema::{
    Command, CommandEnvelope, CommandReply, ConsistencyToken, DomainEvent, EventMetadata,
    StreamType,
};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::aggregates::{Actor, Aggregate, Rejection, User};
use crate::auth::login_limit::LoginLimits;
use crate::error::CommandError;
use crate::event_store::{
    self, Append, Appended, Claim, GroupCommit, Idempotency, Loaded, Lock, Read, Sealing,
    StoreError,
};
use crate::privacy::SealingKeys;

pub use cache::AggregateCache;
use cache::Cached;
pub use idempotency::{FingerprintKey, purge_expired as purge_expired_idempotency_keys};

/// How many times a decision is made at most. Each round of writers racing
/// on one stream lets at least one of them through, so this is how many
/// concurrent writers to one stream are all kept.
const MAX_ATTEMPTS: usize = 16;

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
    pub aggregates: Arc<AggregateCache>,
    pub group_commit: GroupCommit,
    pub keys: Arc<SealingKeys>,
    /// Images' originals and renditions (uploads write, erasure deletes).
    pub images: Arc<dyn object_store::ObjectStore>,
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

/// What a command decided: the events for one stream, on its version.
pub(crate) struct Decided {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub base_version: i32,
    pub events: Vec<DomainEvent>,
    pub claims: Vec<Claim>,
    /// What else commits with the events.
    pub also: Option<AlsoWrite>,
    /// Whose personal values the events carry, where the events do not say
    /// (an edit: its author); see `subject`.
    sealed_for: Option<Uuid>,
}

impl Decided {
    pub fn new<A: Aggregate>(stream_id: Uuid, base_version: i32, events: Vec<A::Event>) -> Decided {
        Decided {
            stream_id,
            stream_type: A::STREAM_TYPE,
            base_version,
            events: events.into_iter().map(Into::into).collect(),
            claims: Vec::new(),
            also: None,
            sealed_for: None,
        }
    }

    /// The events carry `subject`'s personal values.
    pub fn sealed_for(mut self, subject: Uuid) -> Decided {
        self.sealed_for = Some(subject);
        self
    }

    /// Whose key seals the events, when they carry personal values: the
    /// user of a user stream, the author a new post or comment names, or
    /// the one the decision named.
    fn subject(&self) -> Option<Uuid> {
        if !self
            .events
            .iter()
            .any(|event| privacy::is_personal(event.event_type()))
        {
            return None;
        }
        self.sealed_for.or_else(|| match self.events.first()? {
            DomainEvent::User(_) => Some(self.stream_id),
            DomainEvent::Post(PostEvent::Created(created)) => Some(created.author_id),
            DomainEvent::Comment(CommentEvent::Added(added)) => Some(added.author_id),
            _ => None,
        })
    }
}

/// Command-side state that commits with a command's events (never in them).
pub(crate) enum AlsoWrite {
    Credentials {
        user_id: Uuid,
        password_hash: String,
    },
    EndSessions {
        user_id: Uuid,
    },
}

/// A command type: it decides on what it reads through an `Attempt`.
pub(crate) trait Handle {
    /// The version of its target the client said it expects, if any.
    fn expected_version(&self) -> Option<i32> {
        None
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError>;
}

/// One command in flight: its envelope, where it came from, and who acts.
pub struct Execution<'a> {
    services: &'a CommandServices,
    envelope: &'a CommandEnvelope,
    request: &'a RequestContext,
    /// The verified token's claims, when the caller sent one.
    claims: Option<Claims>,
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

    /// Keys are scoped per caller: the bearer's subject, else anonymous.
    fn idempotency_caller(&self) -> String {
        self.claims
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |claims| claims.sub.to_string())
    }

    /// Decides and appends, deciding again as long as what it read moved.
    async fn run(&self, handler: &impl Handle) -> Result<CommandReply, CommandError> {
        let idempotency = self
            .envelope
            .idempotency_key
            .as_deref()
            .map(|key| {
                idempotency::IdempotencyScope::new(
                    self.idempotency_caller(),
                    key,
                    &self.envelope.command,
                    &self.services.fingerprint_key,
                )
            })
            .transpose()?;
        let mut last_conflict = 0;
        // Decide on cached state first; after a refusal, or reads that do not
        // agree, on the store's.
        let mut from_store = false;
        // Claims are tried with their first candidate alone; all of them
        // are sent once that one is found taken (a try not counted as an
        // attempt: it happens once, and would otherwise cost the last one).
        let mut every_candidate = false;
        let mut attempt_number = 0;
        while attempt_number < MAX_ATTEMPTS {
            attempt_number += 1;
            let mut attempt = Attempt {
                execution: self,
                reads: Vec::new(),
                actor: None,
                from_store,
                cached: Vec::new(),
            };
            let decided = match handler.decide(&mut attempt).await {
                Ok(decided) => decided,
                Err(error) => {
                    if !attempt.cached.is_empty() && error.is_refusal() {
                        // A cache behind may refuse what the store allows.
                        for stream_id in &attempt.cached {
                            self.services.aggregates.forget(*stream_id);
                        }
                        from_store = true;
                        continue;
                    }
                    // A retry of a command that already succeeded (a post
                    // deleted, a version moved on) answers its first outcome.
                    if let Some(scope) = &idempotency
                        && error.is_refusal()
                        && let Some(recorded) =
                            idempotency::find(&self.services.pool, scope).await?
                    {
                        return recorded.reply();
                    }
                    return Err(error);
                }
            };
            let Attempt {
                mut reads, actor, ..
            } = attempt;
            // One entry per stream, with the strongest lock asked for it. A
            // stream read at two versions (the actor is the target, and it
            // moved in between) is decided again.
            reads.sort_by_key(|read| (read.stream_id, std::cmp::Reverse(read.lock as i32)));
            if reads.windows(2).any(|pair| {
                pair[0].stream_id == pair[1].stream_id && pair[0].version != pair[1].version
            }) {
                for read in &reads {
                    self.services.aggregates.forget(read.stream_id);
                }
                from_store = true;
                continue;
            }
            reads.dedup_by_key(|read| read.stream_id);
            let sealing = self.sealing(&decided).await?;
            let appends_events = !decided.events.is_empty();
            let (claims, narrowed) = if every_candidate {
                (decided.claims, Vec::new())
            } else {
                first_candidates(decided.claims)
            };
            let append = Append {
                stream_id: decided.stream_id,
                stream_type: decided.stream_type,
                base_version: decided.base_version,
                events: decided.events,
                metadata: self.metadata(actor.as_ref()),
                request_id: self.request.request_id.clone(),
                session: actor
                    .as_ref()
                    .and(self.claims.as_ref().and_then(|claims| claims.sid)),
                reads,
                claims,
                idempotency: idempotency.as_ref().map(|scope| Idempotency {
                    caller: scope.caller.clone(),
                    key: scope.key.clone(),
                    fingerprint: scope.request_hash.clone(),
                    ttl_seconds: self.services.idempotency_ttl_seconds,
                }),
                sealing,
            };
            let outcome = self.append(append, decided.also).await;
            let written = |version| Written {
                stream_id: decided.stream_id,
                stream_type: decided.stream_type,
                version,
            };
            match outcome {
                Ok(Appended::Appended { version }) => {
                    // Its cached state is behind now; the next read loads it.
                    self.services.aggregates.forget(decided.stream_id);
                    if appends_events {
                        self.services.relay_wake.notify_one();
                    }
                    return Ok(written(version).reply());
                }
                Ok(Appended::Replayed(stored)) => {
                    return Ok(Written {
                        stream_id: stored.stream_id,
                        stream_type: stored.stream_type,
                        version: stored.version,
                    }
                    .reply());
                }
                Ok(Appended::KeyReused) => return Err(idempotency::key_reused()),
                Ok(Appended::SessionEnded) => {
                    return Err(CommandError::Unauthenticated(
                        "the session has ended (signed out, or the account was secured); sign in again",
                    ));
                }
                Ok(Appended::Taken(kinds)) => {
                    if !kinds.iter().any(|kind| narrowed.contains(&kind.as_str())) {
                        return Err(taken(&kinds));
                    }
                    tracing::debug!(?kinds, "a first candidate is taken; claiming from all");
                    every_candidate = true;
                    attempt_number -= 1;
                    continue;
                }
                Ok(Appended::Stale { stream_id, version }) => {
                    self.services.aggregates.forget(stream_id);
                    if stream_id == decided.stream_id {
                        if let Some(expected) = handler.expected_version()
                            && expected != version
                        {
                            return Err(CommandError::StaleVersion {
                                expected,
                                current: version,
                            });
                        }
                        last_conflict = version;
                    }
                }
                Err(StoreError::Conflict { current }) => {
                    self.services.aggregates.forget(decided.stream_id);
                    if let Some(expected) = handler.expected_version() {
                        let current = self
                            .current_version(decided.stream_id)
                            .await
                            .unwrap_or(current);
                        return Err(CommandError::StaleVersion { expected, current });
                    }
                    last_conflict = current;
                }
                Err(StoreError::ClaimRace) => {}
                Err(error) => return Err(error.into()),
            }
            metrics::counter!("chronicle_command_retries_total", "command" => self.envelope.command.name())
                .increment(1);
            tracing::debug!(
                attempt_number,
                "what the decision read moved; deciding again"
            );
        }
        Err(CommandError::ConcurrentWrite {
            current: last_conflict,
        })
    }

    /// The key that seals the decision's personal values, if it has any.
    async fn sealing(&self, decided: &Decided) -> Result<Option<Sealing>, CommandError> {
        let Some(subject) = decided.subject() else {
            return Ok(None);
        };
        match self.services.keys.for_subject(subject).await? {
            Some(key) => Ok(Some(Sealing { subject, key })),
            // Nothing is written for an erased person, by anyone.
            None => Err(CommandError::NotFound("user not found".into())),
        }
    }

    /// The append, with what else commits with it, in one transaction; an
    /// append alone shares one with whatever appends are in flight.
    async fn append(
        &self,
        append: Append,
        also: Option<AlsoWrite>,
    ) -> Result<Appended, StoreError> {
        let Some(also) = also else {
            return self.services.group_commit.append(append).await;
        };
        let mut transaction = self.services.pool.begin().await?;
        let outcome = event_store::append_decision(&mut *transaction, &append).await?;
        if let Appended::Appended { .. } = outcome {
            match also {
                AlsoWrite::Credentials {
                    user_id,
                    password_hash,
                } => {
                    sqlx::query!(
                        "INSERT INTO auth.credentials (user_id, password_hash) VALUES ($1, $2)",
                        user_id,
                        password_hash
                    )
                    .execute(&mut *transaction)
                    .await?;
                }
                AlsoWrite::EndSessions { user_id } => {
                    crate::auth::refresh_tokens::revoke_all(&mut transaction, user_id).await?;
                }
            }
            transaction.commit().await?;
        } else {
            transaction.rollback().await?;
        }
        Ok(outcome)
    }

    async fn current_version(&self, stream_id: Uuid) -> Result<i32, sqlx::Error> {
        event_store::current_version(&self.services.pool, stream_id).await
    }
}

/// The claims with their first candidates alone, and the kinds of those
/// that had others.
fn first_candidates(claims: Vec<Claim>) -> (Vec<Claim>, Vec<&'static str>) {
    let mut narrowed = Vec::new();
    let claims = claims
        .into_iter()
        .map(|claim| match claim.first_candidate() {
            Some(first) => {
                narrowed.push(claim.kind);
                first
            }
            None => claim,
        })
        .collect();
    (claims, narrowed)
}

/// The field errors of claims whose values are taken.
fn taken(kinds: &[String]) -> CommandError {
    let mut fields = crate::validation::FieldErrors::new();
    for kind in kinds {
        match kind.as_str() {
            "email" => fields.add("email", "is already registered"),
            "handle" => fields.add("handle", "is already taken"),
            "slug" => fields.add("slug", "is already taken"),
            other => fields.add(other, "is already taken"),
        }
    }
    let message = match kinds.first().map(String::as_str) {
        Some("slug") => "a post with this slug already exists",
        _ => "a user with this email or handle already exists",
    };
    CommandError::Conflict {
        message: message.into(),
        fields,
    }
}

/// One attempt at a decision: what it read, and who acts.
pub(crate) struct Attempt<'a> {
    execution: &'a Execution<'a>,
    reads: Vec<Read>,
    actor: Option<Actor>,
    /// Read every stream from the store, not the cache.
    from_store: bool,
    /// Streams this attempt took from the cache.
    cached: Vec<Uuid>,
}

impl Attempt<'_> {
    /// The signed-in actor, as the event store knows them. A role change,
    /// deactivation or signing out applies at once: those take the user's
    /// lock exclusively, the append takes it shared and checks their stream
    /// did not move and the session is open. No token is an anonymous caller.
    pub async fn actor(&mut self) -> Result<Option<Actor>, CommandError> {
        let Some(claims) = &self.execution.claims else {
            return Ok(None);
        };
        let user_id = claims.sub;
        let user = self.read::<User>(user_id, Lock::Shared).await?;
        if !user.state.registered {
            return Err(CommandError::Unauthenticated(
                "the access token's user does not exist",
            ));
        }
        if !user.state.active {
            return Err(CommandError::Unauthenticated("this account is deactivated"));
        }
        let actor = Actor {
            id: user.state.id,
            role: user.state.role,
            handle: user.state.handle,
        };
        self.actor = Some(actor.clone());
        Ok(Some(actor))
    }

    /// The actor, or UNAUTHENTICATED for commands that need one.
    pub async fn require_actor(&mut self) -> Result<Actor, CommandError> {
        self.actor()
            .await?
            .ok_or(CommandError::Unauthenticated("sign in to do this"))
    }

    /// A stream the decision depends on, checked unmoved when appended
    /// (after taking `lock` on it).
    pub async fn read<A: Aggregate + Cached>(
        &mut self,
        stream_id: Uuid,
        lock: Lock,
    ) -> Result<Loaded<A>, CommandError> {
        let loaded = self.load::<A>(stream_id).await?;
        self.reads.push(Read {
            stream_id,
            version: loaded.version,
            lock,
        });
        Ok(loaded)
    }

    /// The stream the command appends to, at the version the client expects
    /// (a conflict if it is at another), or as it is; locked exclusively
    /// where it is appended.
    pub async fn target<A: Aggregate + Cached>(
        &mut self,
        stream_id: Uuid,
        expected_version: Option<i32>,
    ) -> Result<Loaded<A>, CommandError> {
        // Exclusive: the append locks its target so whether listed or not;
        // listed, it is taken in order with the rest.
        let loaded = self.read::<A>(stream_id, Lock::Exclusive).await?;
        if let Some(expected) = expected_version
            && loaded.state.exists()
            && expected != loaded.version
        {
            // A refusal: made again on the store's state if this was cached.
            return Err(CommandError::StaleVersion {
                expected,
                current: loaded.version,
            });
        }
        Ok(loaded)
    }

    async fn load<A: Aggregate + Cached>(
        &mut self,
        stream_id: Uuid,
    ) -> Result<Loaded<A>, CommandError> {
        let cache = &self.execution.services.aggregates;
        if !self.from_store
            && let Some((version, state)) = cache.get::<A>(stream_id)
        {
            self.cached.push(stream_id);
            return Ok(Loaded { state, version });
        }
        let mut connection = self.execution.services.pool.acquire().await?;
        let loaded = event_store::load::<A>(&mut connection, stream_id).await?;
        if loaded.version > 0 {
            cache.keep(stream_id, loaded.version, &loaded.state);
        }
        Ok(loaded)
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

/// Executes one command envelope.
pub async fn execute(
    services: &CommandServices,
    request: &RequestContext,
    envelope: &CommandEnvelope,
) -> Result<CommandReply, CommandError> {
    let started = std::time::Instant::now();
    let result = async {
        let claims = verify(services, request)?;
        let execution = Execution {
            services,
            envelope,
            request,
            claims,
        };
        dispatch(&execution, &envelope.command).await
    }
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.code().as_str(),
    };
    metrics::histogram!("chronicle_command_duration_seconds", "command" => envelope.command.name(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// The caller's token, verified here (never taken on the forwarder's word);
/// none is an anonymous caller, a bad one an error.
fn verify(
    services: &CommandServices,
    request: &RequestContext,
) -> Result<Option<Claims>, CommandError> {
    let Some(token) = request.bearer.as_deref() else {
        return Ok(None);
    };
    let claims = services
        .access_tokens
        .verify(token)
        .map_err(|error| match error {
            TokenError::Expired => CommandError::Unauthenticated("the access token has expired"),
            TokenError::Invalid => CommandError::Unauthenticated("the access token is invalid"),
        })?;
    if claims.sid.is_none() {
        return Err(CommandError::Unauthenticated(
            "the access token has no session; sign in again",
        ));
    }
    Ok(Some(claims))
}

async fn dispatch(
    execution: &Execution<'_>,
    command: &Command,
) -> Result<CommandReply, CommandError> {
    match command {
        Command::RegisterUser {
            email,
            handle,
            display_name,
            password,
        } => {
            let handler =
                users::Register::parse(email, handle, display_name, password.expose()).await?;
            execution.run(&handler).await
        }
        Command::UpdateProfile {
            display_name,
            bio,
            expected_version,
        } => {
            let handler = users::UpdateProfile::parse(
                display_name.as_deref(),
                bio.as_deref(),
                *expected_version,
            )?;
            execution.run(&handler).await
        }
        Command::ChangeRole {
            user_id,
            role,
            expected_version,
        } => {
            execution
                .run(&users::ChangeRole {
                    user_id: *user_id,
                    role: *role,
                    expected_version: *expected_version,
                })
                .await
        }
        Command::DeactivateUser {
            user_id,
            expected_version,
        } => {
            execution
                .run(&users::Deactivate {
                    user_id: *user_id,
                    expected_version: *expected_version,
                })
                .await
        }
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
        } => {
            let handler = posts::Create::parse(title, body, tags.as_deref(), slug.as_deref())?;
            execution.run(&handler).await
        }
        Command::EditPost {
            post_id,
            title,
            body,
            tags,
            expected_version,
        } => {
            let handler = posts::EditPost::parse(
                *post_id,
                title.as_deref(),
                body.as_deref(),
                tags.as_deref(),
                *expected_version,
            )?;
            execution.run(&handler).await
        }
        Command::PublishPost {
            post_id,
            expected_version,
        } => {
            execution
                .run(&posts::Transition::new(
                    *post_id,
                    posts::Change::Publish,
                    *expected_version,
                ))
                .await
        }
        Command::UnpublishPost {
            post_id,
            expected_version,
        } => {
            execution
                .run(&posts::Transition::new(
                    *post_id,
                    posts::Change::Unpublish,
                    *expected_version,
                ))
                .await
        }
        Command::DeletePost {
            post_id,
            expected_version,
        } => {
            execution
                .run(&posts::Transition::new(
                    *post_id,
                    posts::Change::Delete,
                    *expected_version,
                ))
                .await
        }
        Command::AddComment {
            post_id,
            body,
            parent_id,
        } => {
            let handler = comments::Add::parse(*post_id, body, *parent_id)?;
            execution.run(&handler).await
        }
        Command::EditComment {
            comment_id,
            body,
            expected_version,
        } => {
            let handler = comments::EditComment::parse(*comment_id, body, *expected_version)?;
            execution.run(&handler).await
        }
        Command::DeleteComment {
            comment_id,
            expected_version,
        } => {
            execution
                .run(&comments::DeleteComment {
                    comment_id: *comment_id,
                    expected_version: *expected_version,
                })
                .await
        }
        Command::EraseUser { user_id } => erasure::erase_user(execution, *user_id).await,
        Command::AttachImage {
            post_id,
            image,
            alt,
        } => {
            let handler = images::Attach::parse(*post_id, image, alt)?;
            execution.run(&handler).await
        }
        Command::RecordImageOutcome {
            post_id,
            image_id,
            outcome,
        } => {
            execution
                .run(&images::RecordOutcome {
                    post_id: *post_id,
                    image_id: *image_id,
                    outcome: outcome.clone(),
                })
                .await
        }
    }
}
