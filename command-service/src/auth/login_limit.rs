//! Brute-force protection for logins: after too many failures for one account
//! or from one client within the window, every login attempt for it is
//! `RATE_LIMITED` (the right password included) until the window has passed.
//! Failures are kept in Postgres so every command-service instance agrees.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::CommandError;

#[derive(Clone, Debug)]
pub struct LoginLimits {
    pub max_failures_per_account: i64,
    pub max_failures_per_client: i64,
    pub window: Duration,
}

/// `RATE_LIMITED` (with when to retry) if the account or the client is locked out.
pub async fn check(
    pool: &PgPool,
    limits: &LoginLimits,
    email: &str,
    client: &str,
) -> Result<(), CommandError> {
    let window = limits.window.as_secs_f64();
    let counts = sqlx::query!(
        r#"SELECT
             count(*) FILTER (WHERE email = $1) AS "account!",
             count(*) FILTER (WHERE client = $2) AS "client!",
             EXTRACT(EPOCH FROM now() - min(failed_at) FILTER (WHERE email = $1))::float8 AS account_age,
             EXTRACT(EPOCH FROM now() - min(failed_at) FILTER (WHERE client = $2))::float8 AS client_age
           FROM auth.login_failures
           WHERE (email = $1 OR client = $2) AND failed_at > now() - make_interval(secs => $3)"#,
        email,
        client,
        window
    )
    .fetch_one(pool)
    .await?;
    let oldest_age = if counts.account >= limits.max_failures_per_account {
        counts.account_age
    } else if counts.client >= limits.max_failures_per_client {
        counts.client_age
    } else {
        return Ok(());
    };
    metrics::counter!("chronicle_login_rate_limited_total").increment(1);
    let retry_after_seconds = (window - oldest_age.unwrap_or(0.0)).ceil().max(1.0) as u64;
    Err(CommandError::RateLimited {
        retry_after_seconds,
    })
}

pub async fn record_failure(pool: &PgPool, email: &str, client: &str) -> Result<(), CommandError> {
    sqlx::query!(
        "INSERT INTO auth.login_failures (email, client) VALUES ($1, $2)",
        email,
        client
    )
    .execute(pool)
    .await?;
    metrics::counter!("chronicle_login_failures_total").increment(1);
    Ok(())
}

/// A successful login forgets the account's failures.
pub async fn clear(pool: &PgPool, email: &str) -> Result<(), CommandError> {
    sqlx::query!("DELETE FROM auth.login_failures WHERE email = $1", email)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops failures older than any window; run periodically.
pub async fn purge(pool: &PgPool, window: Duration) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "DELETE FROM auth.login_failures WHERE failed_at < now() - make_interval(secs => $1)",
        window.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
