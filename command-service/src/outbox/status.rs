//! How far the outbox is behind, and what holds it back.
//!
//! The relay publishes only below the oldest appending transaction still
//! running (`fence`), so one long append holds publishing back. This says
//! which: "held by xid N, pid P, open 12 s", in metrics and in the `outbox`
//! row of `projectionStatus`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_secs(1);
/// Held back longer than this, the outbox is reported HELD, not LIVE.
const HELD_AFTER_SECONDS: f64 = 5.0;

pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(error) = report(&pool).await {
            tracing::debug!(%error, "could not report outbox status");
        }
    }
}

async fn report(pool: &PgPool) -> Result<(), sqlx::Error> {
    // Counted from the cursor along the relay's index, up to LAG_COUNT_LIMIT:
    // unbounded, the planner scanned the whole store every second.
    let lag = sqlx::query!(
        r#"SELECT count(*) AS "events!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at))::float8, 0) AS "seconds!"
           FROM (
             SELECT recorded_at FROM event_store.events
             WHERE (transaction_id, position) > (
               COALESCE((SELECT transaction_id FROM event_store.relay_cursor WHERE relay = 'main'), '0'::xid8),
               COALESCE((SELECT position FROM event_store.relay_cursor WHERE relay = 'main'), 0))
             ORDER BY transaction_id, position
             LIMIT $1
           ) pending"#,
        chronicle_schema::events::LAG_COUNT_LIMIT
    )
    .fetch_one(pool)
    .await?;
    // The oldest appending transaction: the one the relay waits for.
    let oldest = chronicle_schema::events::fence::oldest_holder(pool).await?;
    metrics::gauge!("chronicle_outbox_lag_events").set(lag.events as f64);
    metrics::gauge!("chronicle_outbox_lag_seconds").set(lag.seconds);
    let open_seconds = oldest.as_ref().map_or(0.0, |oldest| oldest.open_seconds);
    metrics::gauge!("chronicle_oldest_transaction_age_seconds").set(open_seconds);
    let (state, detail) = match &oldest {
        Some(oldest) if lag.events > 0 && oldest.open_seconds > HELD_AFTER_SECONDS => (
            "HELD",
            Some(format!(
                "held by xid {}, pid {}, open {:.0} s",
                oldest.xid, oldest.pid, oldest.open_seconds
            )),
        ),
        _ if lag.events > 0 && lag.seconds > HELD_AFTER_SECONDS => ("CATCHING_UP", None),
        _ => ("LIVE", None),
    };
    if let Some(detail) = &detail {
        tracing::warn!(%detail, lag_events = lag.events, "the outbox is held back by an open transaction");
    }
    sqlx::query!(
        r#"INSERT INTO projector.status (projection, state, lag_events, lag_seconds, applied_position, detail, updated_at)
           VALUES ('outbox', $1, $2, $3, 0, $4, now())
           ON CONFLICT (projection) DO UPDATE
             SET state = EXCLUDED.state, lag_events = EXCLUDED.lag_events, lag_seconds = EXCLUDED.lag_seconds,
                 detail = EXCLUDED.detail, updated_at = now()"#,
        state,
        lag.events,
        lag.seconds,
        detail
    )
    .execute(pool)
    .await?;
    Ok(())
}
