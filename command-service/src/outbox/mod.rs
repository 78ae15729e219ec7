//! The outbox relay: publishes committed events from the event store to Kafka.

mod relay;

pub use relay::{Relay, RelaySettings};
