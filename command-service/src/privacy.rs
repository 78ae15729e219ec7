//! Sealing what commands write about people (crypto-shredding, see
//! `chronicle_schema::privacy` and docs/privacy.md).
//!
//! Keys are cached for sealing: a command that seals for someone needs their
//! key on every write. A key cached after its person was erased is harmless:
//! an erased person's commands are refused (their sessions are revoked and
//! their stream is closed), and nothing is sealed for them again.

use std::collections::HashMap;
use std::sync::Mutex;

use chronicle_schema::privacy::{self, SubjectKey};
use sqlx::PgPool;
use uuid::Uuid;

/// Beyond this many people the cache starts again (keys are 32 bytes each).
const MAX_CACHED: usize = 100_000;

pub struct SealingKeys {
    pool: PgPool,
    cached: Mutex<HashMap<Uuid, SubjectKey>>,
}

impl SealingKeys {
    pub fn new(pool: PgPool) -> SealingKeys {
        SealingKeys {
            pool,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// The key to seal `subject`'s values with, made on first use (people
    /// registered before sealing existed get one then); `None` once erased.
    pub async fn for_subject(&self, subject: Uuid) -> Result<Option<SubjectKey>, sqlx::Error> {
        if let Some(key) = self.lock().get(&subject) {
            return Ok(Some(key.clone()));
        }
        let key = privacy::ensure_key(&self.pool, subject).await?;
        if let Some(key) = &key {
            let mut cached = self.lock();
            if cached.len() >= MAX_CACHED {
                cached.clear();
            }
            cached.insert(subject, key.clone());
        }
        Ok(key)
    }

    pub fn forget(&self, subject: Uuid) {
        self.lock().remove(&subject);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SubjectKey>> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
