//! GraphQL object types, each over a read-model row.

mod comment;
mod image;
mod post;
mod user;

use async_graphql::Interface;

pub use comment::{Comment, visible_comment};
pub use image::Image;
pub use post::{Post, PostStatusValue, thread, visible_post};
pub use user::{RoleValue, User};

use crate::read_models::lists::TagRow;

/// Anything with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "async_graphql::ID"))]
pub enum Node {
    User(User),
    Post(Post),
    Comment(Comment),
}

/// A tag and how many published posts carry it.
pub struct Tag(pub TagRow);

#[async_graphql::Object]
impl Tag {
    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn post_count(&self) -> i32 {
        self.0.post_count
    }
}
