//! Rebuilding projections beside the live ones, with no downtime.
//!
//! Read models: from the event store (not from Kafka, whose retention is
//! finite), streamed into a `read_next` schema with the same folds as the live
//! path, verified against the live schema, and swapped in (`tables`, `load`,
//! `verify`). Queries keep answering throughout: at the swap they wait a
//! moment and then read the new tables.
//!
//! Search: a new index generation is built from the live read models' rows
//! (the documents are derived from them) beside the live one, and swapped in,
//! in this process, while the live indexer is paused (`search`).

mod copy;
pub mod digest;
mod load;
mod niceness;
mod search;
mod tables;
mod verify;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chronicle_schema::search_schema::IndexLayout;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::search::indexer::SharedIndex;
pub(crate) use niceness::in_the_background;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Projection {
    ReadModels,
    Search,
}

impl Projection {
    pub fn name(self) -> &'static str {
        match self {
            Projection::ReadModels => crate::read_models::PROJECTION,
            Projection::Search => crate::search::indexer::PROJECTION,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RebuildOptions {
    /// Make the rebuilt projection live; without, it is left beside the live
    /// one (`read_next`, or an unused index generation) for inspection.
    pub swap: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub projection: String,
    /// REBUILDING, DONE or FAILED.
    pub state: String,
    pub phase: String,
    pub processed: u64,
    pub total: u64,
    pub events_per_second: f64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Each phase so far and how long it took (the last one until now, or
    /// until the rebuild ended): where a rebuild's time goes.
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

impl PhaseTime {
    /// A phase that begins now (`Tracker::update` keeps its time).
    fn begun(phase: &str) -> PhaseTime {
        PhaseTime {
            phase: phase.to_owned(),
            seconds: 0.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event: {0}")]
    Decode(#[from] chronicle_schema::events::DecodeError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    Index(#[from] crate::search::SearchIndexError),
    #[error(transparent)]
    Indexer(#[from] crate::search::indexer::IndexerError),
    #[error("the rebuilt read models differ from the live ones: {0}")]
    Mismatch(String),
    #[error("rebuild task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    #[error("the rebuild's fold stopped")]
    FoldStopped,
    #[error("Postgres exported a snapshot id of an unknown form: {0:?}")]
    Snapshot(String),
    #[error("the rebuild panicked: {0}")]
    Panicked(String),
}

#[derive(Clone)]
pub struct Rebuilder {
    pub(crate) pool: PgPool,
    pub(crate) database_url: String,
    pub layout: IndexLayout,
    pub live_index: SharedIndex,
    progress: Arc<Mutex<BTreeMap<&'static str, Progress>>>,
}

impl Rebuilder {
    pub fn new(
        pool: PgPool,
        database_url: String,
        layout: IndexLayout,
        live_index: SharedIndex,
    ) -> Rebuilder {
        Rebuilder {
            pool,
            database_url,
            layout,
            live_index,
            progress: Arc::default(),
        }
    }

    pub fn progress(&self) -> Vec<Progress> {
        self.progress
            .lock()
            .expect("progress is never poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn is_rebuilding(&self, projection: Projection) -> bool {
        self.progress
            .lock()
            .expect("progress is never poisoned")
            .get(projection.name())
            .is_some_and(|progress| progress.state == "REBUILDING")
    }

    /// Starts a rebuild in the background; its progress is in `progress()`.
    pub fn start(
        &self,
        projection: Projection,
        options: RebuildOptions,
    ) -> Result<(), RebuildError> {
        self.begin(projection)?;
        let rebuilder = self.clone();
        tokio::spawn(async move {
            let _ = rebuilder.execute(projection, options).await;
        });
        Ok(())
    }

    /// Rebuilds now and waits for the outcome.
    pub async fn run(
        &self,
        projection: Projection,
        options: RebuildOptions,
    ) -> Result<Progress, RebuildError> {
        self.begin(projection)?;
        self.execute(projection, options).await
    }

    fn begin(&self, projection: Projection) -> Result<(), RebuildError> {
        let mut progress = self.progress.lock().expect("progress is never poisoned");
        if progress
            .get(projection.name())
            .is_some_and(|progress| progress.state == "REBUILDING")
        {
            return Err(RebuildError::AlreadyRunning(projection.name()));
        }
        progress.insert(
            projection.name(),
            Progress {
                projection: projection.name().to_owned(),
                state: "REBUILDING".to_owned(),
                phase: "starting".to_owned(),
                phases: vec![PhaseTime::begun("starting")],
                started_at: Some(Utc::now()),
                ..Progress::default()
            },
        );
        Ok(())
    }

    async fn execute(
        &self,
        projection: Projection,
        options: RebuildOptions,
    ) -> Result<Progress, RebuildError> {
        let tracker = Tracker {
            progress: self.progress.clone(),
            projection: projection.name(),
            started: Instant::now(),
        };
        tracing::info!(
            projection = projection.name(),
            swap = options.swap,
            "rebuild started"
        );
        let result = unwound(async {
            match projection {
                Projection::ReadModels => tables::rebuild(self, &tracker, options).await,
                Projection::Search => search::rebuild(self, &tracker, options).await,
            }
        })
        .await;
        // The last phase's time, to the end.
        tracker.update(|_| {});
        if result.is_err() && projection == Projection::ReadModels {
            // A half-built copy would keep rows (and the text of people
            // erased since) that nothing updates any more.
            if let Err(error) = tables::drop_next(&self.pool).await {
                tracing::warn!(%error, "could not drop the failed rebuild's tables");
            }
        }
        let mut all = self.progress.lock().expect("progress is never poisoned");
        let progress = all.entry(projection.name()).or_default();
        progress.finished_at = Some(Utc::now());
        match result {
            Ok(()) => {
                progress.state = "DONE".to_owned();
                progress.phase = "done".to_owned();
                tracing::info!(
                    projection = projection.name(),
                    events = progress.processed,
                    events_per_second = progress.events_per_second,
                    "rebuild finished"
                );
                Ok(progress.clone())
            }
            Err(error) => {
                progress.state = "FAILED".to_owned();
                progress.error = Some(error.to_string());
                tracing::error!(projection = projection.name(), %error, "rebuild failed; the live projection is unchanged");
                Err(error)
            }
        }
    }
}

/// The rebuild's outcome, a panic in it included: one that unwound out of a
/// detached rebuild would leave its progress REBUILDING, and every later
/// rebuild refused as already running, until the projector restarts.
async fn unwound(
    rebuild: impl std::future::Future<Output = Result<(), RebuildError>>,
) -> Result<(), RebuildError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(rebuild).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(RebuildError::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "with a value that is not text".to_owned()),
        )),
    }
}

/// Reports one rebuild's progress.
#[derive(Clone)]
pub(crate) struct Tracker {
    progress: Arc<Mutex<BTreeMap<&'static str, Progress>>>,
    projection: &'static str,
    started: Instant,
}

impl Tracker {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let mut all = self.progress.lock().expect("progress is never poisoned");
        if let Some(progress) = all.get_mut(self.projection) {
            change(progress);
            let seconds = self.started.elapsed().as_secs_f64();
            if seconds > 0.0 {
                progress.events_per_second = progress.processed as f64 / seconds;
            }
            // The phase under way began where the ones before it ended.
            if let Some((current, before)) = progress.phases.split_last_mut() {
                let ended: f64 = before.iter().map(|phase| phase.seconds).sum();
                current.seconds = (seconds - ended).max(0.0);
            }
        }
    }

    pub(crate) fn phase(&self, phase: &str) {
        tracing::info!(projection = self.projection, phase, "rebuild phase");
        // Two steps: the first ends the phase under way at its true time,
        // the second starts the next one from there.
        self.update(|_| {});
        self.update(|progress| {
            progress.phase = phase.to_owned();
            progress.phases.push(PhaseTime::begun(phase));
        });
    }

    pub(crate) fn total(&self, total: u64) {
        self.update(|progress| progress.total = total);
    }

    pub(crate) fn processed(&self, more: u64) {
        self.update(|progress| {
            progress.processed += more;
            progress.total = progress.total.max(progress.processed);
        });
    }
}

/// How many events lie below the horizon (for progress).
pub(crate) async fn count_below(pool: &PgPool, horizon: &str) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE transaction_id < $1::text::xid8",
    )
    .bind(horizon)
    .fetch_one(pool)
    .await?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(rebuild: impl std::future::Future<Output = Result<(), RebuildError>>) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        match runtime.block_on(unwound(rebuild)) {
            Err(RebuildError::Panicked(message)) => message,
            other => panic!("expected a panic, got {other:?}"),
        }
    }

    #[test]
    fn a_rebuild_that_panics_fails_with_the_panics_message() {
        let bug = "a bug";
        assert_eq!(
            settle(async move {
                if !bug.is_empty() {
                    panic!("the fold met {bug}");
                }
                Ok(())
            }),
            "the fold met a bug"
        );
        assert_eq!(
            settle(async {
                if bug.is_empty() {
                    return Ok(());
                }
                panic!("a static message")
            }),
            "a static message"
        );
    }

    #[test]
    fn each_phase_is_timed_from_where_the_one_before_it_ended() {
        let rebuilder_progress = Arc::new(Mutex::new(BTreeMap::new()));
        rebuilder_progress.lock().unwrap().insert(
            "read_models",
            Progress {
                phases: vec![PhaseTime::begun("starting")],
                ..Progress::default()
            },
        );
        let tracker = Tracker {
            progress: rebuilder_progress.clone(),
            projection: "read_models",
            started: Instant::now(),
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        tracker.phase("loading");
        std::thread::sleep(std::time::Duration::from_millis(30));
        tracker.processed(10);
        let progress = rebuilder_progress.lock().unwrap()["read_models"].clone();
        let names: Vec<&str> = progress.phases.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(names, ["starting", "loading"]);
        assert!(progress.phases[0].seconds >= 0.02, "{:?}", progress.phases);
        assert!(progress.phases[1].seconds >= 0.03, "{:?}", progress.phases);
        let total: f64 = progress.phases.iter().map(|p| p.seconds).sum();
        assert!(total <= tracker.started.elapsed().as_secs_f64());
    }

    #[test]
    fn a_rebuild_that_returns_keeps_its_outcome() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        assert!(runtime.block_on(unwound(async { Ok(()) })).is_ok());
        assert!(matches!(
            runtime.block_on(unwound(async { Err(RebuildError::FoldStopped) })),
            Err(RebuildError::FoldStopped)
        ));
    }
}
