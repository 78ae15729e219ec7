//! How each projection is doing: written to `projector.status` every second
//! (for `projectionStatus`) and exported as lag metrics.
//!
//! Lag is measured against the event store: the events appended after the
//! highest position a projection has applied, and how old the oldest of them
//! is, counted up to `LAG_COUNT_LIMIT`. (Positions commit slightly out of
//! order, so this can briefly read a little low; it is never stuck high.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::rebuild::{Projection, Rebuilder};
use crate::search::indexer::SharedIndex;

const INTERVAL: Duration = Duration::from_secs(1);
/// Behind by more than this, a projection is catching up rather than live.
const LIVE_WITHIN: Duration = Duration::from_secs(5);
/// A failure this recent means the projection is failing now.
const FAILING_WITHIN: i64 = 15;

/// When a projection last failed (unix seconds; 0: never). Written by the
/// consumers, read here.
#[derive(Clone, Default)]
pub struct Failures {
    read_models: Arc<AtomicI64>,
    search: Arc<AtomicI64>,
}

impl Failures {
    pub fn record(&self, projection: Projection) {
        self.of(projection)
            .store(Utc::now().timestamp(), Ordering::Relaxed);
    }

    fn of(&self, projection: Projection) -> &AtomicI64 {
        match projection {
            Projection::ReadModels => &self.read_models,
            Projection::Search => &self.search,
        }
    }

    fn failing(&self, projection: Projection) -> bool {
        let last = self.of(projection).load(Ordering::Relaxed);
        last > 0 && Utc::now().timestamp() - last < FAILING_WITHIN
    }
}

pub async fn run(
    pool: PgPool,
    rebuilder: Rebuilder,
    live_index: SharedIndex,
    failures: Failures,
    projections: Vec<Projection>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let search_position = live_index.lock().await.applied_position;
        // Only what this instance projects: another role reports the rest.
        for &projection in &projections {
            let result = report(&pool, &rebuilder, &failures, projection, search_position).await;
            if let Err(error) = result {
                tracing::debug!(%error, projection = projection.name(), "could not report projection status");
            }
        }
    }
}

async fn report(
    pool: &PgPool,
    rebuilder: &Rebuilder,
    failures: &Failures,
    projection: Projection,
    search_position: i64,
) -> Result<(), sqlx::Error> {
    let applied_position = match projection {
        Projection::ReadModels => {
            sqlx::query_scalar!(
                r#"SELECT COALESCE(max(position), 0) AS "position!" FROM stream_versions"#
            )
            .fetch_one(pool)
            .await?
        }
        Projection::Search => search_position,
    };
    // Along the store's primary key, up to LAG_COUNT_LIMIT events.
    let lag = sqlx::query!(
        r#"SELECT count(*) AS "events!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at))::float8, 0) AS "seconds!"
           FROM (
             SELECT recorded_at FROM event_store.events WHERE position > $1
             ORDER BY position LIMIT $2
           ) pending"#,
        applied_position,
        chronicle_schema::events::LAG_COUNT_LIMIT
    )
    .fetch_one(pool)
    .await?;
    let state = if rebuilder.is_rebuilding(projection) {
        "REBUILDING"
    } else if failures.failing(projection) {
        "FAILED"
    } else if lag.events > 0 && lag.seconds > LIVE_WITHIN.as_secs_f64() {
        "CATCHING_UP"
    } else {
        "LIVE"
    };
    let labels = [("projection", projection.name())];
    metrics::gauge!("chronicle_projector_lag_events", &labels).set(lag.events as f64);
    metrics::gauge!("chronicle_projector_lag_seconds", &labels).set(lag.seconds);
    sqlx::query!(
        r#"INSERT INTO projector.status (projection, state, lag_events, lag_seconds, applied_position, updated_at)
           VALUES ($1, $2, $3, $4, $5, now())
           ON CONFLICT (projection) DO UPDATE
             SET state = EXCLUDED.state, lag_events = EXCLUDED.lag_events, lag_seconds = EXCLUDED.lag_seconds,
                 applied_position = EXCLUDED.applied_position, updated_at = now()"#,
        projection.name(),
        state,
        lag.events,
        lag.seconds,
        applied_position
    )
    .execute(pool)
    .await?;
    Ok(())
}
