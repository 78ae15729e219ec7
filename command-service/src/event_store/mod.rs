//! Appending to and reading streams of `event_store.events`.
//!
//! Optimistic concurrency is the database's `UNIQUE (stream_id, version)`: two
//! writers that decided on the same version cannot both commit; the loser gets
//! `StoreError::Conflict`. There is no global lock on the append path: an
//! append checks what its decision read and writes, in one statement
//! (`append_decision`), and concurrent appends share one transaction
//! (`group_commit`).

mod append;
mod group_commit;

pub use append::{
    Append, Appended, Claim, Idempotency, Lock, Read, Sealing, StoredOutcome, append_batch,
    append_decision, append_in_turn,
};
pub use group_commit::GroupCommit;

use chronicle_schema::events::{DecodeError, StoredEventRow};
use chronicle_schema::privacy::Keyring;
use chronicle_schema::{DomainEvent, EventMetadata, RecordedEvent, StreamType};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregates::Aggregate;

pub(crate) const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";

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
    let keys = Keyring::for_payloads(&mut *connection, rows.iter().map(|row| &row.payload)).await?;
    rows.into_iter()
        .map(|row| RecordedEvent::open(row, &keys).map_err(StoreError::from))
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
            events: events.to_vec(),
            metadata: metadata.clone(),
            request_id: context.request_id.clone(),
            session: None,
            reads: Vec::new(),
            claims: Vec::new(),
            idempotency: None,
            sealing: None,
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

/// Takes a stream's lock shared until the transaction ends, as a command
/// that reads the stream with `Lock::Shared` does (its actor's stream).
pub async fn lock_stream_shared(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1::text, 7))",
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
