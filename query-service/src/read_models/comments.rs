//! Comment rows, as the read model defines them (`chronicle_schema::read_models::comments`).

pub use chronicle_schema::read_models::comments::{CommentRow, by_ids};
