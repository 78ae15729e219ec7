//! Image uploads per person and minute: this replica's bucket keeps one
//! person's uploads spread out, and the count every replica shares
//! (`shared`, as for requests) holds the limit however many replicas
//! receive them.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::{MAX_TRACKED, SharedWindows};

#[derive(Clone)]
pub struct UploadLimit {
    buckets: Arc<DefaultKeyedRateLimiter<Uuid>>,
    shared: SharedWindows,
    limit: u32,
}

impl UploadLimit {
    pub fn new(per_minute: NonZeroU32, shared: SharedWindows) -> UploadLimit {
        UploadLimit {
            buckets: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            shared,
            limit: per_minute.get(),
        }
    }

    /// Takes one upload of `user`'s; `Err` says how long to wait.
    pub fn check(&self, user: Uuid) -> Result<(), Duration> {
        if self.buckets.len() > MAX_TRACKED {
            // Idle people's buckets are full again: nothing is lost by forgetting them.
            self.buckets.retain_recent();
        }
        let now = self.buckets.clock().now();
        self.buckets
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(now))?;
        self.shared
            .take(&format!("upload:{user}"), self.limit)
            .map(|_| ())
    }
}
