//! Following the bus into the search index.
//!
//! Partitions are assigned explicitly, at the offsets recorded in the index's
//! last commit: the index is a local cache of its own, so it resumes exactly
//! where it was committed, whatever any consumer group did. Commits are
//! batched (at most `commit_interval` apart), and each is announced on the
//! projection channel so readers reload and consistency waits wake.
//!
//! A document is derived from its post's read-model row, never folded apart:
//! for each post or user event, the indexer waits until the read models have
//! applied that version, then indexes the post (or every post of the user,
//! whose standing decides their posts' visibility) as its row is then, and a
//! marker for the user.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronicle_platform::retry::{self, Backoff};
use chronicle_schema::StreamType;
use chronicle_schema::bus::decode_envelope;
use chronicle_schema::projected::{AppliedEvent, CHANNEL, Projected};
use chronicle_schema::read_models::posts::{self as read_posts, PostRow};
use chronicle_schema::read_models::users as read_users;
use chronicle_schema::search_schema::{IndexCheckpoint, IndexLayout, PostIndexSchema};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use tantivy::TantivyDocument;

use super::{PostIndex, SearchIndexError};
use crate::consumer::fill_batch;
use crate::rebuild::Projection;
use crate::status::Failures;

pub const PROJECTION: &str = "search";
/// How often a batch re-checks whether the read models have caught up.
const READ_MODELS_POLL: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct IndexerSettings {
    pub brokers: String,
    pub topic: String,
    pub layout: IndexLayout,
    pub commit_interval: Duration,
    pub batch_size: usize,
}

/// The live index and how far the bus has been read into it.
pub struct LiveIndex {
    pub index: PostIndex,
    /// Partition -> next offset, for what has been written (committed or not).
    pub offsets: BTreeMap<i32, i64>,
    /// Posts written since the last commit, announced when it happens.
    pub written: HashMap<Uuid, i32>,
    pub topic: String,
    pub last_commit: Instant,
    /// Highest event position written; for lag reporting.
    pub applied_position: i64,
    /// Someone was erased since the last commit: their posts' old documents
    /// are purged from the files after it.
    pub purge: bool,
}

