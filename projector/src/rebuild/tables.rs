//! Rebuilding the read models into `read_next` and swapping them in.
//!
//! 1. Create `read_next`'s tables, without their indexes (primary keys and
//!    unique constraints are dropped until the load is done: one sorted
//!    build is cheaper than a btree insert per row).
//! 2. Load: fold the store below a horizon into them by `COPY` (`load`).
//! 3. Constrain and index them, recount the few late counts, analyze.
//! 4. Catch up with what was committed meanwhile, with the live path's own
//!    code, a batch per short transaction.
//! 5. Verify every column of every row both schemas have at the same point
//!    (`verify`), outside any lock.
//! 6. Swap: take the lock every live batch holds shared, apply the last
//!    events, rename `read_next` to `read`, in one short transaction.
//!
//! No transaction of the rebuild holds a transaction id for long (each COPY
//! chunk, index, catch-up batch is its own), so it never holds back the
//! outbox relay or vacuum; queries keep answering from the live schema.

use std::str::FromStr;

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::{StoreCursor, fence, read_committed, visible_horizon};
use chronicle_schema::privacy::Keyring;
use chronicle_schema::read_models::{comments, posts};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::{
    RebuildError, RebuildOptions, Rebuilder, Tracker, count_below, load, niceness, verify,
};
use crate::apply::{self, Incoming, Mode};
use crate::dead_letters;
use crate::read_models::{self, PROJECTION, SWAP_LOCK_KEY};

const NEXT: &str = "read_next";
/// Events applied per catch-up transaction.
const CATCH_UP_BATCH: i64 = 2_000;
/// Rows recounted, or letters recorded, per transaction.
const FIX_UP_CHUNK: usize = 2_000;

/// The rebuild's catch-up: it alone writes `read_next`, so it takes no locks.
const CATCH_UP: Mode = Mode {
    lock: false,
    announce: false,
    refold: false,
};

/// The swap's last catch-up: what it applies, the live path will find
/// applied and skip, so it tells listeners itself (on commit, as the
/// renamed tables go live).
const SWAP_CATCH_UP: Mode = Mode {
    announce: true,
    ..CATCH_UP
};

pub(super) async fn rebuild(
    rebuilder: &Rebuilder,
    tracker: &Tracker,
    options: RebuildOptions,
) -> Result<(), RebuildError> {
    let pool = &rebuilder.pool;
    // Connections of their own, without the pools' statement timeout: a
    // read of the whole store is one statement. Without JIT: compiling the
    // check's comparisons took longer than it saved (1.3 s of 3.4 s at 1.1M
    // events), and the store read gains nothing from it.
    let connect_options = PgConnectOptions::from_str(&rebuilder.database_url)?
        .options([("statement_timeout", "0"), ("jit", "off")]);
    // Index builds sort a million rows: in memory, not in temporary files.
    let writer_options = connect_options
        .clone()
        .options([("search_path", NEXT), ("maintenance_work_mem", "256MB")]);
    let mut writer = writer_options.connect().await?;
    let mut reader = connect_options.connect().await?;
    // The load, the index builds and the check run in the background; the
    // catch-up and the swap (which holds off live batches) do not.
    niceness::to_background(&mut writer).await?;
    niceness::to_background(&mut reader).await?;
    let ddl = read_models::Ddl::split();
    read_models::create_schema(&mut writer, NEXT, &ddl.tables).await?;
    let constraints = unique_constraints(&mut writer).await?;
    for constraint in &constraints {
        sqlx::raw_sql(sqlx::AssertSqlSafe(constraint.drop.clone()))
            .execute(&mut writer)
            .await?;
    }

    tracker.phase("reading the event store");
    let horizon = fence::horizon(pool).await?;
    tracker.total(count_below(pool, &horizon).await?);
    let (loaded, mut reader, mut writer) = load::load(reader, writer, &horizon, tracker).await?;

    tracker.phase("indexing the new tables");
    // A duplicate the load wrote fails here, and the rebuild with it.
    let adds = constraints.iter().map(|constraint| constraint.add.clone());
    let mut second = writer_options.connect().await?;
    niceness::to_background(&mut second).await?;
    index(&mut writer, second, adds.chain(ddl.indexes).collect()).await?;
    for chunk in loaded.late.posts.chunks(FIX_UP_CHUNK) {
        posts::recount(&mut writer, chunk).await?;
    }
    for chunk in loaded.late.comments.chunks(FIX_UP_CHUNK) {
        comments::recount(&mut writer, chunk).await?;
    }
    for chunk in loaded.letters.chunks(FIX_UP_CHUNK) {
        let mut transaction = writer.begin().await?;
        for letter in chunk {
            dead_letters::record(&mut transaction, PROJECTION, letter).await?;
        }
        transaction.commit().await?;
    }
    // Unqualified: the writer builds in read_next.
    sqlx::query("ANALYZE users, posts, comments, tags, stream_versions")
        .execute(&mut writer)
        .await?;

    tracker.phase("catching up");
    // A backend of normal priority: raising one back may need a privilege
    // that lowering it did not.
    writer.close().await?;
    let mut writer = writer_options.connect().await?;
    // Everything below the horizon is loaded; the rest follows in safe order.
    let mut cursor = StoreCursor {
        transaction_id: horizon,
        position: 0,
    };
    while catch_up(&mut writer, &mut cursor, tracker).await? >= CATCH_UP_BATCH as usize {}

    if !options.swap {
        return Ok(());
    }
    let live_hash: Option<String> =
        sqlx::query_scalar("SELECT ddl_hash FROM projector.generations WHERE projection = $1")
            .bind(PROJECTION)
            .fetch_optional(pool)
            .await?;
    let current_hash = read_models::ddl_hash();
    // The same shape: every column of every row both have at the same point
    // must match. A new shape cannot be compared; it is what this build asks for.
    if live_hash.as_deref() == Some(current_hash.as_str()) {
        tracker.phase("verifying against the live read models");
        let mut second = connect_options.connect().await?;
        niceness::to_background(&mut second).await?;
        verify::against_live(&mut reader, &mut second, NEXT).await?;
        second.close().await?;
    }
    tracker.phase("swapping");
    swap(&mut writer, &mut cursor, tracker, &current_hash).await
}

