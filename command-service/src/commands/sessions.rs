//! Signing in and out: login, refresh-token rotation, logout. These change no
//! aggregate, so they append no events; they answer with the user's stream.

use chronicle_schema::commands::{Secret, Session};
use chronicle_schema::{CommandReply, ConsistencyToken, StreamType};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::Execution;
use crate::aggregates::{Aggregate, User};
use crate::auth::login_limit;
use crate::auth::password;
use crate::auth::refresh_tokens::{self, Presented};
use crate::error::CommandError;
use crate::event_store::{self, Loaded};

const WRONG_CREDENTIALS: &str = "the email or password is wrong";

/// A hash to verify against when the email is unknown, so that an unknown
/// email takes as long to refuse as a wrong password (no account probing).
static DUMMY_HASH: OnceCell<String> = OnceCell::const_new();

async fn dummy_hash() -> Result<&'static str, CommandError> {
    DUMMY_HASH
        .get_or_try_init(|| password::hash("not a password anyone has"))
        .await
        .map(String::as_str)
}

pub(super) async fn login(
    execution: &Execution<'_>,
    email: &str,
    password: &str,
) -> Result<CommandReply, CommandError> {
    let services = execution.services;
    let email = email.trim().to_lowercase();
    let client = execution.request.client.as_str();
    let account = login_limit::account(&services.fingerprint_key, &email);
    let attempt =
        login_limit::admit(&services.pool, &services.login_limits, &account, client).await?;

    let user_id = sqlx::query_scalar!(
        "SELECT stream_id FROM event_store.unique_claims WHERE kind = 'email' AND value = $1",
        email
    )
    .fetch_optional(&services.pool)
    .await?;
    let stored_hash = match user_id {
        Some(user_id) => {
            sqlx::query_scalar!(
                "SELECT password_hash FROM auth.credentials WHERE user_id = $1",
                user_id
            )
            .fetch_optional(&services.pool)
            .await?
        }
        None => None,
    };
    let verified = match (&user_id, &stored_hash) {
        (Some(user_id), Some(hash)) => password::verify(hash, password).await?.then_some(*user_id),
        _ => {
            password::verify(dummy_hash().await?, password).await?;
            None
        }
    };
    let Some(user_id) = verified else {
        login_limit::failed(attempt);
        return Err(CommandError::Unauthenticated(WRONG_CREDENTIALS));
    };
    let user = active_user(execution, user_id).await?;
    login_limit::succeeded(&services.pool, attempt, &account).await?;
    start_session(execution, &user, Uuid::now_v7()).await
}

pub(super) async fn refresh(
    execution: &Execution<'_>,
    token: &str,
) -> Result<CommandReply, CommandError> {
    match refresh_tokens::spend(&execution.services.pool, token).await? {
        Presented::Valid { user_id, family_id } => {
            let user = active_user(execution, user_id).await?;
            start_session(execution, &user, family_id).await
        }
        Presented::Reused => Err(CommandError::Unauthenticated(
            "this refresh token was already used; the session is revoked, sign in again",
        )),
        Presented::Invalid(reason) => Err(CommandError::Unauthenticated(reason)),
    }
}

pub(super) async fn logout(
    execution: &Execution<'_>,
    token: &str,
) -> Result<CommandReply, CommandError> {
    let Some(user_id) = refresh_tokens::revoke_session(&execution.services.pool, token).await?
    else {
        return Err(CommandError::Unauthenticated(
            "the refresh token is invalid",
        ));
    };
    let user =
        event_store::load::<User>(&mut *execution.services.pool.acquire().await?, user_id).await?;
    Ok(reply(&user, None))
}

async fn active_user(
    execution: &Execution<'_>,
    user_id: Uuid,
) -> Result<Loaded<User>, CommandError> {
    let user =
        event_store::load::<User>(&mut *execution.services.pool.acquire().await?, user_id).await?;
    if !user.state.active {
        return Err(CommandError::Forbidden(
            "this account is deactivated".into(),
        ));
    }
    Ok(user)
}

/// Issues an access token and the next refresh token of `family_id`.
async fn start_session(
    execution: &Execution<'_>,
    user: &Loaded<User>,
    family_id: Uuid,
) -> Result<CommandReply, CommandError> {
    let services = execution.services;
    let mut transaction = services.pool.begin().await?;
    // Under the user's lock (shared), as their commands: an erasure or a
    // deactivation, which take it exclusively and end every session, either
    // came before (and is seen here) or waits for this one.
    event_store::lock_stream_shared(&mut transaction, user.state.id).await?;
    let now = event_store::load::<User>(&mut transaction, user.state.id).await?;
    if !now.state.exists() || !now.state.active {
        return Err(CommandError::Unauthenticated(WRONG_CREDENTIALS));
    }
    refresh_tokens::open_session(&mut transaction, user.state.id, family_id).await?;
    let refresh_token = refresh_tokens::issue(
        &mut transaction,
        user.state.id,
        family_id,
        services.refresh_token_ttl,
    )
    .await?;
    transaction.commit().await?;
    let access_token =
        services
            .access_tokens
            .issue(now.state.id, now.state.role.as_str(), family_id);
    let session = Session {
        access_token: Secret::new(access_token),
        refresh_token: Secret::new(refresh_token),
        token_type: "Bearer".to_owned(),
        expires_in: services.access_tokens.ttl().as_secs() as i64,
    };
    // The user as they are under the lock (a role changed meanwhile counts).
    Ok(reply(&now, Some(session)))
}

fn reply(user: &Loaded<User>, session: Option<Session>) -> CommandReply {
    CommandReply {
        stream_id: user.state.id,
        version: user.version,
        consistency_token: ConsistencyToken {
            stream_type: StreamType::User,
            stream_id: user.state.id,
            version: user.version.max(1),
        },
        session,
    }
}
