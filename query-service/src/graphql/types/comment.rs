use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{Post, User};
use crate::error::ApiError;
use crate::graphql::pagination::{Listing, PageArgs};
use crate::graphql::{loaders, request};
use crate::read_models::comments::CommentRow;

pub struct Comment(pub CommentRow);

#[Object]
impl Comment {
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn post(&self, context: &Context<'_>) -> Result<Post, ApiError> {
        request(context)
            .loader()
            .load_one(loaders::PostId(self.0.post_id))
            .await?
            .map(Post)
            .ok_or_else(|| ApiError::unavailable("the comment's post is not projected yet; retry"))
    }

    async fn author(&self, context: &Context<'_>) -> Result<User, ApiError> {
        request(context)
            .loader()
            .load_one(self.0.author_id)
            .await?
            .map(User)
            .ok_or_else(|| {
                ApiError::unavailable("the comment's author is not projected yet; retry")
            })
    }

    /// Empty once deleted.
    async fn body(&self) -> &str {
        &self.0.body
    }

    async fn deleted(&self) -> bool {
        self.0.deleted
    }

    /// Replies are one level deep.
    async fn parent(&self, context: &Context<'_>) -> Result<Option<Comment>, ApiError> {
        let Some(parent_id) = self.0.parent_id else {
            return Ok(None);
        };
        Ok(request(context)
            .loader()
            .load_one(loaders::CommentId(parent_id))
            .await?
            .map(Comment))
    }

    /// Replies to this comment, oldest first (replies have none).
    async fn replies(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Listing<Comment>, ApiError> {
        super::thread(
            context,
            None,
            Some(self.0.id),
            PageArgs::forward(first, after),
        )
        .await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.0.edited_at
    }

    async fn version(&self) -> i32 {
        self.0.version
    }
}
