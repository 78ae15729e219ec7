//! Brute-force protection for logins: after too many failures for one account
//! or from one client within the window, every login attempt for it is
//! `RATE_LIMITED` (the right password included) until the window has passed.
//! Failures are kept in Postgres so every command-service instance agrees,
//! per account by a keyed digest of its email ([`account`]): no email is kept.

use std::time::Duration;

use sqlx::PgPool;

use crate::commands::FingerprintKey;
use crate::error::CommandError;

/// The account an email names, as failures are counted by.
pub fn account(key: &FingerprintKey, email: &str) -> String {
    key.pseudonym("login-account", email)
}

#[derive(Clone, Debug)]
pub struct LoginLimits {
    pub max_failures_per_account: i64,
    pub max_failures_per_client: i64,
    pub window: Duration,
}

/// An attempt counted against its account and client before the password is
/// checked: if it fails, it stays as a failure; if it succeeds, [`succeeded`]
/// forgets it with the account's other failures.
pub struct Attempt {
    id: i64,
}

/// Counts this attempt, or answers `RATE_LIMITED` (with when to retry) if the
/// account or the client is locked out. Counting and checking are one step,
/// serialised per account and per client: twelve concurrent guesses against a
/// limit of five get five password checks, not twelve.
pub async fn admit(
    pool: &PgPool,
    limits: &LoginLimits,
    account: &str,
    client: &str,
) -> Result<Attempt, CommandError> {
    let window = limits.window.as_secs_f64();
    let mut transaction = pool.begin().await?;
    // Account first, then client, in every transaction: no two wait on each other.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('login-account:' || $1, 0)),
                pg_advisory_xact_lock(hashtextextended('login-client:' || $2, 0))",
        account,
        client
    )
    .execute(&mut *transaction)
    .await?;
    let counts = sqlx::query!(
        r#"SELECT
             count(*) FILTER (WHERE account = $1) AS "account!",
             count(*) FILTER (WHERE client = $2) AS "client!",
             EXTRACT(EPOCH FROM now() - min(failed_at) FILTER (WHERE account = $1))::float8 AS account_age,
             EXTRACT(EPOCH FROM now() - min(failed_at) FILTER (WHERE client = $2))::float8 AS client_age
           FROM auth.login_failures
           WHERE (account = $1 OR client = $2) AND failed_at > now() - make_interval(secs => $3)"#,
        account,
        client,
        window
    )
    .fetch_one(&mut *transaction)
    .await?;
    let oldest_age = if counts.account >= limits.max_failures_per_account {
        Some(counts.account_age)
    } else if counts.client >= limits.max_failures_per_client {
        Some(counts.client_age)
    } else {
        None
    };
    if let Some(oldest_age) = oldest_age {
        metrics::counter!("chronicle_login_rate_limited_total").increment(1);
        let retry_after_seconds = (window - oldest_age.unwrap_or(0.0)).ceil().max(1.0) as u64;
        return Err(CommandError::RateLimited {
            retry_after_seconds,
        });
    }
    let id = sqlx::query_scalar!(
        "INSERT INTO auth.login_failures (account, client) VALUES ($1, $2) RETURNING id",
        account,
        client
    )
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Attempt { id })
}

/// The attempt failed: it stays counted.
pub fn failed(_attempt: Attempt) {
    metrics::counter!("chronicle_login_failures_total").increment(1);
}

/// The attempt succeeded: it, and the account's earlier failures, are forgotten.
pub async fn succeeded(pool: &PgPool, attempt: Attempt, account: &str) -> Result<(), CommandError> {
    sqlx::query!(
        "DELETE FROM auth.login_failures WHERE id = $1 OR account = $2",
        attempt.id,
        account
    )
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
