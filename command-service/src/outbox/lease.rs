//! Which relay is active: the holder of a lease in Postgres, renewed every
//! few seconds. A leader that goes silent (stopped, frozen, cut off) stops
//! renewing; its lease expires within [`LEASE`] and a standby takes over.
//! Duplicates are then possible (the old leader may publish a batch it had
//! read), loss is not: the cursor is only written by the lease's holder.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use uuid::Uuid;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(8);
/// How often the leader renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A leader stops publishing this long before its lease would expire, by its
/// own clock, should renewals not get through.
const MARGIN: Duration = Duration::from_secs(2);

pub const RELAY: &str = "main";

pub struct Lease {
    pub holder: Uuid,
    renewed: Instant,
}

impl Lease {
    /// Takes the lease if it is free or expired (or already ours).
    pub async fn acquire(
        connection: &mut PgConnection,
        holder: Uuid,
    ) -> Result<Option<Lease>, sqlx::Error> {
        let asked = Instant::now();
        let taken = sqlx::query_scalar!(
            r#"INSERT INTO event_store.relay_lease (relay, holder, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (relay) DO UPDATE
                 SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                 WHERE event_store.relay_lease.expires_at < now()
                    OR event_store.relay_lease.holder = EXCLUDED.holder
               RETURNING holder"#,
            RELAY,
            holder,
            LEASE.as_secs_f64()
        )
        .fetch_optional(connection)
        .await?;
        Ok(taken.map(|holder| Lease {
            holder,
            renewed: asked,
        }))
    }

    /// Renews it when due; false when it was lost (expired and taken).
    pub async fn keep(&mut self, connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
        if self.renewed.elapsed() < RENEW_EVERY {
            return Ok(true);
        }
        let asked = Instant::now();
        let renewed = sqlx::query_scalar!(
            r#"UPDATE event_store.relay_lease SET expires_at = now() + make_interval(secs => $3)
               WHERE relay = $1 AND holder = $2 RETURNING holder"#,
            RELAY,
            self.holder,
            LEASE.as_secs_f64()
        )
        .fetch_optional(connection)
        .await?;
        if renewed.is_some() {
            self.renewed = asked;
        }
        Ok(renewed.is_some())
    }

    /// Whether it is safely still ours by our own clock (a leader frozen for
    /// longer than the lease knows it lost it the moment it wakes).
    pub fn valid(&self) -> bool {
        self.renewed.elapsed() + MARGIN < LEASE
    }

    /// Lets a standby take over at once (a clean shutdown).
    pub async fn release(self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM event_store.relay_lease WHERE relay = $1 AND holder = $2",
            RELAY,
            self.holder
        )
        .execute(connection)
        .await?;
        Ok(())
    }
}