pub type SharedIndex = Arc<Mutex<LiveIndex>>;

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error(transparent)]
    Index(#[from] SearchIndexError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("index task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Opens the live generation (creating generation 1 for a new index).
pub fn open_live(layout: &IndexLayout, topic: &str) -> Result<LiveIndex, SearchIndexError> {
    // A new index keeps the writer that created it: dropping it and opening
    // again would wait out the lock window `PostIndex::open` describes.
    let index = match layout.current()? {
        Some(generation) => PostIndex::open(layout, generation)?,
        None => {
            let index = PostIndex::open(layout, 1)?;
            layout.set_current(1)?;
            index
        }
    };
    let checkpoint = index.checkpoint()?;
    // A checkpoint of another topic says nothing about this one.
    let (offsets, applied_position) = if checkpoint.topic == topic {
        (checkpoint.offsets, checkpoint.applied_position)
    } else {
        (BTreeMap::new(), 0)
    };
    Ok(LiveIndex {
        index,
        offsets,
        written: HashMap::new(),
        topic: topic.to_owned(),
        last_commit: Instant::now(),
        applied_position,
        purge: false,
    })
}

impl LiveIndex {
    pub fn checkpoint(&self) -> IndexCheckpoint {
        IndexCheckpoint {
            topic: self.topic.clone(),
            offsets: self.offsets.clone(),
            applied_position: self.applied_position,
        }
    }
}

/// Commits what is pending and announces it (no-op when nothing is).
pub async fn commit(shared: &SharedIndex, pool: &PgPool) -> Result<(), IndexerError> {
    let mut live = shared.clone().lock_owned().await;
    // A purge that could not run yet is tried again at every commit tick.
    if !live.index.has_pending() && !live.purge {
        live.last_commit = Instant::now();
        return Ok(());
    }
    let checkpoint = live.checkpoint();
    tracing::debug!(?checkpoint.offsets, "committing the search index");
    let written = std::mem::take(&mut live.written);
    let mut live = tokio::task::spawn_blocking(move || {
        let result = live.index.commit(&checkpoint);
        if result.is_ok() && live.purge {
            match live.index.purge_deleted() {
                Ok(()) => live.purge = false,
                // Tried again after the next commit.
                Err(error) => tracing::warn!(%error, "could not purge erased documents yet"),
            }
        }
        (live, result)
    })
    .await
    .map(|(live, result)| result.map(|()| live))??;
    live.last_commit = Instant::now();
    drop(live);
    announce(pool, written).await?;
    Ok(())
}

async fn announce(pool: &PgPool, written: HashMap<Uuid, i32>) -> Result<(), sqlx::Error> {
    let projected = Projected {
        projection: PROJECTION.to_owned(),
        rows: None,
        events: written
            .into_iter()
            .map(|(stream_id, version)| AppliedEvent {
                event_type: "PostIndexed".to_owned(),
                stream_id,
                version,
            })
            .collect(),
    };
    for payload in projected.into_payloads() {
        sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, payload)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Documents for these streams as the read models have them now: each post,
/// every post of each user, and each user's marker.
pub async fn documents_of(
    pool: &PgPool,
    schema: &PostIndexSchema,
    posts: &[Uuid],
    users: &[Uuid],
) -> Result<Vec<(Uuid, TantivyDocument)>, IndexerError> {
    let mut documents = Vec::new();
    let rows = sqlx::query_as::<_, PostRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM posts WHERE id = ANY($1) OR author_id = ANY($2)",
        read_posts::COLUMNS
    )))
    .bind(posts)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for row in rows {
        documents.push((row.id, schema.post_document(&row)));
    }
    for row in read_users::by_ids(pool, users).await? {
        documents.push((row.id, schema.marker(row.id, row.version)));
    }
    Ok(documents)
}

/// Writes documents into the live index (not yet committed).
pub async fn write_documents(
    shared: &SharedIndex,
    documents: Vec<(Uuid, TantivyDocument)>,
    versions: HashMap<Uuid, i32>,
) -> Result<(), IndexerError> {
    let mut live = shared.clone().lock_owned().await;
    let live = tokio::task::spawn_blocking(move || {
        for (id, document) in documents {
            live.index.upsert(id, document);
        }
        live.written.extend(versions);
        live
    })
    .await?;
    drop(live);
    Ok(())
}

