//! Idempotency keys: a retried command with the same key and caller returns
//! the first outcome and appends nothing.
//!
//! Concurrent requests with one key are serialised by a transaction-scoped
//! advisory lock on (caller, key), taken before anything is read. Advisory
//! locks assign no transaction id, so this does not disturb the relay's order.

use chronicle_schema::{Command, CommandReply};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgConnection;

use crate::error::CommandError;

pub const MAX_KEY_LENGTH: usize = 255;

pub struct IdempotencyScope {
    pub caller: String,
    pub key: String,
    pub request_hash: String,
}

/// The server's key for request fingerprints. Keyed, and over the command
/// without its secrets: whoever reads the table can neither recompute a
/// fingerprint nor test guesses of a password against it.
#[derive(Clone)]
pub struct FingerprintKey(std::sync::Arc<[u8; 32]>);

impl FingerprintKey {
    /// Derived from a server secret, for this one purpose.
    pub fn derive(server_secret: &str) -> FingerprintKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"chronicle idempotency fingerprint v1");
        FingerprintKey(std::sync::Arc::new(mac.finalize().into_bytes().into()))
    }

    fn fingerprint(&self, bytes: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&*self.0).expect("HMAC takes keys of any length");
        mac.update(bytes);
        format!("{:x}", mac.finalize().into_bytes())
    }
}

impl IdempotencyScope {
    pub fn new(
        caller: String,
        key: &str,
        command: &Command,
        fingerprint_key: &FingerprintKey,
    ) -> Result<IdempotencyScope, CommandError> {
        if key.is_empty() || key.len() > MAX_KEY_LENGTH {
            let mut fields = crate::validation::FieldErrors::new();
            fields.add(
                "idempotencyKey",
                format!("must be 1 to {MAX_KEY_LENGTH} characters"),
            );
            return Err(CommandError::Invalid(fields));
        }
        let request = serde_json::to_vec(&command.without_secrets())
            .map_err(|error| CommandError::Internal(format!("command serialisation: {error}")))?;
        Ok(IdempotencyScope {
            caller,
            key: key.to_owned(),
            request_hash: fingerprint_key.fingerprint(&request),
        })
    }
}

/// Locks the key for this transaction and returns the first outcome, if any.
pub async fn lock_and_find(
    connection: &mut PgConnection,
    scope: &IdempotencyScope,
) -> Result<Option<CommandReply>, CommandError> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))",
        scope.caller,
        scope.key
    )
    .execute(&mut *connection)
    .await?;
    let stored = sqlx::query!(
        r#"SELECT request_hash, response FROM event_store.idempotency_keys
           WHERE caller = $1 AND key = $2 AND expires_at > now()"#,
        scope.caller,
        scope.key
    )
    .fetch_optional(&mut *connection)
    .await?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    if stored.request_hash != scope.request_hash {
        return Err(CommandError::conflict(
            "this Idempotency-Key was already used with a different request",
        ));
    }
    let reply = serde_json::from_value(stored.response)
        .map_err(|error| CommandError::Internal(format!("stored idempotent reply: {error}")))?;
    Ok(Some(reply))
}

/// Records the outcome; written after the append (see `event_store::append`).
pub async fn remember(
    connection: &mut PgConnection,
    scope: &IdempotencyScope,
    reply: &CommandReply,
    ttl_seconds: u64,
) -> Result<(), CommandError> {
    let response = serde_json::to_value(reply)
        .map_err(|error| CommandError::Internal(format!("reply serialisation: {error}")))?;
    sqlx::query!(
        r#"INSERT INTO event_store.idempotency_keys (caller, key, request_hash, response, expires_at)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
           ON CONFLICT (caller, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
                 created_at = now(), expires_at = EXCLUDED.expires_at"#,
        scope.caller,
        scope.key,
        scope.request_hash,
        response,
        ttl_seconds as f64,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Deletes expired keys; run periodically.
pub async fn purge_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!("DELETE FROM event_store.idempotency_keys WHERE expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