/// Runs `statements` (each builds an index) on two connections at once: a
/// build is one sort on one core, and the machine has more.
async fn index(
    first: &mut PgConnection,
    mut second: PgConnection,
    statements: Vec<String>,
) -> Result<(), sqlx::Error> {
    let queue = std::sync::Mutex::new(statements.into_iter());
    let (one, two) = tokio::join!(build_from(&queue, first), build_from(&queue, &mut second));
    one.and(two)?;
    second.close().await
}

/// One statement at a time: a build on a table the other connection is
/// constraining waits for it, then goes on.
async fn build_from(
    queue: &std::sync::Mutex<std::vec::IntoIter<String>>,
    connection: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    loop {
        let next = queue.lock().expect("the queue is never poisoned").next();
        let Some(statement) = next else {
            return Ok(());
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await?;
    }
}

/// A primary key or unique constraint of `read_next`, as statements.
struct Constraint {
    drop: String,
    add: String,
}

async fn unique_constraints(connection: &mut PgConnection) -> Result<Vec<Constraint>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT format('ALTER TABLE %I.%I DROP CONSTRAINT %I', n.nspname, t.relname, c.conname), \
                format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', n.nspname, t.relname, c.conname, \
                       pg_get_constraintdef(c.oid)) \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND c.contype IN ('p', 'u') \
         ORDER BY t.relname, c.conname",
    )
    .bind(NEXT)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(drop, add)| Constraint { drop, add })
        .collect())
}

/// Drops `read_next` (what a failed rebuild left).
pub(super) async fn drop_next(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("DROP SCHEMA IF EXISTS read_next CASCADE")
        .execute(pool)
        .await?;
    Ok(())
}

/// Applies the next committed events after `cursor` to `read_next`; answers how many.
async fn catch_up(
    connection: &mut PgConnection,
    cursor: &mut StoreCursor,
    tracker: &Tracker,
) -> Result<usize, RebuildError> {
    let horizon = fence::horizon(&mut *connection).await?;
    let batch = read_committed(&mut *connection, cursor, &horizon, CATCH_UP_BATCH).await?;
    let Some((last, _)) = batch.last() else {
        return Ok(0);
    };
    *cursor = last.clone();
    let count = batch.len();
    let keys =
        Keyring::for_payloads(&mut *connection, batch.iter().map(|(_, row)| &row.payload)).await?;
    let events = incoming(batch, &keys);
    let mut transaction = connection.begin().await?;
    apply::apply_within(&mut transaction, &events, CATCH_UP).await?;
    transaction.commit().await?;
    tracker.processed(count as u64);
    Ok(count)
}

/// Stored events as a batch: the unreadable ones are set aside as live.
fn incoming(
    batch: Vec<(StoreCursor, chronicle_schema::events::StoredEventRow)>,
    keys: &Keyring,
) -> Vec<Incoming> {
    batch
        .into_iter()
        .map(|(_, row)| {
            let mut letter = dead_letters::Letter::stored(&row, None, String::new());
            match RecordedEvent::open(row, keys) {
                Ok(event) => Incoming::Event(event),
                Err(error) => {
                    letter.error = error.to_string();
                    Incoming::Unreadable(Box::new(letter))
                }
            }
        })
        .collect()
}

/// In one short transaction, holding the lock every live batch shares: the
/// last events, and the rename.
async fn swap(
    connection: &mut PgConnection,
    cursor: &mut StoreCursor,
    tracker: &Tracker,
    ddl_hash: &str,
) -> Result<(), RebuildError> {
    let mut transaction = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK_KEY)
        .execute(&mut *transaction)
        .await?;
    // No live batch runs now, and every event one applied has committed:
    // read all that is committed. An event of a transaction still running is
    // passed over here; it is not published yet, and the live path applies
    // it to the swapped-in tables.
    loop {
        let horizon = visible_horizon(&mut *transaction).await?;
        let batch = read_committed(&mut *transaction, cursor, &horizon, CATCH_UP_BATCH).await?;
        let Some((last, _)) = batch.last() else { break };
        *cursor = last.clone();
        let count = batch.len();
        let keys =
            Keyring::for_payloads(&mut *transaction, batch.iter().map(|(_, row)| &row.payload))
                .await?;
        apply::apply_within(&mut transaction, &incoming(batch, &keys), SWAP_CATCH_UP).await?;
        tracker.processed(count as u64);
    }
    sqlx::raw_sql(
        "ALTER SCHEMA read RENAME TO read_retired; \
         ALTER SCHEMA read_next RENAME TO read; \
         DROP SCHEMA read_retired CASCADE;",
    )
    .execute(&mut *transaction)
    .await?;
    apply::announce_replaced(&mut transaction).await?;
    sqlx::query(
        r#"INSERT INTO projector.generations (projection, generation, ddl_hash, state, built_at)
           VALUES ($1, 1, $2, 'LIVE', now())
           ON CONFLICT (projection) DO UPDATE
             SET generation = projector.generations.generation + 1, ddl_hash = EXCLUDED.ddl_hash,
                 state = 'LIVE', built_at = now()"#,
    )
    .bind(PROJECTION)
    .bind(ddl_hash)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}
