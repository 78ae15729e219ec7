//! The outbox relay: publishes committed events from the event store to Kafka.

pub mod lease;
mod relay;
pub mod status;

pub use relay::{Relay, RelaySettings};
