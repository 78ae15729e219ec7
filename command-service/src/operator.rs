//! Actions an operator runs from the command line, such as making the first
//! admin: `command-service set-role --email ada@example.com --role ADMIN`.
//! They are recorded as events like any other change, with no actor.

use chronicle_schema::events::{UserEvent, UserRoleChanged};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use sqlx::PgPool;
use uuid::Uuid;

use crate::aggregates::User;
use crate::error::CommandError;
use crate::event_store::{self, AppendContext};

/// Gives the user with `email` the `role`; answers the user's id and version.
pub async fn set_role(pool: &PgPool, email: &str, role: Role) -> Result<(Uuid, i32), CommandError> {
    let email = email.trim().to_lowercase();
    let mut transaction = pool.begin().await?;
    let user_id = sqlx::query_scalar!(
        "SELECT stream_id FROM event_store.unique_claims WHERE kind = 'email' AND value = $1",
        email
    )
    .fetch_optional(&mut *transaction)
    .await?
    .ok_or_else(|| CommandError::NotFound(format!("no user has the email {email}")))?;
    let user = event_store::load::<User>(&mut transaction, user_id).await?;
    if user.state.role == role {
        return Ok((user_id, user.version));
    }
    let command_id = Uuid::now_v7();
    let version = event_store::append(
        &mut transaction,
        user_id,
        StreamType::User,
        user.version,
        &[DomainEvent::User(UserEvent::RoleChanged(UserRoleChanged {
            role,
        }))],
        &EventMetadata {
            command_id,
            correlation_id: command_id,
            causation_id: command_id,
            actor_id: None,
            traceparent: None,
        },
        &AppendContext {
            request_id: Some("operator:set-role".to_owned()),
        },
    )
    .await?;
    transaction.commit().await?;
    Ok((user_id, version))
}
