//! The tantivy index of posts: the index and its generations (`index`), the
//! live indexer that follows the bus (`indexer`), and a sidecar's rebuild
//! when the read models are replaced (`follow_swap`). Documents are derived
//! from the read models' rows (`chronicle_schema::search_schema`).

pub mod follow_swap;
pub mod index;
pub mod indexer;

pub use index::{PostIndex, SearchIndexError};