/// Waits until the read models have applied `wanted` (stream -> version).
async fn wait_for_read_models(
    pool: &PgPool,
    wanted: &HashMap<Uuid, i32>,
    shutdown: &CancellationToken,
) -> Result<bool, IndexerError> {
    let ids: Vec<Uuid> = wanted.keys().copied().collect();
    loop {
        let applied: HashMap<Uuid, i32> = sqlx::query_as::<_, (Uuid, i32)>(
            "SELECT stream_id, version FROM stream_versions WHERE stream_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
        if wanted
            .iter()
            .all(|(id, version)| applied.get(id).is_some_and(|applied| applied >= version))
        {
            return Ok(true);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(READ_MODELS_POLL) => {}
        }
    }
}

pub async fn run(
    settings: IndexerSettings,
    pool: PgPool,
    shared: SharedIndex,
    failures: Failures,
    shutdown: CancellationToken,
) {
    retry::until_ok(
        "the search indexer",
        &shutdown,
        Backoff::standard(),
        || async {
            follow(&settings, &pool, &shared, &shutdown)
                .await
                .inspect_err(|_| {
                    failures.record(Projection::Search);
                    metrics::counter!("chronicle_search_indexer_failures_total").increment(1);
                })
        },
    )
    .await;
    // Finish: commit what was written, so a restart resumes after it.
    if let Err(error) = commit(&shared, &pool).await {
        tracing::warn!(%error, "could not commit the search index at shutdown");
    }
    tracing::info!("search indexer stopped");
}

async fn follow(
    settings: &IndexerSettings,
    pool: &PgPool,
    shared: &SharedIndex,
    shutdown: &CancellationToken,
) -> Result<(), IndexerError> {
    let consumer: StreamConsumer = chronicle_platform::kafka::consumer_config(&settings.brokers)
        .set("group.id", format!("chronicle-search-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .create()?;
    assign(&consumer, settings, shared).await?;
    loop {
        let until_commit = {
            let live = shared.lock().await;
            settings
                .commit_interval
                .saturating_sub(live.last_commit.elapsed())
        };
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(until_commit.max(Duration::from_millis(1))) => {
                commit(shared, pool).await?;
                continue;
            }
            message = consumer.recv() => message?.detach(),
        };
        let messages = fill_batch(&consumer, first, settings.batch_size)?;
        if !index_batch(pool, shared, &messages, shutdown).await? {
            return Ok(());
        }
        let due = shared.lock().await.last_commit.elapsed() >= settings.commit_interval;
        if due {
            commit(shared, pool).await?;
        }
    }
}

/// Assigns every partition of the topic at the index's checkpoint.
async fn assign(
    consumer: &StreamConsumer,
    settings: &IndexerSettings,
    shared: &SharedIndex,
) -> Result<(), IndexerError> {
    let metadata = consumer.fetch_metadata(Some(&settings.topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
        .collect();
    let live = shared.lock().await;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let offset = live
            .offsets
            .get(&partition)
            .map_or(Offset::Beginning, |offset| Offset::Offset(*offset));
        assignment.add_partition_offset(&settings.topic, partition, offset)?;
    }
    consumer.assign(&assignment)?;
    tracing::info!(topic = %settings.topic, generation = live.index.generation(), "indexing posts for search");
    Ok(())
}

/// Indexes what a batch of messages changed; false when shut down first.
async fn index_batch(
    pool: &PgPool,
    shared: &SharedIndex,
    messages: &[rdkafka::message::OwnedMessage],
    shutdown: &CancellationToken,
) -> Result<bool, IndexerError> {
    let mut posts: HashMap<Uuid, i32> = HashMap::new();
    let mut users: HashMap<Uuid, i32> = HashMap::new();
    let mut highest_position = 0;
    let mut erased = false;
    for message in messages {
        // The headers say which stream and version; the payload is the read
        // models' business (an unreadable one is their dead letter).
        let lookup = |name: &str| {
            use rdkafka::message::Headers;
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
            })
        };
        let Ok(envelope) = decode_envelope(lookup) else {
            continue;
        };
        highest_position = highest_position.max(envelope.position);
        if matches!(envelope.event_type.as_str(), "UserErased" | "PostErased") {
            erased = true;
        }
        let streams = match envelope.stream_type {
            StreamType::Post => &mut posts,
            StreamType::User => &mut users,
            StreamType::Comment => continue,
        };
        let version = streams.entry(envelope.stream_id).or_default();
        *version = (*version).max(envelope.version);
    }
    let wanted: HashMap<Uuid, i32> = posts
        .iter()
        .chain(users.iter())
        .map(|(id, version)| (*id, *version))
        .collect();
    if !wanted.is_empty() {
        if !wait_for_read_models(pool, &wanted, shutdown).await? {
            return Ok(false);
        }
        let schema = shared.lock().await.index.schema().clone();
        let post_ids: Vec<Uuid> = posts.keys().copied().collect();
        let user_ids: Vec<Uuid> = users.keys().copied().collect();
        let documents = documents_of(pool, &schema, &post_ids, &user_ids).await?;
        write_documents(shared, documents, wanted).await?;
    }
    let mut live = shared.lock().await;
    for message in messages {
        let next = live.offsets.entry(message.partition()).or_insert(0);
        *next = (*next).max(message.offset() + 1);
    }
    live.applied_position = live.applied_position.max(highest_position);
    live.purge |= erased;
    Ok(true)
}
