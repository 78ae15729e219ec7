//! Appending to and reading streams of `event_store.events`.
//!
//! Optimistic concurrency is the database's `UNIQUE (stream_id, version)`: two
//! writers that decided on the same version cannot both commit; the loser gets
//! `StoreError::Conflict`. There is no global lock on the append path: an
//! append checks what its decision read and writes, in one statement.

use chronicle_schema::events::{DecodeError, StoredEventRow};
use chronicle_schema::{DomainEvent, EventMetadata, RecordedEvent, StreamType};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregates::Aggregate;

const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";
const CLAIM_CONSTRAINT: &str = "unique_claims_pkey";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the stream is at version {current}")]
    Conflict { current: i32 },
    /// A unique value was claimed by a transaction that committed meanwhile.
    #[error("a unique value was claimed concurrently")]
    ClaimRace,
    #[error("{0}")]
    Malformed(String),
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

/// A stream a decision read, at the version it read, and the lock the
/// append takes on it first (before checking the version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub stream_id: Uuid,
    pub version: i32,
    pub lock: Lock,
}

/// Locks that order decisions on one stream (see `commands::posts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    None = 0,
    Shared = 1,
    Exclusive = 2,
}

/// A value unique across streams (an email, a handle, a slug), claimed for
/// the appended stream: the first of `candidates` that is free. With `field`,
/// the chosen value is written into the first event's payload there.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Claim {
    pub kind: &'static str,
    pub candidates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

/// An idempotency key's record: who sent it, the key, the request's fingerprint.
#[derive(Clone, Copy, Debug)]
pub struct Idempotency<'a> {
    pub caller: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub ttl_seconds: u64,
}

/// Everything one append checks and writes, in one statement.
#[derive(Clone, Debug)]
pub struct Append<'a> {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    /// The version the decision was made on.
    pub base_version: i32,
    pub events: &'a [DomainEvent],
    pub metadata: &'a EventMetadata,
    pub context: &'a AppendContext,
    /// The signed-in actor's session, which must still be open.
    pub session: Option<Uuid>,
    /// The other streams the decision read (sorted by stream id).
    pub reads: &'a [Read],
    pub claims: &'a [Claim],
    pub idempotency: Option<Idempotency<'a>>,
}

/// What an append answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Appended {
    Appended {
        version: i32,
    },
    /// The idempotency key's first outcome.
    Replayed(StoredOutcome),
    /// The idempotency key was used with another request.
    KeyReused,
    SessionEnded,
    /// A stream read (or the target) moved on since the decision.
    Stale {
        stream_id: Uuid,
        version: i32,
    },
    /// These claim kinds' values are taken.
    Taken(Vec<String>),
}

/// An idempotency key's stored outcome.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredOutcome {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
}

