//! Read-your-writes: waiting, bounded, until the projections include a write.
//!
//! The projector announces every committed batch on a Postgres channel; a
//! waiter re-checks `stream_versions` when one arrives (and now and then
//! regardless, in case the listening connection was lost). No client sleeps.

use std::time::Duration;

use chronicle_platform::retry::Backoff;
use chronicle_schema::projected::{CHANNEL, Projected};
use chronicle_schema::{ConsistencyToken, StreamType};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use chronicle_schema::ErrorCode;

use crate::error::ApiError;
use crate::read_models::cache::RowCache;
use crate::search::SearchIndex;

/// The projection name the projector's search indexer announces under.
const SEARCH_PROJECTION: &str = "search";

/// Re-check at least this often even without an announcement.
const RECHECK: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Consistency {
    pool: PgPool,
    search: SearchIndex,
    rows: RowCache,
    /// Bumped on every announcement.
    announcements: watch::Receiver<u64>,
    /// Every announcement, for subscriptions.
    projected: broadcast::Sender<Projected>,
    pub max_wait: Duration,
}

impl Consistency {
    /// Starts listening for announcements in the background.
    pub fn start(
        pool: PgPool,
        search: SearchIndex,
        rows: RowCache,
        max_wait: Duration,
        shutdown: CancellationToken,
    ) -> Consistency {
        let (counter, announcements) = watch::channel(0);
        let (projected, _) = broadcast::channel(1024);
        tokio::spawn(listen(
            pool.clone(),
            search.clone(),
            rows.clone(),
            counter,
            projected.clone(),
            shutdown,
        ));
        Consistency {
            pool,
            search,
            rows,
            announcements,
            projected,
            max_wait,
        }
    }

    pub fn search_index(&self) -> &SearchIndex {
        &self.search
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Projected> {
        self.projected.subscribe()
    }

    /// Whether the read models include the token's write; or, when they
    /// moved past it but set it (or an earlier version) aside, which one.
    async fn applied(&self, token: &ConsistencyToken) -> Result<Wait, sqlx::Error> {
        let row = sqlx::query!(
            r#"SELECT v.version,
                      (SELECT min(d.version) FROM projector.dead_letters d
                       WHERE d.stream_id = v.stream_id AND d.version <= $2
                         AND d.redriven_at IS NULL AND d.projection = 'read_models') AS dead_lettered
               FROM stream_versions v WHERE v.stream_id = $1"#,
            token.stream_id,
            token.version
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) if row.version >= token.version => match row.dead_lettered {
                Some(version) => Wait::DeadLettered { version },
                None => Wait::Reached,
            },
            _ => Wait::TimedOut,
        })
    }

    /// Whether the search index includes the token's write: posts, and users
    /// (their standing decides their posts'), are marked with the version
    /// indexed; comments are not indexed, so any is included.
    pub fn is_indexed(&self, token: &ConsistencyToken) -> bool {
        token.stream_type == StreamType::Comment
            || self
                .search
                .indexed_version(token.stream_id)
                .is_some_and(|version| version >= token.version)
    }

    /// Waits until the token's write is in the read models.
    pub async fn wait_for(
        &self,
        token: &ConsistencyToken,
        timeout: Duration,
    ) -> Result<Wait, sqlx::Error> {
        self.wait_until(timeout, Includes::ReadModels(token)).await
    }

    /// Waits until the token's write is in the search index.
    pub async fn wait_for_search(
        &self,
        token: &ConsistencyToken,
        timeout: Duration,
    ) -> Result<Wait, sqlx::Error> {
        self.wait_until(timeout, Includes::Search(token)).await
    }

    /// The stream's version in the event store: what a token may name at most.
    async fn written_version(&self, token: &ConsistencyToken) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT COALESCE(max(version), 0) AS "version!" FROM event_store.events
               WHERE stream_id = $1 AND stream_type = $2"#,
            token.stream_id,
            token.stream_type.as_str()
        )
        .fetch_one(&self.pool)
        .await
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        condition: Includes<'_>,
    ) -> Result<Wait, sqlx::Error> {
        let deadline = Instant::now() + timeout.min(self.max_wait);
        let mut announcements = self.announcements.clone();
        announcements.mark_unchanged();
        let mut checked_written = false;
        loop {
            let (wait, token) = match condition {
                Includes::ReadModels(token) => (self.applied(token).await?, token),
                Includes::Search(token) => (
                    if self.is_indexed(token) {
                        Wait::Reached
                    } else {
                        Wait::TimedOut
                    },
                    token,
                ),
            };
            if let Wait::DeadLettered { .. } = wait {
                return Ok(wait);
            }
            if wait == Wait::Reached {
                // The write may be applied before its announcement reaches us:
                // no cached row older than it may answer the reads that follow.
                self.rows.invalidate();
                return Ok(Wait::Reached);
            }
            // A token for a write that never happened (forged, or of another
            // deployment) is refused at once instead of waiting it out.
            if !checked_written {
                checked_written = true;
                let written = self.written_version(token).await?;
                if written < token.version {
                    return Ok(Wait::NeverWritten { written });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wait::TimedOut);
            }
            let wake = deadline.min(now + RECHECK);
            let _ = tokio::time::timeout_at(wake, announcements.changed()).await;
        }
    }
}

