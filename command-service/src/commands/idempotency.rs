//! Idempotency keys: a retried command with the same key and caller returns
//! the first outcome and appends nothing.
//!
//! The append statement (`event_store.append_set`) looks the key up and records
//! it; concurrent requests with one key are serialised there by a
//! transaction-scoped advisory lock on (caller, key), taken before anything
//! is read (advisory locks assign no transaction id: the relay's order holds).
//! A retry whose decision is refused (the post it deleted is gone, the
//! version it expected moved on) looks the key up before answering.

use chronicle_schema::{Command, CommandReply};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use super::Written;
use crate::error::CommandError;
use crate::event_store::StoredOutcome;

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

    /// A keyed digest of `value` for `purpose`: equal values give equal
    /// digests, and no one without the server secret can tell the value.
    pub fn pseudonym(&self, purpose: &str, value: &str) -> String {
        self.fingerprint(format!("{purpose}\u{1f}{value}").as_bytes())
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

/// What an idempotency key holds already.
pub enum Recorded {
    /// This request's first outcome.
    Same(StoredOutcome),
    /// The key came with another request.
    Other,
}

impl Recorded {
    pub fn reply(self) -> Result<CommandReply, CommandError> {
        match self {
            Recorded::Same(stored) => Ok(Written {
                stream_id: stored.stream_id,
                stream_type: stored.stream_type,
                version: stored.version,
            }
            .reply()),
            Recorded::Other => Err(key_reused()),
        }
    }
}

pub fn key_reused() -> CommandError {
    CommandError::conflict("this Idempotency-Key was already used with a different request")
}

/// The key's record, if it has one (a read: the append statement checks it
/// again under the key's lock).
pub async fn find(
    pool: &PgPool,
    scope: &IdempotencyScope,
) -> Result<Option<Recorded>, CommandError> {
    let Some(row) = sqlx::query!(
        r#"SELECT request_hash, response FROM event_store.idempotency_keys
           WHERE caller = $1 AND key = $2 AND expires_at > now()"#,
        scope.caller,
        scope.key
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    if row.request_hash != scope.request_hash {
        return Ok(Some(Recorded::Other));
    }
    let stored = serde_json::from_value(row.response)
        .map_err(|error| CommandError::Internal(format!("stored idempotent outcome: {error}")))?;
    Ok(Some(Recorded::Same(stored)))
}

/// Deletes expired keys; run periodically.
pub async fn purge_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!("DELETE FROM event_store.idempotency_keys WHERE expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