/// Checks what the decision read and appends its events, in one statement
/// (`event_store.append`, schema/migrations/0008): one round trip, whatever
/// the command. See that function for what is checked, and in which order.
pub async fn append_decision(
    executor: impl sqlx::PgExecutor<'_>,
    append: &Append<'_>,
) -> Result<Appended, StoreError> {
    let event_ids: Vec<Uuid> = append.events.iter().map(|_| Uuid::now_v7()).collect();
    let event_types: Vec<&str> = append.events.iter().map(DomainEvent::event_type).collect();
    let schema_versions: Vec<i16> = append
        .events
        .iter()
        .map(DomainEvent::schema_version)
        .collect();
    let payloads: Vec<serde_json::Value> =
        append.events.iter().map(DomainEvent::to_payload).collect();
    let mut metadata = json!({});
    if let Some(traceparent) = &append.metadata.traceparent {
        metadata["traceparent"] = json!(traceparent);
    }
    if let Some(request_id) = &append.context.request_id {
        metadata["requestId"] = json!(request_id);
    }
    let read_streams: Vec<Uuid> = append.reads.iter().map(|read| read.stream_id).collect();
    let read_versions: Vec<i32> = append.reads.iter().map(|read| read.version).collect();
    let read_locks: Vec<i32> = append.reads.iter().map(|read| read.lock as i32).collect();
    let claims = serde_json::to_value(append.claims).expect("claims serialize");
    let idempotency = append.idempotency;
    let result = sqlx::query!(
        r#"SELECT outcome AS "outcome!", version, detail, stored
           FROM event_store.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                   $15, $16, $17, $18, $19, $20)"#,
        append.stream_id,
        append.stream_type.as_str(),
        append.base_version,
        &event_ids,
        &event_types as &[&str],
        &schema_versions,
        &payloads,
        append.metadata.command_id,
        append.metadata.correlation_id,
        append.metadata.actor_id,
        metadata,
        append.session,
        &read_streams,
        &read_versions,
        &read_locks,
        claims,
        idempotency.map(|key| key.caller),
        idempotency.map(|key| key.key),
        idempotency.map(|key| key.fingerprint),
        idempotency.map(|key| key.ttl_seconds as f64),
    )
    .fetch_one(executor)
    .await;
    let row = match result {
        Ok(row) => row,
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some(STREAM_VERSION_CONSTRAINT) =>
        {
            // Another writer appended the same version between the check and ours.
            return Err(StoreError::Conflict {
                current: append.base_version + 1,
            });
        }
        Err(sqlx::Error::Database(error)) if error.constraint() == Some(CLAIM_CONSTRAINT) => {
            return Err(StoreError::ClaimRace);
        }
        Err(error) => return Err(error.into()),
    };
    let outcome = match row.outcome.as_str() {
        "appended" => {
            for event_type in &event_types {
                metrics::counter!("chronicle_events_appended_total", "event_type" => (*event_type).to_owned())
                    .increment(1);
            }
            Appended::Appended {
                version: row.version.unwrap_or(append.base_version),
            }
        }
        "replayed" => Appended::Replayed(
            serde_json::from_value(row.stored.unwrap_or_default()).map_err(|error| {
                StoreError::Malformed(format!("stored idempotent outcome: {error}"))
            })?,
        ),
        "key_reused" => Appended::KeyReused,
        "session_ended" => Appended::SessionEnded,
        "stale" => Appended::Stale {
            stream_id: row
                .detail
                .as_deref()
                .and_then(|id| id.parse().ok())
                .unwrap_or(append.stream_id),
            version: row.version.unwrap_or_default(),
        },
        "taken" => Appended::Taken(
            row.detail
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
        other => return Err(StoreError::Malformed(format!("append outcome {other}"))),
    };
    Ok(outcome)
}

/// Appends `events` after `base_version`, checking nothing else: for
/// operators and tests that write streams directly.
pub async fn append(
    connection: &mut PgConnection,
    stream_id: Uuid,
    stream_type: StreamType,
    base_version: i32,
    events: &[DomainEvent],
    metadata: &EventMetadata,
    context: &AppendContext,
) -> Result<i32, StoreError> {
    let appended = append_decision(
        connection,
        &Append {
            stream_id,
            stream_type,
            base_version,
            events,
            metadata,
            context,
            session: None,
            reads: &[],
            claims: &[],
            idempotency: None,
        },
    )
    .await?;
    match appended {
        Appended::Appended { version } => Ok(version),
        Appended::Stale { version, .. } => Err(StoreError::Conflict { current: version }),
        other => Err(StoreError::Malformed(format!(
            "unexpected append outcome {other:?}"
        ))),
    }
}

/// Takes a stream's lock exclusively until the transaction ends, as an
/// append that asks `Lock::Exclusive` does: commands that read the stream
/// with a shared lock (every command of the user it names, as its actor)
/// append before this transaction, or after it and see what it changed.
pub async fn lock_stream(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))",
        stream_id.to_string()
    )
    .execute(connection)
    .await?;
    Ok(())
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
