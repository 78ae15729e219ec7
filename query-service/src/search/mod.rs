//! Full-text search over the projector's tantivy index.

mod index;
mod query;

pub use index::SearchIndex;
pub use query::{MAX_QUERY_CHARS, SearchError, SearchHit, SearchRequest, SearchResults};
