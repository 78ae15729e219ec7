//! Limits shared by every replica: requests per key per minute, counted in
//! Postgres (`limits.request_windows`).
//!
//! A request never waits for the database: each replica counts locally what
//! it lets through and, every [`SYNC_EVERY`], adds it to the shared counts
//! and reads them back in one statement (a key first seen here in a minute is
//! read in the next one too). A key is refused once its shared count plus
//! what this replica let through since reaches the limit. Between two syncs,
//! replicas that do not yet see each other's requests may together let
//! through more, at most what each lets through in one interval: the bound
//! on overshoot, traded for no round trip per request.
//!
//! At most [`MAX_KEYS`] keys are counted per replica and minute (a client
//! rotating addresses cannot grow it without bound); past that, new keys
//! are limited by the local buckets alone until the minute ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often a replica adds its counts to the shared ones.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
const WINDOW_SECONDS: u64 = 60;
/// Keys counted per replica and minute.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
struct Count {
    window: i64,
    /// The shared count as last read (this replica's synced requests included).
    shared: u32,
    /// Let through here since the last sync.
    unsynced: u32,
    /// Whether the shared count was read this window.
    read: bool,
}

#[derive(Clone)]
pub struct SharedWindows {
    pool: PgPool,
    counts: Arc<Mutex<HashMap<String, Count>>>,
}

impl SharedWindows {
    /// Starts syncing until `shutdown` (a last sync then).
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> SharedWindows {
        let windows = SharedWindows {
            pool,
            counts: Arc::default(),
        };
        let syncer = windows.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(SYNC_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                let stopping = tokio::select! {
                    () = shutdown.cancelled() => true,
                    _ = interval.tick() => false,
                };
                ticks += 1;
                if let Err(error) = syncer.sync().await {
                    // Counting goes on locally; the next sync adds it.
                    tracing::warn!(%error, "cannot share rate-limit counts");
                }
                // Now and then, drop windows no replica still counts in.
                if ticks.is_multiple_of(300) {
                    let _ = syncer.forget_old().await;
                }
                if stopping {
                    return;
                }
            }
        });
        windows
    }

    /// Counts one request for `key`; `Err` is how long until the window ends.
    pub fn take(&self, key: &str, limit: u32) -> Result<u32, Duration> {
        let (window, until_next) = current_window();
        let mut counts = self.counts.lock().expect("never poisoned");
        if counts.len() >= MAX_KEYS && !counts.contains_key(key) {
            return Ok(limit);
        }
        let count = counts.entry(key.to_owned()).or_default();
        if count.window != window {
            *count = Count {
                window,
                ..Count::default()
            };
        }
        let used = count.shared.saturating_add(count.unsynced);
        if used >= limit {
            return Err(until_next);
        }
        count.unsynced += 1;
        Ok(limit - used - 1)
    }

    async fn sync(&self) -> Result<(), sqlx::Error> {
        let (window, _) = current_window();
        let (mut keys, mut windows, mut added) = (Vec::new(), Vec::new(), Vec::new());
        {
            let mut counts = self.counts.lock().expect("never poisoned");
            // Past windows are over: nothing of them matters any more.
            counts.retain(|_, count| count.window == window);
            // What was let through since the last sync, and keys not read yet
            // (adding nothing: they are only read back).
            for (key, count) in counts
                .iter_mut()
                .filter(|(_, count)| count.unsynced > 0 || !count.read)
            {
                keys.push(key.clone());
                windows.push(count.window);
                added.push(count.unsynced as i32);
                count.shared = count.shared.saturating_add(count.unsynced);
                count.unsynced = 0;
                count.read = true;
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let totals = sqlx::query!(
            r#"INSERT INTO limits.request_windows AS w (key, window_start, count)
               SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[])
               ON CONFLICT (key, window_start) DO UPDATE SET count = w.count + EXCLUDED.count
               RETURNING key, window_start, count"#,
            &keys,
            &windows,
            &added
        )
        .fetch_all(&self.pool)
        .await;
        let totals = match totals {
            Ok(totals) => totals,
            Err(error) => {
                // Not added: count it again next time.
                let mut counts = self.counts.lock().expect("never poisoned");
                for ((key, window), added) in keys.iter().zip(&windows).zip(&added) {
                    if let Some(count) = counts.get_mut(key).filter(|count| count.window == *window)
                    {
                        count.shared = count.shared.saturating_sub(*added as u32);
                        count.unsynced = count.unsynced.saturating_add(*added as u32);
                        count.read = false;
                    }
                }
                return Err(error);
            }
        };
        let mut counts = self.counts.lock().expect("never poisoned");
        for total in totals {
            if let Some(count) = counts
                .get_mut(&total.key)
                .filter(|count| count.window == total.window_start)
            {
                count.shared = count.shared.max(total.count.max(0) as u32);
            }
        }
        Ok(())
    }

    async fn forget_old(&self) -> Result<(), sqlx::Error> {
        let (window, _) = current_window();
        sqlx::query!(
            "DELETE FROM limits.request_windows WHERE window_start < $1",
            window - 1
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The current minute since the epoch, and how long until the next.
fn current_window() -> (i64, Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let window = now.as_secs() / WINDOW_SECONDS;
    let next = Duration::from_secs((window + 1) * WINDOW_SECONDS);
    (window as i64, next.saturating_sub(now))
}
