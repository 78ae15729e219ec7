//! Applying a batch of events to the read models in one transaction.
//!
//! Per stream, the last applied version is kept in `stream_versions` and
//! written in the same transaction as the read-model change, so a batch is
//! applied entirely or not at all, and a redelivered event is skipped. A
//! version past a hole is never applied on its own: the missing versions are
//! read from the event store (the source of truth) and applied first.

use std::collections::HashMap;

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::{DecodeError, StoredEventRow};
use chronicle_schema::projected::{AppliedEvent, CHANNEL, Projected};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::dead_letters::{self, KafkaPosition};
use crate::projections::{self, HandlerError};
use crate::read_models::{PROJECTION, SWAP_LOCK_KEY};

/// One message of a batch, decoded or not.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing would allocate for each"
)]
pub enum Incoming {
    Event(RecordedEvent),
    Undecodable { at: KafkaPosition, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "stream {stream_id} has a hole: version {version} arrived after {applied}, \
         and the event store does not have the versions between"
    )]
    Hole {
        stream_id: Uuid,
        applied: i32,
        version: i32,
    },
    #[error("stored event: {0}")]
    Decode(#[from] DecodeError),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub skipped: usize,
    /// Of `applied`, versions read from the event store to fill a hole.
    pub filled: usize,
    pub dead_lettered: usize,
}

enum Failure {
    Poison {
        event: Box<RecordedEvent>,
        error: HandlerError,
    },
    Other(ApplyError),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Other(error.into())
    }
}

#[derive(Clone, Copy)]
struct Applied {
    version: i32,
    position: i64,
}

#[derive(Default)]
struct BatchState {
    versions: HashMap<Uuid, Applied>,
    announced: Vec<AppliedEvent>,
    outcome: Outcome,
}

/// Applies `batch` in one transaction. A poison event does not fail the
/// batch: it is set aside as a dead letter and the others are applied.
pub async fn apply_batch(pool: &PgPool, batch: &[Incoming]) -> Result<Outcome, ApplyError> {
    match attempt(pool, batch, false).await {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Other(error)) => Err(error),
        // Start over with each event in a savepoint, to set the poison aside.
        Err(Failure::Poison { .. }) => match attempt(pool, batch, true).await {
            Ok(outcome) => Ok(outcome),
            Err(Failure::Other(error)) => Err(error),
            Err(Failure::Poison { error, .. }) => {
                unreachable!("isolated attempts set poison aside: {error}")
            }
        },
    }
}

async fn attempt(pool: &PgPool, batch: &[Incoming], isolate: bool) -> Result<Outcome, Failure> {
    let mut transaction = pool.begin().await?;
    // Shared with other batches; a rebuild's swap takes it exclusively, so no
    // batch straddles the moment the read models are replaced.
    sqlx::query!("SELECT pg_advisory_xact_lock_shared($1)", SWAP_LOCK_KEY)
        .execute(&mut *transaction)
        .await?;
    let outcome = apply_within(&mut transaction, batch, isolate).await?;
    transaction.commit().await?;
    record_metrics(&outcome);
    Ok(outcome)
}

/// Applies events inside the caller's transaction, each in a savepoint so a
/// poison one is set aside: for a rebuild's catch-up, which must not fail.
pub async fn catch_up(
    connection: &mut PgConnection,
    batch: &[Incoming],
) -> Result<Outcome, ApplyError> {
    match apply_within(connection, batch, true).await {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Other(error)) => Err(error),
        Err(Failure::Poison { error, .. }) => {
            unreachable!("isolated attempts set poison aside: {error}")
        }
    }
}

async fn apply_within(
    connection: &mut PgConnection,
    batch: &[Incoming],
    isolate: bool,
) -> Result<Outcome, Failure> {
    let mut state = BatchState {
        versions: load_versions(&mut *connection, batch).await?,
        ..BatchState::default()
    };
    for incoming in batch {
        match incoming {
            Incoming::Undecodable { at, error } => {
                dead_letters::record_undecodable(&mut *connection, PROJECTION, *at, error).await?;
                state.outcome.dead_lettered += 1;
            }
            Incoming::Event(event) if !isolate => {
                apply_event(&mut *connection, &mut state, event).await?
            }
            Incoming::Event(event) => {
                let before = state.versions.get(&event.stream_id).copied();
                let announced = state.announced.len();
                let mut savepoint = sqlx::Connection::begin(&mut *connection).await?;
                match apply_event(&mut savepoint, &mut state, event).await {
                    Ok(()) => savepoint.commit().await?,
                    Err(Failure::Poison {
                        event: poison,
                        error,
                    }) => {
                        savepoint.rollback().await?;
                        restore(&mut state, event.stream_id, before, announced);
                        dead_letters::record_event(
                            &mut *connection,
                            PROJECTION,
                            &poison,
                            &error.to_string(),
                        )
                        .await?;
                        state.outcome.dead_lettered += 1;
                        // The stream moves on past the poison; redrive re-applies it later.
                        let handled = Applied {
                            version: poison.version,
                            position: poison.position,
                        };
                        let entry = state.versions.entry(poison.stream_id).or_insert(handled);
                        if entry.version < handled.version {
                            *entry = handled;
                        }
                    }
                    Err(other) => return Err(other),
                }
            }
        }
    }
    save_versions(&mut *connection, &state.versions).await?;
    announce(&mut *connection, std::mem::take(&mut state.announced)).await?;
    Ok(state.outcome)
}

