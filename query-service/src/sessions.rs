//! Whether an access token's session is still open. A signed-out session's
//! tokens stop working within [`FRESH_FOR`], not when they expire; the answer
//! is remembered that long so a signed-in reader costs no extra query per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// Sessions remembered before the memo starts over.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Clone)]
pub struct Sessions {
    pool: PgPool,
    known: Arc<Mutex<HashMap<Uuid, (bool, Instant)>>>,
}

impl Sessions {
    pub fn new(pool: PgPool) -> Sessions {
        Sessions {
            pool,
            known: Arc::default(),
        }
    }

    pub async fn is_open(&self, session_id: Uuid, user_id: Uuid) -> Result<bool, sqlx::Error> {
        if let Some((open, at)) = self
            .known
            .lock()
            .expect("never poisoned")
            .get(&session_id)
            .copied()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(open);
        }
        let open = sqlx::query_scalar!(
            r#"SELECT EXISTS (
                 SELECT 1 FROM auth.sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
               ) AS "open!""#,
            session_id,
            user_id
        )
        .fetch_one(&self.pool)
        .await?;
        let mut known = self.known.lock().expect("never poisoned");
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(session_id, (open, Instant::now()));
        Ok(open)
    }
}
