//! Actions an operator runs from the command line, such as making the first
//! admin: `command-service set-role --email ada@example.com --role ADMIN`.
//! They are recorded as events like any other change, with no actor.

use chronicle_schema::events::{UserEvent, UserRoleChanged};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use sqlx::PgPool;
use uuid::Uuid;

use crate::aggregates::User;
use crate::error::CommandError;
use crate::event_store::{self, Append, Appended, Lock, Read};

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
    // As `ChangeRole` does: the user's lock, exclusively, so a command of
    // theirs racing this lands before it or is decided on the new role.
    let appended = event_store::append_decision(
        &mut *transaction,
        &Append {
            stream_id: user_id,
            stream_type: StreamType::User,
            base_version: user.version,
            events: vec![DomainEvent::User(UserEvent::RoleChanged(UserRoleChanged {
                role,
            }))],
            metadata: EventMetadata {
                command_id,
                correlation_id: command_id,
                causation_id: command_id,
                actor_id: None,
                traceparent: None,
            },
            request_id: Some("operator:set-role".to_owned()),
            session: None,
            reads: vec![Read {
                stream_id: user_id,
                version: user.version,
                lock: Lock::Exclusive,
            }],
            claims: Vec::new(),
            idempotency: None,
            sealing: None,
        },
    )
    .await?;
    let Appended::Appended { version } = appended else {
        return Err(CommandError::conflict(
            "the user changed meanwhile; run the command again",
        ));
    };
    transaction.commit().await?;
    Ok((user_id, version))
}
