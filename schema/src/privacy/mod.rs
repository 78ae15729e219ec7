//! Personal data, sealed per person (crypto-shredding).
//!
//! Every personal value an event carries (a person's email, handle, name,
//! bio, and the text of their posts and comments) is encrypted, before it is
//! stored, under a key that belongs to that person (`privacy.subject_keys`,
//! apart from the events). The event store and the bus hold ciphertext for
//! those fields; a reader with the key opens them. Erasing a person destroys
//! their key: every copy of their values, in the store, on Kafka, in any
//! backup of either, becomes unreadable, while the log itself stays intact.
//!
//! Which fields are personal is stated once, per event type, in `seal`.
//! docs/privacy.md says why those, and how another consumer reads them.

mod seal;

use std::collections::HashMap;
use std::fmt;

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use uuid::Uuid;

pub use seal::{Opened, SealError, is_personal, open, seal, seal_value, subjects};

/// A person's key: 256 bits for XChaCha20-Poly1305. Never logged (its
/// `Debug` says nothing), never in an event, never on the bus.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey([u8; 32]);

impl SubjectKey {
    pub fn generate() -> SubjectKey {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        SubjectKey(bytes)
    }

    /// A stored key; `None` when it is not 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<SubjectKey> {
        bytes.try_into().ok().map(SubjectKey)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SubjectKey(..)")
    }
}

/// The keys of the people a set of events names. A person who has no key
/// here was erased (or the events name someone this store never had): their
/// values open as erased.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: HashMap<Uuid, SubjectKey>,
}

impl Keyring {
    /// No keys: every sealed value opens as erased.
    pub fn none() -> Keyring {
        Keyring::default()
    }

    pub fn insert(&mut self, subject: Uuid, key: SubjectKey) {
        self.keys.insert(subject, key);
    }

    pub fn get(&self, subject: &Uuid) -> Option<&SubjectKey> {
        self.keys.get(subject)
    }

    /// The keys of `subjects` that exist, in one query.
    pub async fn load(
        executor: impl sqlx::PgExecutor<'_>,
        subjects: &[Uuid],
    ) -> Result<Keyring, sqlx::Error> {
        if subjects.is_empty() {
            return Ok(Keyring::none());
        }
        Keyring::fetch(executor, Some(subjects)).await
    }

    /// Every key there is (a rebuild folds the whole store).
    pub async fn all(executor: impl sqlx::PgExecutor<'_>) -> Result<Keyring, sqlx::Error> {
        Keyring::fetch(executor, None).await
    }

    /// The keys of `subjects`, or of everyone.
    async fn fetch(
        executor: impl sqlx::PgExecutor<'_>,
        subjects: Option<&[Uuid]>,
    ) -> Result<Keyring, sqlx::Error> {
        let rows = sqlx::query!(
            // An erased person's key opens nothing, even one made by a race.
            "SELECT k.subject_id, k.key FROM privacy.subject_keys k
             WHERE ($1::uuid[] IS NULL OR k.subject_id = ANY($1))
               AND NOT EXISTS (SELECT 1 FROM privacy.erasures e WHERE e.subject_id = k.subject_id)",
            subjects as Option<&[Uuid]>
        )
        .fetch_all(executor)
        .await?;
        let mut keyring = Keyring::none();
        for row in rows {
            if let Some(key) = SubjectKey::from_bytes(&row.key) {
                keyring.insert(row.subject_id, key);
            }
        }
        Ok(keyring)
    }

    /// The keys of everyone these payloads name.
    pub async fn for_payloads<'a>(
        executor: impl sqlx::PgExecutor<'_>,
        payloads: impl IntoIterator<Item = &'a serde_json::Value>,
    ) -> Result<Keyring, sqlx::Error> {
        let mut named: Vec<Uuid> = payloads.into_iter().flat_map(subjects).collect();
        named.sort_unstable();
        named.dedup();
        Keyring::load(executor, &named).await
    }
}

/// Gives `subject` a key if they have none, and answers their key; `None`
/// once they are erased. Under the subject's key lock, which an erasure
/// holds from before it destroys the key until it commits: a key is never
/// made again for someone erased, or being erased.
pub async fn ensure_key(
    pool: &sqlx::PgPool,
    subject: Uuid,
) -> Result<Option<SubjectKey>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    lock_key(&mut transaction, subject).await?;
    let fresh = SubjectKey::generate();
    let stored = sqlx::query_scalar!(
        r#"WITH created AS (
               INSERT INTO privacy.subject_keys (subject_id, key)
               SELECT $1, $2
               WHERE NOT EXISTS (SELECT 1 FROM privacy.erasures WHERE subject_id = $1)
               ON CONFLICT (subject_id) DO NOTHING
               RETURNING key)
           SELECT key AS "key!" FROM created
           UNION ALL
           SELECT key FROM privacy.subject_keys
           WHERE subject_id = $1
             AND NOT EXISTS (SELECT 1 FROM privacy.erasures WHERE subject_id = $1)
           LIMIT 1"#,
        subject,
        fresh.as_bytes()
    )
    .fetch_optional(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(stored.and_then(|key| SubjectKey::from_bytes(&key)))
}

/// Destroys `subject`'s key for good, in the caller's transaction (the
/// erasure's), and records that they were erased, by `erased_by`.
pub async fn destroy_key(
    connection: &mut sqlx::PgConnection,
    subject: Uuid,
    erased_by: Uuid,
) -> Result<(), sqlx::Error> {
    lock_key(&mut *connection, subject).await?;
    sqlx::query!(
        "DELETE FROM privacy.subject_keys WHERE subject_id = $1",
        subject
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO privacy.erasures (subject_id, erased_by) VALUES ($1, $2)
         ON CONFLICT (subject_id) DO NOTHING",
        subject,
        erased_by
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn lock_key(connection: &mut sqlx::PgConnection, subject: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(privacy.key_lock_class(), hashtext($1::uuid::text))",
        subject
    )
    .execute(connection)
    .await?;
    Ok(())
}
