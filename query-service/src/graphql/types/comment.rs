use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{Post, User};
use crate::error::ApiError;
use crate::graphql::pagination::{Listing, PageArgs};
use crate::graphql::{loaders, request};

/// The comment, if the caller may see it: exactly when they may see its post.
pub async fn visible_comment(
    context: &Context<'_>,
    row: CommentRow,
) -> Result<Option<Comment>, ApiError> {
    Ok(super::visible_post(context, row.post_id)
        .await?
        .map(|_| Comment(row)))
}
use crate::read_models::comments::CommentRow;

pub struct Comment(pub CommentRow);

#[Object]
impl Comment {
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// A comment is only ever shown with a post the caller may see; should
    /// the post have been hidden since, this is NOT_FOUND, never the post.
    async fn post(&self, context: &Context<'_>) -> Result<Post, ApiError> {
        super::visible_post(context, self.0.post_id)
            .await?
            .ok_or_else(|| ApiError::not_found("the comment's post"))
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
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
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
