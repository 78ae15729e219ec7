//! What every Chronicle service runs on, written once: structured logs, health
//! probes, Prometheus metrics, HTTP middleware, graceful shutdown, and the
//! Postgres and Kafka clients configured the way the system needs them.

pub mod access_token;
pub mod database;
pub mod health;
pub mod http;
pub mod image_codec;
pub mod kafka;
pub mod metrics;
pub mod object_storage;
pub mod retry;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;
