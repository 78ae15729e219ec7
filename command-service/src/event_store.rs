//! Appending to and reading streams of `event_store.events`.
//!
//! Optimistic concurrency is the database's `UNIQUE (stream_id, version)`: two
//! writers that decided on the same version cannot both commit; the loser gets
//! `StoreError::Conflict`. There is no lock on the append path.

use chronicle_schema::events::{DecodeError, StoredEventRow};
use chronicle_schema::{DomainEvent, EventMetadata, RecordedEvent, StreamType};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregates::Aggregate;

const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the stream is at version {current}")]
    Conflict { current: i32 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An aggregate rebuilt from its stream, and the version it was rebuilt at.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i32,
}

/// Context stored beside the events that is not part of their meaning.
#[derive(Clone, Debug, Default)]
pub struct AppendContext {
    pub request_id: Option<String>,
}

pub async fn read_stream(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                  schema_version, payload, command_id, correlation_id, causation_id,
                  actor_id, metadata, recorded_at
           FROM event_store.events
           WHERE stream_id = $1
           ORDER BY version"#,
        stream_id
    )
    .fetch_all(&mut *connection)
    .await?;
    rows.into_iter()
        .map(|row| RecordedEvent::try_from(row).map_err(StoreError::from))
        .collect()
}

pub async fn load<A: Aggregate>(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    let mut state = A::new(stream_id);
    let mut version = 0;
    for recorded in read_stream(connection, stream_id).await? {
        if let Some(event) = A::own_event(recorded.event) {
            state.apply(&event);
        }
        version = recorded.version;
    }
    Ok(Loaded { state, version })
}

/// Appends `events` after `base_version` (the version the decision was made
/// on) and returns the stream's new version. This must be the transaction's
/// first write: see `outbox::relay` on why the transaction id order matters.
pub async fn append(
    connection: &mut PgConnection,
    stream_id: Uuid,
    stream_type: StreamType,
    base_version: i32,
    events: &[DomainEvent],
    metadata: &EventMetadata,
    context: &AppendContext,
) -> Result<i32, StoreError> {
    if events.is_empty() {
        return Ok(base_version);
    }
    let count = i32::try_from(events.len()).expect("a command appends a handful of events");
    let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let versions: Vec<i32> = (base_version + 1..=base_version + count).collect();
    let event_types: Vec<String> = events
        .iter()
        .map(|event| event.event_type().to_owned())
        .collect();
    let schema_versions: Vec<i16> = events.iter().map(DomainEvent::schema_version).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(DomainEvent::to_payload).collect();
    let mut extra = json!({});
    if let Some(traceparent) = &metadata.traceparent {
        extra["traceparent"] = json!(traceparent);
    }
    if let Some(request_id) = &context.request_id {
        extra["requestId"] = json!(request_id);
    }

    let result = sqlx::query!(
        r#"INSERT INTO event_store.events
               (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                command_id, correlation_id, causation_id, actor_id, metadata)
           SELECT new.event_id, $2, $3, new.version, new.event_type, new.schema_version, new.payload,
                  $4, $5, $6, $7, $8
           FROM UNNEST($1::uuid[], $9::int4[], $10::text[], $11::int2[], $12::jsonb[])
                AS new(event_id, version, event_type, schema_version, payload)
           ORDER BY new.version"#,
        &event_ids,
        stream_id,
        stream_type.as_str(),
        metadata.command_id,
        metadata.correlation_id,
        metadata.causation_id,
        metadata.actor_id,
        extra,
        &versions,
        &event_types,
        &schema_versions,
        &payloads,
    )
    .execute(&mut *connection)
    .await;

    match result {
        Ok(_) => {
            for event_type in &event_types {
                metrics::counter!("chronicle_events_appended_total", "event_type" => event_type.clone())
                    .increment(1);
            }
            Ok(base_version + count)
        }
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some(STREAM_VERSION_CONSTRAINT) =>
        {
            // The transaction is aborted; the caller reads the current version afresh.
            Err(StoreError::Conflict {
                current: base_version + 1,
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// The stream's current version (0 when it does not exist).
pub async fn current_version(
    executor: impl sqlx::PgExecutor<'_>,
    stream_id: Uuid,
) -> Result<i32, sqlx::Error> {
    let version = sqlx::query_scalar!(
        r#"SELECT COALESCE(MAX(version), 0) AS "version!" FROM event_store.events WHERE stream_id = $1"#,
        stream_id
    )
    .fetch_one(executor)
    .await?;
    Ok(version)
}
