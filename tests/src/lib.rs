//! Test helpers: `TestApp::spawn()` starts command-service, projector and
//! query-service in this process, on random ports, against a fresh database
//! (cloned from a migrated template) and a fresh Kafka topic. Postgres and
//! Kafka are real: `./dev test` starts them (or uses DATABASE_URL / KAFKA_BROKERS).

mod app;
pub mod broker;
mod database;
mod graphql;
pub mod history;
pub mod images;
mod kafka;
mod process;
pub mod search;
pub mod workload;

pub use app::{ServiceHandle, TestApp, TestOptions, wait_ready};
pub use database::{TestDatabase, begin_outage, end_outage};
pub use graphql::{GraphqlResponse, RegisteredUser, Session};
pub use kafka::{
    BusMessage, RawMessage, TestTopic, brokers, publish, publish_row, read_raw_topic, read_topic,
};
pub use process::ServiceProcess;

/// A random test's seed: `CHRONICLE_SEED` when set (to rerun a failure),
/// else a new one.
pub fn random_seed() -> u64 {
    std::env::var("CHRONICLE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Polls `condition` until it holds or `timeout` passes (no fixed sleeps).
pub async fn eventually<F, Fut>(timeout: std::time::Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A port free right now (the OS's pick), for a process a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A workspace binary (`cargo test --workspace` builds them beside the tests).
pub fn binary(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(name)
}

/// Waits, if need be, until a new minute has begun: per-minute counts
/// (rate limits) must not roll over in the middle of a test.
pub async fn clear_of_a_minutes_end() {
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
}
