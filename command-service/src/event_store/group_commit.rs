//! Group commit: appends that arrive while others are in flight share one
//! statement and one transaction (`event_store.append_batch`): one round
//! trip, one commit and one WAL flush for all of them, where each alone
//! would pay its own.
//!
//! The batch runs each append's own checks in turn, so the outcome is that
//! of running them one after another (a second append to a stream in the
//! same batch finds it moved on, and is decided again). Before any of them
//! writes, the batch takes every lock they will take, in the one global
//! order (idempotency keys, streams, then the unique values they may claim):
//! no batch waits on another in a cycle, and no stream a batch appends to
//! can gain a version from another transaction after the batch has its
//! transaction id (the relay's per-stream order depends on it). If the batch
//! fails as a whole and surely rolled back (a writer elsewhere won a race),
//! each append is retried alone.

use std::sync::Arc;

use futures::future::join_all;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{Append, Appended, OutcomeRow, StoreError, append_decision, outcome};

/// The most appends one statement carries.
const MAX_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

struct Pending {
    append: Append,
    reply: Reply,
}

/// Where commands hand their appends; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts `workers` batchers on `pool` (each has one batch in flight);
    /// they stop when the last `GroupCommit` is dropped.
    pub fn start(pool: PgPool, workers: usize) -> GroupCommit {
        let (sender, receiver) = mpsc::channel(MAX_BATCH * workers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(pool.clone(), receiver.clone()));
        }
        GroupCommit { sender }
    }

    pub async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { append, reply })
            .await
            .map_err(|_| StoreError::Malformed("the group commit has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Malformed("the group commit dropped an append".into()))?
    }
}

async fn work(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        metrics::histogram!("chronicle_append_batch_size").record(batch.len() as f64);
        commit(&pool, batch).await;
    }
}

async fn commit(pool: &PgPool, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { append, reply } = batch.pop().expect("one");
        let _ = reply.send(append_decision(pool, &append).await);
        return;
    }
    let appends: Vec<&Append> = batch.iter().map(|pending| &pending.append).collect();
    match append_batch(pool, &appends).await {
        Ok(outcomes) => {
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let _ = pending.reply.send(outcome);
            }
        }
        // Only a batch known to have rolled back may be appended again: after
        // a lost connection it may have committed, and deciding its commands
        // again could apply them twice. Their callers get the error (a client
        // retries with its idempotency key).
        Err(error) if !rolled_back(&error) => {
            tracing::warn!(%error, size = batch.len(), "a batch's outcome is unknown");
            let message = error.to_string();
            for pending in batch {
                let unknown =
                    std::io::Error::other(format!("the append's outcome is unknown: {message}"));
                let _ = pending
                    .reply
                    .send(Err(StoreError::Database(sqlx::Error::Io(unknown))));
            }
        }
        Err(error) => {
            tracing::debug!(%error, size = batch.len(), "the batch failed; appending one by one");
            metrics::counter!("chronicle_append_batch_fallbacks_total").increment(1);
            join_all(batch.into_iter().map(|pending| async move {
                let outcome = append_decision(pool, &pending.append).await;
                let _ = pending.reply.send(outcome);
            }))
            .await;
        }
    }
}

/// Whether a failed batch certainly wrote nothing: the server refused the
/// statement (its transaction rolled back), or it was never sent.
fn rolled_back(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Conflict { .. }
            | StoreError::ClaimRace
            | StoreError::Database(sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut)
    )
}

/// The appends, flattened into the columns `event_store.append_batch` takes.
#[derive(Default)]
struct Columns {
    stream: Vec<Uuid>,
    stream_type: Vec<&'static str>,
    base: Vec<i32>,
    command: Vec<Uuid>,
    correlation: Vec<Uuid>,
    actor: Vec<Option<Uuid>>,
    metadata: Vec<serde_json::Value>,
    session: Vec<Option<Uuid>>,
    claims: Vec<serde_json::Value>,
    caller: Vec<Option<String>>,
    key: Vec<Option<String>>,
    fingerprint: Vec<Option<String>>,
    ttl: Vec<Option<f64>>,
    event_command: Vec<i32>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'static str>,
    schema_version: Vec<i16>,
    payload: Vec<serde_json::Value>,
    read_command: Vec<i32>,
    read_stream: Vec<Uuid>,
    read_version: Vec<i32>,
    read_lock: Vec<i32>,
}

