//! Full-text search over the projector's tantivy index.

mod index;
mod query;
mod statistics;
pub mod syntax;

pub use index::SearchIndex;
pub use query::{MAX_SEARCH_OFFSET, SearchError, SearchHit, SearchRequest, SearchResults};
pub use syntax::MAX_QUERY_CHARS;