fn restore(state: &mut BatchState, stream_id: Uuid, before: Option<Applied>, announced: usize) {
    match before {
        Some(applied) => state.versions.insert(stream_id, applied),
        None => state.versions.remove(&stream_id),
    };
    state.announced.truncate(announced);
}

async fn apply_event(
    connection: &mut PgConnection,
    state: &mut BatchState,
    event: &RecordedEvent,
) -> Result<(), Failure> {
    let applied = state
        .versions
        .get(&event.stream_id)
        .map_or(0, |applied| applied.version);
    if event.version <= applied {
        state.outcome.skipped += 1;
        return Ok(());
    }
    if event.version > applied + 1 {
        let missing = load_between(connection, event.stream_id, applied, event.version)
            .await
            .map_err(Failure::Other)?;
        tracing::warn!(stream_id = %event.stream_id, applied, version = event.version,
            filled = missing.len(), "filling a hole in a stream from the event store");
        metrics::counter!("chronicle_projector_holes_filled_total").increment(1);
        for missing_event in &missing {
            apply_one(connection, state, missing_event).await?;
            state.outcome.filled += 1;
        }
    }
    apply_one(connection, state, event).await
}

async fn apply_one(
    connection: &mut PgConnection,
    state: &mut BatchState,
    event: &RecordedEvent,
) -> Result<(), Failure> {
    // Continues the event's trace: request, command, relay, projection.
    let span = tracing::info_span!("projector.apply", event_type = event.event.event_type(), stream_id = %event.stream_id, version = event.version);
    chronicle_platform::trace_context::continue_from(&span, event.metadata.traceparent.as_deref());
    if let Err(error) = projections::apply(connection, event).instrument(span).await {
        return Err(if error.is_poison() {
            Failure::Poison {
                event: Box::new(event.clone()),
                error,
            }
        } else {
            match error {
                HandlerError::Database(error) => Failure::from(error),
                HandlerError::Inconsistent(_) => unreachable!("inconsistency is poison"),
            }
        });
    }
    state.versions.insert(
        event.stream_id,
        Applied {
            version: event.version,
            position: event.position,
        },
    );
    state.announced.push(AppliedEvent {
        event_type: event.event.event_type().to_owned(),
        stream_id: event.stream_id,
        version: event.version,
    });
    state.outcome.applied += 1;
    Ok(())
}

/// The applied versions of the batch's streams, locked for this transaction
/// (another instance mid-rebalance waits instead of interleaving).
async fn load_versions(
    connection: &mut PgConnection,
    batch: &[Incoming],
) -> Result<HashMap<Uuid, Applied>, sqlx::Error> {
    let mut stream_ids: Vec<Uuid> = batch
        .iter()
        .filter_map(|incoming| match incoming {
            Incoming::Event(event) => Some(event.stream_id),
            Incoming::Undecodable { .. } => None,
        })
        .collect();
    stream_ids.sort_unstable();
    stream_ids.dedup();
    let rows = sqlx::query!(
        r#"SELECT stream_id, version, position FROM stream_versions
           WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE"#,
        &stream_ids
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.stream_id,
                Applied {
                    version: row.version,
                    position: row.position,
                },
            )
        })
        .collect())
}

async fn save_versions(
    connection: &mut PgConnection,
    versions: &HashMap<Uuid, Applied>,
) -> Result<(), sqlx::Error> {
    let (mut ids, mut numbers, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for (stream_id, applied) in versions {
        ids.push(*stream_id);
        numbers.push(applied.version);
        positions.push(applied.position);
    }
    sqlx::query!(
        r#"INSERT INTO stream_versions (stream_id, version, position)
           SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int8[])
           ON CONFLICT (stream_id) DO UPDATE
             SET version = EXCLUDED.version, position = EXCLUDED.position, applied_at = now()
             WHERE stream_versions.version < EXCLUDED.version"#,
        &ids,
        &numbers,
        &positions
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The stream's events strictly between two versions, from the event store.
async fn load_between(
    connection: &mut PgConnection,
    stream_id: Uuid,
    after: i32,
    before: i32,
) -> Result<Vec<RecordedEvent>, ApplyError> {
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                  schema_version, payload, command_id, correlation_id, causation_id,
                  actor_id, metadata, recorded_at
           FROM event_store.events
           WHERE stream_id = $1 AND version > $2 AND version < $3
           ORDER BY version"#,
        stream_id,
        after,
        before
    )
    .fetch_all(&mut *connection)
    .await?;
    if rows.len() != (before - after - 1) as usize {
        return Err(ApplyError::Hole {
            stream_id,
            applied: after,
            version: before,
        });
    }
    rows.into_iter()
        .map(|row| RecordedEvent::try_from(row).map_err(ApplyError::from))
        .collect()
}

/// Tells listeners (query-service) what this transaction applied; Postgres
/// delivers the notifications only if and when it commits.
async fn announce(
    connection: &mut PgConnection,
    events: Vec<AppliedEvent>,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let projected = Projected {
        projection: PROJECTION.to_owned(),
        events,
    };
    for payload in projected.into_payloads() {
        sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, payload)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

fn record_metrics(outcome: &Outcome) {
    let projection = PROJECTION;
    metrics::counter!("chronicle_projector_events_applied_total", "projection" => projection)
        .increment(outcome.applied as u64);
    metrics::counter!("chronicle_projector_events_skipped_total", "projection" => projection)
        .increment(outcome.skipped as u64);
}
