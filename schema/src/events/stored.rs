//! The row shape of `event_store.events`, shared by every reader of the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DecodeError, DomainEvent, EventMetadata, RecordedEvent, StreamType};
use crate::privacy::{Keyring, Opened};

/// One row of `event_store.events` as selected by readers (columns in this order).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEventRow {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: String,
    pub version: i32,
    pub event_type: String,
    pub schema_version: i16,
    pub payload: serde_json::Value,
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor_id: Option<Uuid>,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Reads a stored row, its personal values opened with `keys`.
    pub fn open(row: StoredEventRow, keys: &Keyring) -> Result<RecordedEvent, DecodeError> {
        let stream_type = StreamType::parse(&row.stream_type)
            .ok_or_else(|| DecodeError::UnknownType(format!("stream type {}", row.stream_type)))?;
        let traceparent = row
            .metadata
            .get("traceparent")
            .and_then(|value| value.as_str())
            .map(str::to_owned);
        let (event, opened) =
            DomainEvent::open(&row.event_type, row.schema_version, row.payload, keys)?;
        Ok(RecordedEvent {
            position: row.position,
            event_id: row.event_id,
            stream_id: row.stream_id,
            stream_type,
            version: row.version,
            event,
            metadata: EventMetadata {
                command_id: row.command_id,
                correlation_id: row.correlation_id,
                causation_id: row.causation_id,
                actor_id: row.actor_id,
                traceparent,
            },
            recorded_at: row.recorded_at,
            erased: opened == Opened::Erased,
        })
    }
}

/// A place in the event store's safe order: (transaction id, position).
/// Everything at or before it has been read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreCursor {
    /// An `xid8`, as text.
    pub transaction_id: String,
    pub position: i64,
}

impl StoreCursor {
    pub fn start() -> StoreCursor {
        StoreCursor {
            transaction_id: "0".to_owned(),
            position: 0,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    transaction_id: String,
    #[sqlx(flatten)]
    event: StoredEventRow,
}

/// The next committed events after `after`, in (transaction id, position)
/// order, from transactions below `horizon` (an `xid8` as text).
///
/// Sequences commit out of order, so `position > last` could pass over an
/// event whose transaction commits late. With `fence::horizon`, nothing can
/// appear below the horizon any more: what this returns is final, and a
/// reader that keeps the last row's cursor misses nothing.
pub async fn read_committed(
    executor: impl sqlx::PgExecutor<'_>,
    after: &StoreCursor,
    horizon: &str,
    limit: i64,
) -> Result<Vec<(StoreCursor, StoredEventRow)>, sqlx::Error> {
    // Not `query_as!`: the row flattens the shared event row type.
    let rows = sqlx::query_as::<_, CursorRow>(
        r#"SELECT transaction_id::text AS transaction_id,
                  position, event_id, stream_id, stream_type, version, event_type,
                  schema_version, payload, command_id, correlation_id, causation_id,
                  actor_id, metadata, recorded_at
           FROM event_store.events
           WHERE (transaction_id, position) > ($1::text::xid8, $2)
             AND transaction_id < $3::text::xid8
           -- Qualified: a bare name would sort by the text alias above, in
           -- which "10" comes before "9" (the index is unused and the cursor
           -- could pass over events).
           ORDER BY events.transaction_id, events.position
           LIMIT $4"#,
    )
    .bind(&after.transaction_id)
    .bind(after.position)
    .bind(horizon)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let cursor = StoreCursor {
                transaction_id: row.transaction_id,
                position: row.event.position,
            };
            (cursor, row.event)
        })
        .collect())
}

/// Everything committed so far (the current snapshot's xmax): for a reader
/// that holds off every writer it must see (the rebuild's swap) and does not
/// keep its cursor; a cursor kept across reads needs `fence::horizon`.
pub async fn visible_horizon(executor: impl sqlx::PgExecutor<'_>) -> Result<String, sqlx::Error> {
    sqlx::query_scalar::<_, String>("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        .fetch_one(executor)
        .await
}
