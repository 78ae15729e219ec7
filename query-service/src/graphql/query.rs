use async_graphql::{Context, ID, Object};
use uuid::Uuid;

use super::types::{Post, User, visible_post};
use super::{RequestContext, Services, services};
use crate::error::ApiError;
use crate::read_models::users;

pub struct Query;

pub(crate) fn parse_id(field: &str, id: &ID) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>()
        .map_err(|_| ApiError::bad_input(field, "is not a valid id"))
}

#[Object]
impl Query {
    /// The signed-in user, or null.
    async fn viewer(&self, context: &Context<'_>) -> Result<Option<User>, ApiError> {
        let services = context.data_unchecked::<Services>();
        let Some(viewer) = context.data_unchecked::<RequestContext>().viewer else {
            return Ok(None);
        };
        Ok(users::by_id(&services.pool, viewer.id).await?.map(User))
    }

    /// A user by id or handle (exactly one of them).
    async fn user(
        &self,
        context: &Context<'_>,
        id: Option<ID>,
        handle: Option<String>,
    ) -> Result<Option<User>, ApiError> {
        let services = context.data_unchecked::<Services>();
        let row = match (id, handle) {
            (Some(id), None) => users::by_id(&services.pool, parse_id("id", &id)?).await?,
            (None, Some(handle)) => users::by_handle(&services.pool, &handle).await?,
            _ => {
                return Err(ApiError::bad_input(
                    "id",
                    "give exactly one of id and handle",
                ));
            }
        };
        Ok(row.map(User))
    }

    /// A post by id or slug (exactly one of them). Drafts only for their
    /// author, moderators and admins.
    async fn post(
        &self,
        context: &Context<'_>,
        id: Option<ID>,
        slug: Option<String>,
    ) -> Result<Option<Post>, ApiError> {
        match (id, slug) {
            (Some(id), None) => visible_post(context, parse_id("id", &id)?).await,
            (None, Some(slug)) => {
                let Some(row) =
                    crate::read_models::posts::by_slug(&services(context).pool, &slug).await?
                else {
                    return Ok(None);
                };
                visible_post(context, row.id).await
            }
            _ => Err(ApiError::bad_input("id", "give exactly one of id and slug")),
        }
    }
}
