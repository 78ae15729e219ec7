//! Who is calling: the command-service verifies the caller's access token on
//! every command itself and never trusts the forwarder's word for it.

pub mod login_limit;
pub mod password;
pub mod refresh_tokens;

use chronicle_platform::access_token::{AccessTokens, TokenError};
use sqlx::PgConnection;

use crate::aggregates::{Actor, User};
use crate::error::CommandError;
use crate::event_store;

/// The actor behind a bearer token, as the event store knows them now. No
/// token is an anonymous caller; a bad one is an error, never anonymous.
pub async fn resolve_actor(
    connection: &mut PgConnection,
    tokens: &AccessTokens,
    bearer: Option<&str>,
) -> Result<Option<Actor>, CommandError> {
    let Some(token) = bearer else {
        return Ok(None);
    };
    let claims = tokens.verify(token).map_err(|error| match error {
        TokenError::Expired => CommandError::Unauthenticated("the access token has expired"),
        TokenError::Invalid => CommandError::Unauthenticated("the access token is invalid"),
    })?;
    let Some(session_id) = claims.sid else {
        return Err(CommandError::Unauthenticated(
            "the access token has no session; sign in again",
        ));
    };
    let session_open = sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM auth.sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
           ) AS "open!""#,
        session_id,
        claims.sub
    )
    .fetch_one(&mut *connection)
    .await?;
    if !session_open {
        return Err(CommandError::Unauthenticated(
            "the session has ended (signed out, or the account was secured); sign in again",
        ));
    }
    let user = event_store::load::<User>(connection, claims.sub)
        .await?
        .state;
    if !user.registered {
        return Err(CommandError::Unauthenticated(
            "the access token's user does not exist",
        ));
    }
    if !user.active {
        return Err(CommandError::Unauthenticated("this account is deactivated"));
    }
    Ok(Some(Actor {
        id: user.id,
        role: user.role,
        handle: user.handle,
    }))
}

/// The actor, or UNAUTHENTICATED for commands that need one.
pub fn require(actor: Option<Actor>) -> Result<Actor, CommandError> {
    actor.ok_or(CommandError::Unauthenticated("sign in to do this"))
}
