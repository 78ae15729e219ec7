//! The tantivy index of posts: the index and its generations (`index`), and
//! the live indexer that follows the bus (`indexer`). Documents are derived
//! from the read models' rows (`chronicle_schema::search_schema`).

pub mod index;
pub mod indexer;

pub use index::{PostIndex, SearchIndexError};
