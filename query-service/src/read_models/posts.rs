//! Post rows, as the read model defines them (`chronicle_schema::read_models::posts`).

pub use chronicle_schema::read_models::posts::{PostRow, PostStatus, by_ids, by_slug};
