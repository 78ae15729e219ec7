//! Image uploads per person and minute: this replica's bucket keeps one
//! person's uploads spread out, and the count every replica shares
//! (`shared`, as for requests) holds the limit however many replicas
//! receive them.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{Buckets, SharedWindows, buckets, take};

#[derive(Clone)]
pub struct UploadLimit {
    buckets: Arc<Buckets>,
    shared: SharedWindows,
    limit: u32,
}

impl UploadLimit {
    pub fn new(per_minute: NonZeroU32, shared: SharedWindows) -> UploadLimit {
        UploadLimit {
            buckets: buckets(per_minute),
            shared,
            limit: per_minute.get(),
        }
    }

    /// Takes one upload of `user`'s; `Err` says how long to wait.
    pub fn check(&self, user: Uuid) -> Result<(), Duration> {
        take(
            &self.buckets,
            &self.shared,
            "upload",
            user.to_string(),
            self.limit,
        )
        .map(|_| ())
    }
}
