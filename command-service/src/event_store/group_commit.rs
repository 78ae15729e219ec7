//! Group commit: appends that arrive while others are in flight share one
//! statement and one transaction (`event_store.append_set`): one round
//! trip, one commit and one WAL flush for all of them, where each alone
//! would pay its own.
//!
//! The outcome is that of running them one after another: appends that
//! cannot see each other's writes are checked and written as one set, and a
//! batch where one may is run in turn (a second append to a stream in the
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

use super::{Append, Appended, StoreError, append_batch, append_decision};

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