impl Columns {
    fn of(appends: &[&Append]) -> Columns {
        let mut columns = Columns::default();
        for (index, append) in appends.iter().enumerate() {
            let command = index as i32 + 1;
            let encoded = append.encode();
            columns.stream.push(append.stream_id);
            columns.stream_type.push(append.stream_type.as_str());
            columns.base.push(append.base_version);
            columns.command.push(append.metadata.command_id);
            columns.correlation.push(append.metadata.correlation_id);
            columns.actor.push(append.metadata.actor_id);
            columns.metadata.push(encoded.metadata);
            columns.session.push(append.session);
            columns.claims.push(encoded.claims);
            let idempotency = append.idempotency.as_ref();
            columns
                .caller
                .push(idempotency.map(|key| key.caller.clone()));
            columns.key.push(idempotency.map(|key| key.key.clone()));
            columns
                .fingerprint
                .push(idempotency.map(|key| key.fingerprint.clone()));
            columns
                .ttl
                .push(idempotency.map(|key| key.ttl_seconds as f64));
            for (((id, event_type), schema_version), payload) in encoded
                .event_ids
                .into_iter()
                .zip(encoded.event_types)
                .zip(encoded.schema_versions)
                .zip(encoded.payloads)
            {
                columns.event_command.push(command);
                columns.event_id.push(id);
                columns.event_type.push(event_type);
                columns.schema_version.push(schema_version);
                columns.payload.push(payload);
            }
            for read in &append.reads {
                columns.read_command.push(command);
                columns.read_stream.push(read.stream_id);
                columns.read_version.push(read.version);
                columns.read_lock.push(read.lock as i32);
            }
        }
        columns
    }
}

/// A batch outcome: the append's position, then `event_store.append`'s row.
type BatchRow = (
    i32,
    String,
    Option<i32>,
    Option<String>,
    Option<serde_json::Value>,
);

/// One statement for all of `appends`; an outcome for each, in order. An
/// error fails them all (nothing is written).
pub async fn append_batch(
    executor: impl sqlx::PgExecutor<'_>,
    appends: &[&Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let columns = Columns::of(appends);
    // Not `query!`: arrays with NULL elements are bound as `Vec<Option<_>>`.
    let rows: Vec<BatchRow> = sqlx::query_as(
        "SELECT command, outcome, version, detail, stored
             FROM event_store.append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                           $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(&columns.stream)
    .bind(&columns.stream_type)
    .bind(&columns.base)
    .bind(&columns.command)
    .bind(&columns.correlation)
    .bind(&columns.actor)
    .bind(&columns.metadata)
    .bind(&columns.session)
    .bind(&columns.claims)
    .bind(&columns.caller)
    .bind(&columns.key)
    .bind(&columns.fingerprint)
    .bind(&columns.ttl)
    .bind(&columns.event_command)
    .bind(&columns.event_id)
    .bind(&columns.event_type)
    .bind(&columns.schema_version)
    .bind(&columns.payload)
    .bind(&columns.read_command)
    .bind(&columns.read_stream)
    .bind(&columns.read_version)
    .bind(&columns.read_lock)
    .fetch_all(executor)
    .await?;
    if rows.len() != appends.len() {
        return Err(StoreError::Malformed(format!(
            "a batch of {} appends answered {} outcomes",
            appends.len(),
            rows.len()
        )));
    }
    let mut outcomes: Vec<Option<Result<Appended, StoreError>>> =
        appends.iter().map(|_| None).collect();
    for (command, outcome_text, version, detail, stored) in rows {
        let index = usize::try_from(command - 1)
            .ok()
            .filter(|index| *index < appends.len())
            .ok_or_else(|| StoreError::Malformed(format!("batch outcome for command {command}")))?;
        let row = OutcomeRow {
            outcome: outcome_text,
            version,
            detail,
            stored,
        };
        outcomes[index] = Some(outcome(appends[index], &row));
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            outcome
                .unwrap_or_else(|| Err(StoreError::Malformed("a batch outcome is missing".into())))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batch_known_to_have_rolled_back_is_appended_again() {
        assert!(rolled_back(&StoreError::ClaimRace));
        assert!(rolled_back(&StoreError::Conflict { current: 3 }));
        assert!(rolled_back(&StoreError::Database(
            sqlx::Error::PoolTimedOut
        )));
        // The connection went during the statement: it may have committed.
        let lost = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!rolled_back(&StoreError::Database(sqlx::Error::Io(lost))));
        // Its answer could not be read: it committed.
        assert!(!rolled_back(&StoreError::Malformed("an outcome".into())));
    }
}
