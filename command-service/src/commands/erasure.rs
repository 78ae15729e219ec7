//! Erasing a person (GDPR art. 17) by crypto-shredding: their key is
//! destroyed, so every sealed value of theirs, wherever a copy went, no
//! longer opens; every stream they created is closed with an `…Erased` event
//! that every read model folds into forgetting; their sign-in, sessions and
//! claimed values (email, handle, slugs) go. docs/privacy.md has the whole.
//!
//! One transaction. The person's stream is locked exclusively, and each of
//! their commands takes it shared and checks its session, so a write of
//! theirs commits before the erasure (and is closed by it) or finds its
//! session ended. Others' writes (a comment on their post) are kept: one
//! decided before the erasure commits lands, one decided after finds the
//! stream closed and is refused; one to a stream the erasure closes (a
//! moderator's) makes the erasure run again.

use chronicle_schema::events::{CommentErased, PostErased, UserErased};
use chronicle_schema::privacy;
use chronicle_schema::{CommandReply, DomainEvent, Role, StreamType};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Attempt, Execution, FingerprintKey, MAX_ATTEMPTS, Written};
use crate::aggregates::{Actor, Aggregate, User};
use crate::auth::login_limit;
use crate::error::CommandError;
use crate::event_store::{self, StoreError};

pub(super) async fn erase_user(
    execution: &Execution<'_>,
    user_id: Uuid,
) -> Result<CommandReply, CommandError> {
    let services = execution.services;
    let mut attempt = Attempt {
        execution,
        reads: Vec::new(),
        actor: None,
        from_store: true,
        cached: Vec::new(),
    };
    let actor = attempt.require_actor().await?;
    if actor.id != user_id && actor.role != Role::Admin {
        return Err(CommandError::Forbidden(
            "only the person themself or an admin may erase an account".into(),
        ));
    }
    let session = execution.claims.as_ref().and_then(|claims| claims.sid);
    for _ in 0..MAX_ATTEMPTS {
        let mut transaction = services.pool.begin().await?;
        // Before the first write, as every appender (the relay's fence).
        sqlx::query!("SELECT pg_advisory_xact_lock_shared(event_store.appenders_key())")
            .execute(&mut *transaction)
            .await?;
        // The person's lock and the actor's, exclusively, in the one global
        // order: every command of either takes theirs shared, so none of
        // theirs is in flight from here, and none starts until the commit.
        // Not a lock per stream of theirs (an author of tens of thousands
        // would fill Postgres's lock table): another writer to one of those
        // streams makes the append below fail on its version, and the
        // erasure runs again.
        sqlx::query!("SELECT event_store.lock_streams($1)", &[user_id, actor.id])
            .execute(&mut *transaction)
            .await?;
        // Under the lock: a second erasure of the same person waited here.
        if let Some(version) = erased_already(&mut transaction, user_id).await? {
            return Ok(written(user_id, version));
        }
        let streams = created_streams(&mut transaction, user_id).await?;
        let user = event_store::load::<User>(&mut transaction, user_id).await?;
        if !user.state.exists() {
            return Err(CommandError::NotFound("user not found".into()));
        }
        check_actor(&mut transaction, &actor, user_id, session).await?;
        let appended =
            match append_closing_events(&mut transaction, execution, &actor, &user, &streams).await
            {
                Err(StoreError::Conflict { .. }) => {
                    transaction.rollback().await?;
                    continue;
                }
                appended => appended?,
            };
        forget_person(
            &mut transaction,
            &user.state,
            actor.id,
            &streams,
            &services.fingerprint_key,
        )
        .await?;
        transaction.commit().await?;
        services.keys.forget(user_id);
        services.aggregates.forget(user_id);
        for (stream_id, _, _) in &streams {
            services.aggregates.forget(*stream_id);
        }
        services.relay_wake.notify_one();
        let posts: Vec<Uuid> = streams
            .iter()
            .filter(|(_, stream_type, _)| *stream_type == StreamType::Post)
            .map(|(stream_id, _, _)| *stream_id)
            .collect();
        super::images::delete_erased_blobs(services, &posts).await;
        metrics::counter!("chronicle_events_appended_total", "event_type" => "UserErased")
            .increment(1);
        metrics::counter!("chronicle_events_appended_total", "event_type" => "PostErased")
            .increment(appended.posts);
        metrics::counter!("chronicle_events_appended_total", "event_type" => "CommentErased")
            .increment(appended.comments);
        metrics::counter!("chronicle_users_erased_total").increment(1);
        return Ok(written(user_id, user.version + 1));
    }
    Err(CommandError::ConcurrentWrite { current: 0 })
}

/// The actor as the store has them now, under their stream's lock (a role
/// change or deactivation waits for this erasure, or came before it and is
/// seen), with the session they sign in with still open.
async fn check_actor(
    connection: &mut PgConnection,
    actor: &Actor,
    user_id: Uuid,
    session: Option<Uuid>,
) -> Result<(), CommandError> {
    let now = event_store::load::<User>(&mut *connection, actor.id).await?;
    if !now.state.exists() || !now.state.active {
        return Err(CommandError::Unauthenticated(
            "the access token's user does not exist or is deactivated",
        ));
    }
    if actor.id != user_id && now.state.role != Role::Admin {
        return Err(CommandError::Forbidden(
            "only the person themself or an admin may erase an account".into(),
        ));
    }
    let open = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM auth.sessions
                          WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL) AS "open!""#,
        session,
        actor.id
    )
    .fetch_one(&mut *connection)
    .await?;
    if !open {
        return Err(CommandError::Unauthenticated(
            "the session has ended (signed out, or the account was secured); sign in again",
        ));
    }
    Ok(())
}

