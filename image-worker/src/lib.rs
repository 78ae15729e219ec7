//! The image worker: a consumer of the event bus that turns each uploaded
//! image (`PostImageAdded`) into renditions in the object store, and records
//! the outcome (`PostImageProcessed` or `PostImageRejected`) through the
//! command API. It holds no state of its own: Kafka's committed offsets say
//! what is done, the object store what is made, the post what is recorded.

pub mod config;
pub mod consumer;
pub mod outcomes;
pub mod renditions;
mod startup;

pub use config::Config;
pub use startup::{Application, StartupError};
