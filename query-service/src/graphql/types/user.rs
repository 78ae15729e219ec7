use async_graphql::{Context, Enum, ID, Object};
use chronicle_schema::Role;
use chrono::{DateTime, Utc};

use super::Post;
use crate::error::ApiError;
use crate::graphql::RequestContext;
use crate::graphql::pagination::{Listing, PageArgs};
use crate::graphql::query::{PostOrder, post_listing};
use crate::read_models::lists::PostScope;
use crate::read_models::users::UserRow;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Role")]
pub enum RoleValue {
    User,
    Moderator,
    Admin,
}

impl From<Role> for RoleValue {
    fn from(role: Role) -> Self {
        match role {
            Role::User => RoleValue::User,
            Role::Moderator => RoleValue::Moderator,
            Role::Admin => RoleValue::Admin,
        }
    }
}

impl From<RoleValue> for Role {
    fn from(role: RoleValue) -> Self {
        match role {
            RoleValue::User => Role::User,
            RoleValue::Moderator => Role::Moderator,
            RoleValue::Admin => Role::Admin,
        }
    }
}

pub struct User(pub UserRow);

#[Object]
impl User {
    pub async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn handle(&self) -> &str {
        &self.0.handle
    }

    async fn display_name(&self) -> &str {
        &self.0.display_name
    }

    async fn bio(&self) -> Option<&str> {
        self.0.bio.as_deref()
    }

    async fn role(&self) -> RoleValue {
        self.0.role.into()
    }

    /// Only for the user themself and admins; null otherwise.
    async fn email(&self, context: &Context<'_>) -> Option<&str> {
        let viewer = context.data::<RequestContext>().ok()?.viewer?;
        (viewer.id == self.0.id || viewer.role == Role::Admin).then_some(self.0.email.as_str())
    }

    async fn active(&self) -> bool {
        self.0.active
    }

    /// Published posts.
    async fn post_count(&self) -> i32 {
        self.0.post_count
    }

    async fn comment_count(&self) -> i32 {
        self.0.comment_count
    }

    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }

    /// The stream version, for `expectedVersion`.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// Their published posts, newest first.
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
    async fn posts(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Listing<Post>, ApiError> {
        let scope = PostScope {
            author_id: Some(self.0.id),
            ..PostScope::default()
        };
        post_listing(
            context,
            scope,
            PostOrder::PublishedAtDesc,
            PageArgs::forward(first, after),
        )
        .await
    }
}