fn written(user_id: Uuid, version: i32) -> CommandReply {
    Written {
        stream_id: user_id,
        stream_type: StreamType::User,
        version,
    }
    .reply()
}

/// The user stream's version if the person was erased before (an erasure
/// asked again answers as the first did).
async fn erased_already(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<i32>, sqlx::Error> {
    let erased = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM privacy.erasures WHERE subject_id = $1) AS \"erased!\"",
        user_id
    )
    .fetch_one(&mut *connection)
    .await?;
    if !erased {
        return Ok(None);
    }
    Ok(Some(
        event_store::current_version(connection, user_id).await?,
    ))
}

/// The posts and comments the person created, with their types and
/// versions now, in id order.
async fn created_streams(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<(Uuid, StreamType, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT created.stream_id AS "stream_id!", created.stream_type AS "stream_type!",
                  (SELECT max(e.version) FROM event_store.events e
                   WHERE e.stream_id = created.stream_id) AS "version!"
           FROM event_store.events created
           WHERE created.payload->>'authorId' = $1::uuid::text AND created.version = 1
             AND created.stream_type IN ('post', 'comment')
           ORDER BY created.stream_id"#,
        user_id
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some((
                row.stream_id,
                StreamType::parse(&row.stream_type)?,
                row.version,
            ))
        })
        .collect())
}

struct Closed {
    posts: u64,
    comments: u64,
}

/// `UserErased` on the person's stream, and an `…Erased` on each stream
/// they created, after the version each was read at, in one statement
/// however many there are; `Conflict` if another writer appended to one of
/// them since.
async fn append_closing_events(
    connection: &mut PgConnection,
    execution: &Execution<'_>,
    actor: &Actor,
    user: &event_store::Loaded<User>,
    streams: &[(Uuid, StreamType, i32)],
) -> Result<Closed, StoreError> {
    let metadata = execution.metadata(Some(actor));
    let mut context = serde_json::json!({});
    if let Some(traceparent) = &metadata.traceparent {
        context["traceparent"] = serde_json::json!(traceparent);
    }
    if let Some(request_id) = &execution.request.request_id {
        context["requestId"] = serde_json::json!(request_id);
    }
    let mut closed = Closed {
        posts: 0,
        comments: 0,
    };
    let (mut ids, mut types, mut versions, mut events) = (
        vec![user.state.id],
        vec![StreamType::User.as_str()],
        vec![user.version + 1],
        vec![DomainEvent::from(UserErased {})],
    );
    for (stream_id, stream_type, version) in streams {
        ids.push(*stream_id);
        types.push(stream_type.as_str());
        versions.push(version + 1);
        events.push(match stream_type {
            StreamType::Post => {
                closed.posts += 1;
                PostErased {}.into()
            }
            _ => {
                closed.comments += 1;
                CommentErased {}.into()
            }
        });
    }
    let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let event_types: Vec<&str> = events.iter().map(DomainEvent::event_type).collect();
    let schema_versions: Vec<i16> = events.iter().map(DomainEvent::schema_version).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(DomainEvent::to_payload).collect();
    sqlx::query!(
        r#"INSERT INTO event_store.events
               (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                command_id, correlation_id, causation_id, actor_id, metadata)
           SELECT new.event_id, new.stream_id, new.stream_type, new.version, new.event_type,
                  new.schema_version, new.payload, $7, $8, $7, $9, $10
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::text[], $6::int2[],
                       $11::jsonb[])
                WITH ORDINALITY AS new(event_id, stream_id, stream_type, version, event_type,
                                       schema_version, payload, n)
           ORDER BY new.n"#,
        &event_ids,
        &ids,
        &types as &[&str],
        &versions,
        &event_types as &[&str],
        &schema_versions,
        metadata.command_id,
        metadata.correlation_id,
        metadata.actor_id,
        context,
        &payloads,
    )
    .execute(&mut *connection)
    .await
    .map_err(|error| match error {
        sqlx::Error::Database(error)
            if error.constraint() == Some(event_store::STREAM_VERSION_CONSTRAINT) =>
        {
            StoreError::Conflict { current: 0 }
        }
        error => error.into(),
    })?;
    Ok(closed)
}

/// Everything else Chronicle holds about the person, in the erasure's
/// transaction: the key (the shredding itself), the record that they were
/// erased, their claims (the email, handle and slugs are free again), their
/// password, sessions, idempotency records and failed sign-ins.
async fn forget_person(
    connection: &mut PgConnection,
    user: &User,
    erased_by: Uuid,
    streams: &[(Uuid, StreamType, i32)],
    pseudonyms: &FingerprintKey,
) -> Result<(), sqlx::Error> {
    let mut claimed: Vec<Uuid> = streams.iter().map(|(id, _, _)| *id).collect();
    claimed.push(user.id);
    privacy::destroy_key(&mut *connection, user.id, erased_by).await?;
    sqlx::query!(
        "DELETE FROM event_store.unique_claims WHERE stream_id = ANY($1)",
        &claimed
    )
    .execute(&mut *connection)
    .await?;
    crate::auth::refresh_tokens::revoke_all(&mut *connection, user.id).await?;
    sqlx::query!(
        "DELETE FROM auth.refresh_tokens WHERE user_id = $1",
        user.id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!("DELETE FROM auth.credentials WHERE user_id = $1", user.id)
        .execute(&mut *connection)
        .await?;
    sqlx::query!(
        "DELETE FROM auth.login_failures WHERE account = $1",
        login_limit::account(pseudonyms, &user.email)
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "DELETE FROM event_store.idempotency_keys WHERE caller = $1",
        user.id.to_string()
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}
