//! Where a reader of the store (the outbox relay, a rebuild) may read up to:
//! below every transaction that may still append an event.
//!
//! Sequences commit out of order, so a reader takes only events whose
//! transaction can no longer change: it must wait for transactions still
//! running that append. Not for all of them (`pg_snapshot_xmin`): any long
//! transaction on the server, in another database or a rebuild's, would stop
//! publishing for every command. Every appender holds a shared advisory lock
//! (`event_store.appenders_key()`) from before its first write to its end
//! (`event_store.append_batch` takes it; a trigger on the events table takes
//! it for any other writer). So, in one statement, with its snapshot S taken first:
//!
//! - an appender that held the lock and had a transaction id when the lock
//!   table was read bounds the horizon by that id;
//! - one without an id yet, or one that starts later, gets an id at or above
//!   S's xmax, which bounds the horizon too;
//! - one that ended since S is committed or rolled back: final.
//!
//! Events below the horizon are then read with a later snapshot, in which
//! every transaction below it has ended.
//!
//! A writer that wrote something else before its first event got its id
//! before it took the lock, so the fence does not see it: appends are a
//! transaction's first write (`event_store.append_batch` is; an operator's own
//! INSERT must be too).

use sqlx::PgExecutor;

/// `event_store.appenders_key()`: "APPENDER".
pub const APPENDERS_KEY: i64 = 0x4150_5045_4E44_4552;

/// The horizon, an `xid8` as text: every appending transaction below it has
/// ended. Give it to `read_committed`.
pub async fn horizon(executor: impl PgExecutor<'_>) -> Result<String, sqlx::Error> {
    sqlx::query_scalar::<_, String>(
        r#"WITH snapshot AS (
             SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric AS xmax
           ),
           appenders AS (
             -- How far each appender's 32-bit id is below xmax (mod 2^32).
             SELECT ((s.xmax % 4294967296) - a.backend_xid::text::numeric + 4294967296)
                      % 4294967296 AS below
             FROM snapshot s, pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = ($1::int8 >> 32)::oid AND l.objid = ($1::int8 & 4294967295)::oid
               AND a.backend_xid IS NOT NULL
           )
           SELECT LEAST(
                    s.xmax,
                    -- The appender's id, widened to 64 bits. One at or above
                    -- xmax (assigned after the snapshot; "below" wraps to
                    -- near 2^32) is bounded by xmax already.
                    min(s.xmax - a.below) FILTER (WHERE a.below < 2147483648)
                  )::text
           FROM snapshot s LEFT JOIN appenders a ON TRUE
           GROUP BY s.xmax"#,
    )
    .bind(APPENDERS_KEY)
    .fetch_one(executor)
    .await
}

/// The appender the relay has waited on longest, if it has been running
/// for a while: "held by xid N, pid P, open S s".
pub struct Holder {
    pub pid: i32,
    pub xid: String,
    pub open_seconds: f64,
}

pub async fn oldest_holder(executor: impl PgExecutor<'_>) -> Result<Option<Holder>, sqlx::Error> {
    let row = sqlx::query_as::<_, (i32, String, f64)>(
        r#"SELECT a.pid, a.backend_xid::text,
                  COALESCE(EXTRACT(EPOCH FROM now() - a.xact_start)::float8, 0)
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = ($1::int8 >> 32)::oid AND l.objid = ($1::int8 & 4294967295)::oid
             AND a.backend_xid IS NOT NULL
           ORDER BY age(a.backend_xid) DESC
           LIMIT 1"#,
    )
    .bind(APPENDERS_KEY)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(pid, xid, open_seconds)| Holder {
        pid,
        xid,
        open_seconds,
    }))
}