/// How a wait on a consistency token ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Reached,
    TimedOut,
    /// The token names a version past what the event store has for the stream.
    NeverWritten {
        written: i32,
    },
    /// The read models moved past the write but could not take `version` of
    /// its stream (up to the token's): it waits for an operator's redrive.
    DeadLettered {
        version: i32,
    },
}

impl Wait {
    /// The client's error for a wait on a token it sent, if the wait failed.
    pub fn into_result(self, what: &str, max_wait: Duration) -> Result<(), ApiError> {
        match self {
            Wait::Reached => Ok(()),
            Wait::TimedOut => Err(ApiError::unavailable(format!(
                "{what} has not caught up with this consistency token within {} ms; retry",
                max_wait.as_millis()
            ))),
            Wait::DeadLettered { version } => {
                let mut error = ApiError::new(
                    ErrorCode::Internal,
                    format!(
                        "{what} could not take version {version} of this stream: it is set aside \
                         as a dead letter until an operator redrives it, and reads would miss it"
                    ),
                );
                error.dead_lettered = Some(version);
                Err(error)
            }
            Wait::NeverWritten { written } => Err(ApiError::bad_input(
                "X-Consistency-Token",
                format!(
                    "names a write that does not exist (the stream has {written} versions); \
                     send a token a mutation returned"
                ),
            )),
        }
    }
}

/// What a wait waits for.
#[derive(Clone, Copy)]
enum Includes<'a> {
    ReadModels(&'a ConsistencyToken),
    Search(&'a ConsistencyToken),
}

async fn listen(
    pool: PgPool,
    search: SearchIndex,
    rows: RowCache,
    counter: watch::Sender<u64>,
    projected: broadcast::Sender<Projected>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::standard();
    while !shutdown.is_cancelled() {
        let result = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            rows.set_enabled(true);
            tracing::info!(channel = CHANNEL, "listening for projection announcements");
            loop {
                let notification = tokio::select! {
                    () = shutdown.cancelled() => return Ok::<(), sqlx::Error>(()),
                    notification = listener.recv() => notification?,
                };
                match serde_json::from_str::<Projected>(notification.payload()) {
                    Ok(announcement) => {
                        // Reload before waking waiters, so they see the commit.
                        if announcement.projection == SEARCH_PROJECTION {
                            let search = search.clone();
                            let _ = tokio::task::spawn_blocking(move || search.refresh()).await;
                        } else if let Some(touched) = &announcement.rows {
                            rows.invalidate_rows(touched);
                        } else {
                            rows.invalidate();
                        }
                        counter.send_modify(|count| *count += 1);
                        let _ = projected.send(announcement);
                    }
                    Err(error) => {
                        rows.invalidate();
                        counter.send_modify(|count| *count += 1);
                        tracing::warn!(%error, "unreadable projection announcement");
                    }
                }
            }
        }
        .await;
        // Announcements may be missed from here on: nothing may be served from memory.
        rows.set_enabled(false);
        match result {
            Ok(()) => return,
            // Closed by shutdown: nothing was lost that anyone still waits for.
            Err(_) if pool.is_closed() => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff.delay(), "projection announcements lost; reconnecting");
                // Waiters re-check: whatever was announced meanwhile is missed.
                search.refresh();
                counter.send_modify(|count| *count += 1);
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}
