use async_graphql::{Context, ID, Object};
use uuid::Uuid;

use super::types::{Post, User, visible_post};
use super::{RequestContext, Services, services};
use crate::error::ApiError;
use crate::read_models::users;
use chronicle_schema::ErrorCode;

#[derive(Default)]
pub struct CoreQuery;

pub(crate) fn parse_id(field: &str, id: &ID) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>()
        .map_err(|_| ApiError::bad_input(field, "is not a valid id"))
}

#[Object]
impl CoreQuery {
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

    /// How each projection is doing (moderators and admins).
    async fn projection_status(
        &self,
        context: &Context<'_>,
    ) -> Result<Vec<ProjectionStatus>, ApiError> {
        let request = context.data_unchecked::<RequestContext>();
        match request.viewer {
            None => {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "sign in to see projection status",
                ));
            }
            Some(viewer) if !viewer.role.can_moderate() => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only moderators and admins see projection status",
                ));
            }
            Some(_) => {}
        }
        let rows = crate::read_models::status::all(&services(context).pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| ProjectionStatus {
                // A projector that stopped reporting is not live, whatever it last said.
                state: if row.silent_for > SILENT_AFTER_SECONDS {
                    "FAILED".to_owned()
                } else {
                    row.state
                },
                name: row.projection,
                lag_events: i32::try_from(row.lag_events).unwrap_or(i32::MAX),
                lag_seconds: row.lag_seconds,
                dead_letters: i32::try_from(row.dead_letters).unwrap_or(i32::MAX),
            })
            .collect())
    }
}

/// The projector reports every second; this long without a report is a failure.
const SILENT_AFTER_SECONDS: f64 = 15.0;

#[derive(async_graphql::SimpleObject)]
pub struct ProjectionStatus {
    pub name: String,
    /// LIVE, CATCHING_UP, REBUILDING or FAILED.
    pub state: String,
    pub lag_events: i32,
    pub lag_seconds: f64,
    pub dead_letters: i32,
}
