use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use super::{Comment, Image, User};
use crate::error::ApiError;
use crate::graphql::pagination::{Counted, Listing, PageArgs, connection, encode_cursor, position};
use crate::graphql::services;
use crate::graphql::{loaders, request};
use crate::read_models::lists::{self, SortKey};
use crate::read_models::posts::{PostRow, PostStatus};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PostStatus")]
pub enum PostStatusValue {
    Draft,
    Published,
}

pub struct Post(pub PostRow);

#[Object]
impl Post {
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn slug(&self) -> &str {
        &self.0.slug
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    /// Markdown source.
    async fn body(&self) -> &str {
        &self.0.body
    }

    async fn excerpt(&self) -> &str {
        &self.0.excerpt
    }

    /// Drafts are visible only to their author, moderators and admins.
    async fn status(&self) -> PostStatusValue {
        match self.0.status {
            PostStatus::Published => PostStatusValue::Published,
            PostStatus::Draft => PostStatusValue::Draft,
        }
    }

    async fn tags(&self) -> &[String] {
        &self.0.tags
    }

    async fn author(&self, context: &Context<'_>) -> Result<User, ApiError> {
        let loader = request(context).loader();
        loader
            .load_one(self.0.author_id)
            .await?
            .map(User)
            .ok_or_else(|| ApiError::unavailable("the post's author is not projected yet; retry"))
    }

    async fn comment_count(&self) -> i32 {
        self.0.comment_count
    }

    /// Its images, in upload order.
    async fn images(&self) -> Vec<Image> {
        self.0.images.0.iter().cloned().map(Image).collect()
    }

    /// Top-level comments, oldest first.
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
    async fn comments(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Listing<Comment>, ApiError> {
        thread(
            context,
            Some(self.0.id),
            None,
            PageArgs::forward(first, after),
        )
        .await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    async fn published_at(&self) -> Option<DateTime<Utc>> {
        self.0.published_at
    }

    async fn version(&self) -> i32 {
        self.0.version
    }
}

/// Loads a post the viewer may see.
pub async fn visible_post(context: &Context<'_>, id: uuid::Uuid) -> Result<Option<Post>, ApiError> {
    let request = request(context);
    let row = request.loader().load_one(loaders::PostId(id)).await?;
    Ok(row.filter(|row| request.can_see(row)).map(Post))
}

/// A page of a thread: a post's top-level comments, or a comment's replies.
pub async fn thread(
    context: &Context<'_>,
    post: Option<uuid::Uuid>,
    parent: Option<uuid::Uuid>,
    args: PageArgs,
) -> Result<Listing<Comment>, ApiError> {
    const KIND: &str = "comments";
    let page = args.page(KIND)?;
    let pool = request(context).pool(services(context));
    let fetched = lists::comments(pool, post, parent, &page).await?;
    Ok(connection(
        &page,
        fetched,
        Counted::Comments { post, parent },
        |comment| {
            encode_cursor(
                KIND,
                &position(&SortKey::Time(Some(comment.created_at)), comment.id),
            )
        },
        Comment,
    ))
}
