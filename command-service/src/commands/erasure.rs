//! Erasing a person (GDPR art. 17) by crypto-shredding: their key is
//! destroyed, so every sealed value of theirs, wherever a copy went, no
//! longer opens; every stream they created is closed with an `…Erased` event
//! that every read model folds into forgetting; their sign-in, sessions and
//! claimed values (email, handle, slugs) go. docs/privacy.md has the whole.
//!
//! One transaction, after the appends' own locks: the person's stream is
//! locked exclusively, and each of their commands takes it shared and checks
//! its session, so a write of theirs commits before the erasure (and is
//! closed by it) or finds its session ended. Others' writes to the person's
//! streams (a comment on their post) commit before, and are kept, or are
//! decided again on the erased stream and refused.

use chronicle_schema::events::{CommentErased, PostErased, UserErased};
use chronicle_schema::{CommandReply, DomainEvent, Role, StreamType};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Attempt, Execution, MAX_ATTEMPTS, Written};
use crate::aggregates::{Actor, Aggregate, User};
use crate::error::CommandError;
use crate::event_store::{self, Append, Appended, StoreError};

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
    for _ in 0..MAX_ATTEMPTS {
        let mut transaction = services.pool.begin().await?;
        if let Some(version) = erased_already(&mut transaction, user_id).await? {
            return Ok(written(user_id, version));
        }
        let user = event_store::load::<User>(&mut transaction, user_id).await?;
        if !user.state.exists() {
            return Err(CommandError::NotFound("user not found".into()));
        }
        let streams = created_streams(&mut transaction, user_id).await?;
        let appends = closing_appends(execution, &actor, &user, &streams);
        let outcomes =
            event_store::append_batch(&mut *transaction, &appends.iter().collect::<Vec<_>>())
                .await?;
        let mut moved = false;
        for outcome in outcomes {
            match outcome {
                Ok(Appended::Appended { .. }) => {}
                Ok(Appended::Stale { .. }) | Err(StoreError::Conflict { .. }) => moved = true,
                Ok(Appended::SessionEnded) => {
                    return Err(CommandError::Unauthenticated(
                        "the session has ended (signed out, or the account was secured); sign in again",
                    ));
                }
                Ok(other) => {
                    return Err(CommandError::Internal(format!(
                        "an erasure append answered {other:?}"
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        }
        // Under the person's lock now: a stream they created before it was
        // taken, and after the list above, is closed by the next attempt.
        let ids = |streams: &[(Uuid, StreamType, i32)]| -> Vec<Uuid> {
            streams.iter().map(|(id, _, _)| *id).collect()
        };
        if moved || ids(&created_streams(&mut transaction, user_id).await?) != ids(&streams) {
            transaction.rollback().await?;
            continue;
        }
        forget_person(&mut transaction, &user.state, actor.id, &streams).await?;
        transaction.commit().await?;
        services.keys.forget(user_id);
        services.aggregates.forget(user_id);
        for (stream_id, _, _) in &streams {
            services.aggregates.forget(*stream_id);
        }
        services.relay_wake.notify_one();
        metrics::counter!("chronicle_users_erased_total").increment(1);
        return Ok(written(user_id, user.version + 1));
    }
    Err(CommandError::ConcurrentWrite { current: 0 })
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

/// `UserErased` on the person's stream, and an `…Erased` on each stream
/// they created, each at the version it was read at.
fn closing_appends(
    execution: &Execution<'_>,
    actor: &Actor,
    user: &event_store::Loaded<User>,
    streams: &[(Uuid, StreamType, i32)],
) -> Vec<Append> {
    let metadata = execution.metadata(Some(actor));
    let session = execution.claims.as_ref().and_then(|claims| claims.sid);
    let append = |stream_id, stream_type, base_version, event: DomainEvent, session| Append {
        stream_id,
        stream_type,
        base_version,
        events: vec![event],
        metadata: metadata.clone(),
        request_id: execution.request.request_id.clone(),
        session,
        reads: Vec::new(),
        claims: Vec::new(),
        idempotency: None,
        sealing: None,
    };
    let mut appends = vec![append(
        user.state.id,
        StreamType::User,
        user.version,
        UserErased {}.into(),
        session,
    )];
    for (stream_id, stream_type, version) in streams {
        let event: DomainEvent = match stream_type {
            StreamType::Post => PostErased {}.into(),
            _ => CommentErased {}.into(),
        };
        appends.push(append(*stream_id, *stream_type, *version, event, None));
    }
    appends
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
) -> Result<(), sqlx::Error> {
    let mut claimed: Vec<Uuid> = streams.iter().map(|(id, _, _)| *id).collect();
    claimed.push(user.id);
    sqlx::query!(
        "DELETE FROM privacy.subject_keys WHERE subject_id = $1",
        user.id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO privacy.erasures (subject_id, erased_by) VALUES ($1, $2)
         ON CONFLICT (subject_id) DO NOTHING",
        user.id,
        erased_by
    )
    .execute(&mut *connection)
    .await?;
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
        "DELETE FROM auth.login_failures WHERE email = $1",
        user.email
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
