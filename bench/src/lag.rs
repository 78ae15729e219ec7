//! End-to-end lag: from a command's acknowledgement to its event being in
//! the read models, at a steady command rate (open loop: commands go out on
//! schedule whether or not earlier ones were answered).
//!
//! "In the read models" is the projector's announcement on
//! `chronicle_projected`, which Postgres delivers only after the transaction
//! that applied the event committed: what any reader sees from then on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronicle_schema::projected::{CHANNEL, Projected};
use serde::Serialize;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::append::CommandApi;
use crate::stats::{Latencies, Percentiles};

#[derive(Clone, Debug, Serialize)]
pub struct LagRun {
    pub target_commands_per_second: f64,
    pub achieved_commands_per_second: f64,
    pub seconds: f64,
    pub acknowledged: u64,
    pub errors: u64,
    /// Acknowledged but never seen in the read models (must be 0).
    pub never_visible: u64,
    pub lag: Percentiles,
}

#[derive(Default)]
struct Seen {
    acknowledged: HashMap<Uuid, Instant>,
    visible: HashMap<Uuid, Instant>,
}

pub async fn measure(
    api: &CommandApi,
    database_url: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LagRun> {
    measure_until(api, database_url, rate, tokio::time::sleep(duration)).await
}

/// As `measure`, sending commands until `until` completes.
pub async fn measure_until(
    api: &CommandApi,
    database_url: &str,
    rate: f64,
    until: impl Future<Output = ()>,
) -> anyhow::Result<LagRun> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(notification) = listener.recv().await {
                let now = Instant::now();
                let Ok(projected) = serde_json::from_str::<Projected>(notification.payload())
                else {
                    continue;
                };
                if projected.projection != "read_models" {
                    continue;
                }
                let mut seen = seen.lock().expect("never poisoned");
                for event in projected.events {
                    seen.visible.entry(event.stream_id).or_insert(now);
                }
            }
        })
    };

    let started = Instant::now();
    let mut schedule = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = Vec::new();
    let mut client = 0;
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => break,
            _ = schedule.tick() => {}
        }
        let api = api.clone();
        let seen = seen.clone();
        client += 1;
        in_flight.push(tokio::spawn(async move {
            let ack = api.create_post(client).await;
            let now = Instant::now();
            match ack {
                Ok(ack) => {
                    seen.lock()
                        .expect("never poisoned")
                        .acknowledged
                        .insert(ack.stream_id, now);
                    true
                }
                Err(error) => {
                    eprintln!("  command failed: {error}");
                    false
                }
            }
        }));
    }
    let mut errors = 0;
    for task in in_flight {
        if !task.await.unwrap_or(false) {
            errors += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    // Let the last ones arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = {
            let seen = seen.lock().expect("never poisoned");
            seen.acknowledged
                .keys()
                .filter(|stream| !seen.visible.contains_key(stream))
                .count()
        };
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();

    let seen = seen.lock().expect("never poisoned");
    let mut lags = Latencies::default();
    let mut never_visible = 0;
    for (stream, acknowledged) in &seen.acknowledged {
        match seen.visible.get(stream) {
            // Seen before the acknowledgement reached the client: no lag.
            Some(visible) => lags.record(visible.saturating_duration_since(*acknowledged)),
            None => never_visible += 1,
        }
    }
    Ok(LagRun {
        target_commands_per_second: rate,
        achieved_commands_per_second: seen.acknowledged.len() as f64 / seconds,
        seconds,
        acknowledged: seen.acknowledged.len() as u64,
        errors,
        never_visible,
        lag: lags.percentiles(),
    })
}
