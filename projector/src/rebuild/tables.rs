//! Rebuilding the read models into `read_next` and swapping them in.

use std::str::FromStr;

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::{StoreCursor, horizon, read_committed};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::model::ReadModel;
use super::{READ_BATCH, RebuildError, RebuildOptions, Rebuilder, Tracker, bulk, count_below};
use crate::apply::{self, Incoming};
use crate::dead_letters;
use crate::read_models::{self, PROJECTION, SWAP_LOCK_KEY};

const NEXT: &str = "read_next";
/// Catch up outside the swap until fewer than this many events are left.
const CATCH_UP_BATCH: i64 = 2_000;

pub(super) async fn rebuild(
    rebuilder: &Rebuilder,
    tracker: &Tracker<'_>,
    options: RebuildOptions,
) -> Result<(), RebuildError> {
    let pool = &rebuilder.pool;
    // Its own connection, building in "read_next" (the handlers' SQL is unqualified).
    let mut connection = PgConnectOptions::from_str(&rebuilder.database_url)?
        .options([("search_path", NEXT)])
        .connect()
        .await?;
    read_models::create_schema(&mut connection, NEXT).await?;

    tracker.phase("reading the event store");
    let horizon = horizon(pool).await?;
    tracker.total(count_below(pool, &horizon).await?);
    let mut model = ReadModel::default();
    let mut cursor = StoreCursor::start();
    loop {
        let batch = read_committed(pool, &cursor, Some(&horizon), READ_BATCH).await?;
        let Some((last, _)) = batch.last() else { break };
        cursor = last.clone();
        let count = batch.len() as u64;
        for (_, row) in batch {
            model.apply(&RecordedEvent::try_from(row)?);
        }
        tracker.processed(count);
    }
    model.finish();

    tracker.phase("writing the new tables");
    let mut transaction = connection.begin().await?;
    bulk::write(&mut transaction, &model).await?;
    for poison in &model.poison {
        dead_letters::record_event(&mut transaction, PROJECTION, &poison.event, &poison.error)
            .await?;
    }
    transaction.commit().await?;
    // Unqualified: the connection builds in read_next.
    sqlx::query("ANALYZE users, posts, comments, tags, stream_versions")
        .execute(&mut connection)
        .await?;

    tracker.phase("catching up");
    while catch_up(&mut connection, &mut cursor, tracker).await? >= CATCH_UP_BATCH as usize {}

    if !options.swap {
        return Ok(());
    }
    tracker.phase("swapping");
    swap(&mut connection, &mut cursor, tracker).await
}

/// Applies the next committed events after `cursor` to `read_next`; answers how many.
async fn catch_up(
    connection: &mut PgConnection,
    cursor: &mut StoreCursor,
    tracker: &Tracker<'_>,
) -> Result<usize, RebuildError> {
    let batch = read_committed(&mut *connection, cursor, None, CATCH_UP_BATCH).await?;
    let Some((last, _)) = batch.last() else {
        return Ok(0);
    };
    *cursor = last.clone();
    let count = batch.len();
    let events = batch
        .into_iter()
        .map(|(_, row)| RecordedEvent::try_from(row).map(Incoming::Event))
        .collect::<Result<Vec<_>, _>>()?;
    let mut transaction = connection.begin().await?;
    apply::catch_up(&mut transaction, &events).await?;
    transaction.commit().await?;
    tracker.processed(count as u64);
    Ok(count)
}

/// In one transaction, holding the lock every live batch shares: the last
/// events, a check against the live tables, and the rename.
async fn swap(
    connection: &mut PgConnection,
    cursor: &mut StoreCursor,
    tracker: &Tracker<'_>,
) -> Result<(), RebuildError> {
    let mut transaction = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK_KEY)
        .execute(&mut *transaction)
        .await?;
    loop {
        let batch = read_committed(&mut *transaction, cursor, None, CATCH_UP_BATCH).await?;
        let Some((last, _)) = batch.last() else { break };
        *cursor = last.clone();
        let count = batch.len();
        let events = batch
            .into_iter()
            .map(|(_, row)| RecordedEvent::try_from(row).map(Incoming::Event))
            .collect::<Result<Vec<_>, _>>()?;
        apply::catch_up(&mut transaction, &events).await?;
        tracker.processed(count as u64);
    }
    let live_hash: Option<String> =
        sqlx::query_scalar("SELECT ddl_hash FROM projector.generations WHERE projection = $1")
            .bind(PROJECTION)
            .fetch_optional(&mut *transaction)
            .await?;
    let current_hash = read_models::ddl_hash();
    // Same shape: every row both have at the same stream version must match.
    // A new shape cannot be compared; it is what the new build asked for.
    if live_hash.as_deref() == Some(current_hash.as_str()) {
        tracker.phase("verifying against the live read models");
        verify(&mut transaction).await?;
    }
    sqlx::raw_sql(
        "ALTER SCHEMA read RENAME TO read_retired; \
         ALTER SCHEMA read_next RENAME TO read; \
         DROP SCHEMA read_retired CASCADE;",
    )
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        r#"INSERT INTO projector.generations (projection, generation, ddl_hash, state, built_at)
           VALUES ($1, 1, $2, 'LIVE', now())
           ON CONFLICT (projection) DO UPDATE
             SET generation = projector.generations.generation + 1, ddl_hash = EXCLUDED.ddl_hash,
                 state = 'LIVE', built_at = now()"#,
    )
    .bind(PROJECTION)
    .bind(&current_hash)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// Rows that both schemas have at the same stream version, but that differ.
async fn verify(connection: &mut PgConnection) -> Result<(), RebuildError> {
    let checks = [
        (
            "users",
            "(n.handle, n.display_name, n.bio, n.email, n.role, n.active, n.joined_at, n.updated_at) \
             IS DISTINCT FROM (o.handle, o.display_name, o.bio, o.email, o.role, o.active, o.joined_at, o.updated_at)",
        ),
        (
            "posts",
            "(n.slug, n.title, n.body, n.excerpt, n.status, n.deleted, n.tags, n.author_id, n.author_handle, \
              n.created_at, n.updated_at, n.published_at) \
             IS DISTINCT FROM (o.slug, o.title, o.body, o.excerpt, o.status, o.deleted, o.tags, o.author_id, \
              o.author_handle, o.created_at, o.updated_at, o.published_at)",
        ),
        (
            "comments",
            "(n.post_id, n.author_id, n.parent_id, n.body, n.deleted, n.created_at, n.edited_at) \
             IS DISTINCT FROM (o.post_id, o.author_id, o.parent_id, o.body, o.deleted, o.created_at, o.edited_at)",
        ),
    ];
    let mut mismatches = Vec::new();
    for (table, differs) in checks {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT n.id FROM read_next.{table} n JOIN read.{table} o USING (id) \
             WHERE n.version = o.version AND {differs} LIMIT 5"
        )))
        .fetch_all(&mut *connection)
        .await?;
        if !ids.is_empty() {
            mismatches.push(format!("{table} {ids:?}"));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(RebuildError::Mismatch(mismatches.join("; ")))
    }
}
