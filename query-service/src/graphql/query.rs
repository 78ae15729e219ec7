use async_graphql::{Context, ID, Object};
use uuid::Uuid;

use super::types::User;
use super::{RequestContext, Services};
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
}
