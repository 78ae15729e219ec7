//! GraphQL object types, each over a read-model row.

mod comment;
mod post;
mod user;

pub use comment::Comment;
pub use post::{Post, visible_post};
pub use user::{RoleValue, User};
