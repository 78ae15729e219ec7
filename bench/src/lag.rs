//! End-to-end lag: from a command's acknowledgement to its event being in
//! the read models, at a steady command rate (open loop: commands go out on
//! schedule whether or not earlier ones were answered).
//!
//! "In the read models" is the projector's announcement on
//! `chronicle_projected`, which Postgres delivers only after the transaction
//! that applied the event committed: what any reader sees from then on.
//!
//! The lag is split where it is spent: a consumer of its own on the topic
//! records when each event reached the bus (acknowledgement → bus is the
//! write side and relay, bus → visible is Kafka delivery and the projector).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronicle_schema::projected::{CHANNEL, Projected};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
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
    /// Acknowledgement → the event on the topic.
    pub to_bus: Percentiles,
    /// The event on the topic → visible in the read models.
    pub bus_to_visible: Percentiles,
}

/// Where the events go: the topic the bench taps to split the lag.
#[derive(Clone, Debug)]
pub struct Bus {
    pub brokers: String,
    pub topic: String,
}

#[derive(Default)]
struct Seen {
    acknowledged: HashMap<Uuid, Instant>,
    on_bus: HashMap<Uuid, Instant>,
    visible: HashMap<Uuid, Instant>,
}

pub async fn measure(
    api: &CommandApi,
    database_url: &str,
    bus: &Bus,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<LagRun> {
    measure_until(api, database_url, bus, rate, tokio::time::sleep(duration)).await
}

/// As `measure`, sending commands until `until` completes.
pub async fn measure_until(
    api: &CommandApi,
    database_url: &str,
    bus: &Bus,
    rate: f64,
    until: impl Future<Output = ()>,
) -> anyhow::Result<LagRun> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tap = tap(bus, seen.clone()).await?;
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
    tap.abort();

    let seen = seen.lock().expect("never poisoned");
    let mut lags = Latencies::default();
    let mut to_bus = Latencies::default();
    let mut bus_to_visible = Latencies::default();
    let mut never_visible = 0;
    for (stream, acknowledged) in &seen.acknowledged {
        let Some(visible) = seen.visible.get(stream) else {
            never_visible += 1;
            continue;
        };
        // Seen before the acknowledgement reached the client: no lag.
        lags.record(visible.saturating_duration_since(*acknowledged));
        if let Some(on_bus) = seen.on_bus.get(stream) {
            to_bus.record(on_bus.saturating_duration_since(*acknowledged));
            bus_to_visible.record(visible.saturating_duration_since(*on_bus));
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
        to_bus: to_bus.percentiles(),
        bus_to_visible: bus_to_visible.percentiles(),
    })
}

/// Records when each stream's first event arrives on the topic, from the
/// topic's end (a group of its own, so the services' offsets are untouched).
async fn tap(bus: &Bus, seen: Arc<Mutex<Seen>>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let consumer: StreamConsumer = chronicle_platform::kafka::consumer_config(&bus.brokers)
        .set("group.id", format!("bench-lag-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create()?;
    consumer.subscribe(&[bus.topic.as_str()])?;
    // Commands sent before the partitions are assigned would be missed.
    let assigned = Instant::now();
    while consumer.assignment()?.count() == 0 {
        anyhow::ensure!(
            assigned.elapsed() < Duration::from_secs(30),
            "the lag tap got no partitions of {}",
            bus.topic
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    Ok(tokio::spawn(async move {
        while let Ok(message) = consumer.recv().await {
            let now = Instant::now();
            let Some(stream) = message
                .key()
                .and_then(|key| std::str::from_utf8(key).ok())
                .and_then(|key| Uuid::parse_str(key).ok())
            else {
                continue;
            };
            seen.lock()
                .expect("never poisoned")
                .on_bus
                .entry(stream)
                .or_insert(now);
        }
    }))
}
