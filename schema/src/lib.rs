//! The shared language of Chronicle's services.
//!
//! Everything that crosses a process boundary is defined here once: the events
//! stored in Postgres and published on Kafka (with their schema versions and
//! upcasters), the command envelopes the command API accepts, the stable error
//! codes, the consistency token, the SQL migrations and the search index schema.

pub mod bus;
pub mod commands;
pub mod consistency;
pub mod error;
pub mod events;
pub mod images;
pub mod markdown;
pub mod migrations;
pub mod privacy;
pub mod projected;
pub mod prose_tokenizer;
pub mod read_models;
pub mod role;
pub mod search_schema;
mod sql_text;

pub use commands::{Command, CommandEnvelope, CommandReply};
pub use consistency::ConsistencyToken;
pub use error::{ErrorBody, ErrorCode};
pub use events::{DomainEvent, EventMetadata, RecordedEvent, StreamType};
pub use role::Role;
