//! Rotating refresh tokens, stored only as SHA-256 hashes.
//!
//! A login starts a family. Each refresh spends the presented token and issues
//! the next one in its family. Presenting a spent token again means it was
//! copied: the whole family is revoked, the thief's copy and the owner's alike.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::CommandError;

fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Issues a new token in `family_id` and returns it (the only time it exists in clear).
pub async fn issue(
    connection: &mut PgConnection,
    user_id: Uuid,
    family_id: Uuid,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    sqlx::query!(
        r#"INSERT INTO auth.refresh_tokens (token_hash, family_id, user_id, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))"#,
        hash(&token),
        family_id,
        user_id,
        ttl.as_secs_f64()
    )
    .execute(connection)
    .await?;
    Ok(token)
}

/// What a presented refresh token turned out to be.
pub enum Presented {
    /// Valid: spent now; issue the next token in `family_id`.
    Valid {
        user_id: Uuid,
        family_id: Uuid,
    },
    /// Spent before: its family has been revoked.
    Reused,
    Invalid(&'static str),
}

/// Spends a refresh token. A reuse revokes the family in its own committed
/// transaction, whatever the caller does next.
pub async fn spend(pool: &PgPool, token: &str) -> Result<Presented, CommandError> {
    let mut transaction = pool.begin().await?;
    // The user's lock before the token's row: a deactivation or sign-out
    // takes them in that order too (no deadlock with a reuse's revocation).
    let Some(user_id) = sqlx::query_scalar!(
        "SELECT user_id FROM auth.refresh_tokens WHERE token_hash = $1",
        hash(token)
    )
    .fetch_optional(&mut *transaction)
    .await?
    else {
        return Ok(Presented::Invalid("the refresh token is invalid"));
    };
    crate::event_store::lock_stream(&mut transaction, user_id).await?;
    let Some(row) = sqlx::query!(
        r#"SELECT family_id, user_id, expires_at < now() AS "expired!", spent_at IS NOT NULL AS "spent!",
                  revoked_at IS NOT NULL AS "revoked!"
           FROM auth.refresh_tokens WHERE token_hash = $1 FOR UPDATE"#,
        hash(token)
    )
    .fetch_optional(&mut *transaction)
    .await?
    else {
        return Ok(Presented::Invalid("the refresh token is invalid"));
    };
    if row.revoked {
        return Ok(Presented::Invalid("the refresh token was revoked"));
    }
    if row.spent {
        revoke(&mut transaction, row.user_id, row.family_id).await?;
        transaction.commit().await?;
        tracing::warn!(user_id = %row.user_id, family_id = %row.family_id, "refresh token reused; session revoked");
        metrics::counter!("chronicle_refresh_token_reuse_total").increment(1);
        return Ok(Presented::Reused);
    }
    if row.expired {
        return Ok(Presented::Invalid(
            "the refresh token has expired; sign in again",
        ));
    }
    sqlx::query!(
        "UPDATE auth.refresh_tokens SET spent_at = now() WHERE token_hash = $1",
        hash(token)
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Presented::Valid {
        user_id: row.user_id,
        family_id: row.family_id,
    })
}

/// Revokes the session the token belongs to, answering its user (none when
/// the token is unknown).
pub async fn revoke_session(pool: &PgPool, token: &str) -> Result<Option<Uuid>, CommandError> {
    let mut transaction = pool.begin().await?;
    let Some(row) = sqlx::query!(
        "SELECT family_id, user_id FROM auth.refresh_tokens WHERE token_hash = $1",
        hash(token)
    )
    .fetch_optional(&mut *transaction)
    .await?
    else {
        return Ok(None);
    };
    revoke(&mut transaction, row.user_id, row.family_id).await?;
    transaction.commit().await?;
    Ok(Some(row.user_id))
}

/// Ends a session: its refresh tokens, and (through `sid`) its access tokens.
async fn revoke(
    connection: &mut PgConnection,
    user_id: Uuid,
    family_id: Uuid,
) -> Result<(), sqlx::Error> {
    // A command of this user either appends before this commits or sees the
    // session ended (the append checks it under this lock, shared).
    crate::event_store::lock_stream(&mut *connection, user_id).await?;
    sqlx::query!(
        "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE auth.sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        family_id
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Starts a session (a login), or finds it still open (a refresh).
pub async fn open_session(
    connection: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO auth.sessions (id, user_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        session_id,
        user_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Ends every session of a user (their account was deactivated).
pub async fn revoke_all(connection: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    crate::event_store::lock_stream(&mut *connection, user_id).await?;
    sqlx::query!(
        "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}
