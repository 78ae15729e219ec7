//! The tantivy index of posts: documents folded from the event store
//! (`document`), the index and its generations (`index`), and the live
//! indexer that follows the bus (`indexer`).

pub mod document;
pub mod index;
pub mod indexer;

pub use document::SearchPost;
pub use index::{PostIndex, SearchIndexError};
