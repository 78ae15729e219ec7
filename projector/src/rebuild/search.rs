//! Rebuilding the search index as a new generation and swapping it in.
//!
//! Documents are derived from the read models' rows, so the rebuild reads
//! the live rows (not the event store): every post, and a marker per user,
//! in short keyset-paged reads. At the swap, with the live indexer paused,
//! every row that changed since it was read (its version, or whether it is
//! public: a deactivation changes that without a post event) is indexed
//! again, and the new generation continues from the live indexer's offsets.

use std::collections::HashMap;

use chronicle_schema::read_models::posts::{self, PostRow};
use chronicle_schema::search_schema::PostIndexSchema;
use sqlx::PgPool;
use uuid::Uuid;

use super::{RebuildError, RebuildOptions, Rebuilder, Tracker, in_the_background};
use crate::search::PostIndex;
use crate::search::indexer;

/// Rows read per query.
const PAGE: i64 = 5_000;

/// What each indexed document reflects: (version, public).
type Indexed = HashMap<Uuid, (i32, bool)>;

pub(super) async fn rebuild(
    rebuilder: &Rebuilder,
    tracker: &Tracker,
    options: RebuildOptions,
) -> Result<(), RebuildError> {
    let generation = rebuilder.layout.generations()?.last().copied().unwrap_or(0) + 1;
    let result = async {
        let (owned, tracked) = (rebuilder.clone(), tracker.clone());
        let indexed =
            in_the_background(async move { build(&owned, &tracked, generation).await }).await?;
        if options.swap {
            swap(rebuilder, tracker, generation, indexed).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() && rebuilder.layout.current().ok().flatten() != Some(generation) {
        // A half-built generation would keep text (of people erased since,
        // too) that nothing updates any more.
        let dir = rebuilder.layout.generation_dir(generation);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "could not remove the failed index generation");
        }
    }
    result
}

/// Builds `generation` from the read models and commits it, on the
/// rebuild's own thread: the index writer's threads are made here and
/// inherit its low priority. They end with the writer, before the swap.
async fn build(
    rebuilder: &Rebuilder,
    tracker: &Tracker,
    generation: u64,
) -> Result<Indexed, RebuildError> {
    let pool = &rebuilder.pool;
    let mut index = PostIndex::open(&rebuilder.layout, generation)?;
    let schema = index.schema().clone();

    tracker.phase("reading the read models");
    let total: i64 =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM posts) + (SELECT count(*) FROM users)")
            .fetch_one(pool)
            .await?;
    tracker.total(total as u64);
    let mut indexed = Indexed::new();
    let mut after = Uuid::nil();
    loop {
        let rows = page_of_posts(pool, after).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let count = rows.len() as u64;
        index = write(index, &schema, rows, &mut indexed);
        tracker.processed(count);
    }
    let markers = markers_changed(pool, &Indexed::new()).await?;
    tracker.processed(markers.len() as u64);
    index = write_markers(index, &schema, markers, &mut indexed);
    // The live checkpoint of now: what a build left unswapped reflects.
    let checkpoint = rebuilder.live_index.lock().await.checkpoint();
    index.commit(&checkpoint)?;
    Ok(indexed)
}

/// Makes `generation` live: the rows changed since they were read are
/// indexed again, with the live indexer paused. Runs at normal priority,
/// and so does the writer it opens, which the live indexer goes on with.
async fn swap(
    rebuilder: &Rebuilder,
    tracker: &Tracker,
    generation: u64,
    mut indexed: Indexed,
) -> Result<(), RebuildError> {
    let pool = &rebuilder.pool;
    tracker.phase("swapping");
    let layout = rebuilder.layout.clone();
    let mut index =
        tokio::task::spawn_blocking(move || PostIndex::open(&layout, generation)).await??;
    let schema = index.schema().clone();
    // Pause the live indexer: its index and offsets are ours until the swap is done.
    let live = rebuilder.live_index.clone().lock_owned().await;
    // What changed since it was read is indexed again, as the rows are now.
    let reflected: i64 =
        sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM stream_versions")
            .fetch_one(pool)
            .await?;
    let changed = posts_changed(pool, &indexed).await?;
    index = write(index, &schema, changed, &mut indexed);
    let markers = markers_changed(pool, &indexed).await?;
    index = write_markers(index, &schema, markers, &mut indexed);
    // The new index holds every row the live indexer's offsets cover.
    let checkpoint = live.checkpoint();
    let layout = rebuilder.layout.clone();
    let (index, live_back) = tokio::task::spawn_blocking(move || -> Result<_, RebuildError> {
        index.commit(&checkpoint)?;
        layout.set_current(index.generation())?;
        Ok((index, live))
    })
    .await??;
    let mut live = live_back;
    let retired = std::mem::replace(&mut live.index, index).generation();
    live.written.clear();
    // The rows written again above left deleted documents in the new
    // generation: purged at its next commit, erased text included.
    live.purge = true;
    // The new generation reflects the read models as they were at the swap.
    live.applied_position = live.applied_position.max(reflected);
    drop(live);
    indexer::commit(&rebuilder.live_index, pool).await?;
    // Readers switch generations when they see CURRENT change; the old files
    // can go (readers that still hold them keep their open handles).
    let old = rebuilder.layout.generation_dir(retired);
    if let Err(error) = std::fs::remove_dir_all(&old) {
        tracing::warn!(%error, dir = %old.display(), "could not remove the retired index generation");
    }
    announce_generation(pool).await?;
    Ok(())
}

async fn page_of_posts(pool: &PgPool, after: Uuid) -> Result<Vec<PostRow>, sqlx::Error> {
    sqlx::query_as::<_, PostRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM posts WHERE id > $1 ORDER BY id LIMIT $2",
        posts::COLUMNS
    )))
    .bind(after)
    .bind(PAGE)
    .fetch_all(pool)
    .await
}

/// Posts whose row is not what was indexed (or that were not indexed):
/// found by version and `public` alone, then only those read whole (the
/// swap pauses the live indexer; reading every body again took seconds).
async fn posts_changed(pool: &PgPool, indexed: &Indexed) -> Result<Vec<PostRow>, sqlx::Error> {
    let states: Vec<(Uuid, i32, bool)> = sqlx::query_as("SELECT id, version, public FROM posts")
        .fetch_all(pool)
        .await?;
    let ids: Vec<Uuid> = states
        .into_iter()
        .filter(|(id, version, public)| indexed.get(id) != Some(&(*version, *public)))
        .map(|(id, ..)| id)
        .collect();
    let mut changed = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PAGE as usize) {
        changed.extend(posts::by_ids(pool, chunk).await?);
    }
    Ok(changed)
}

/// Users whose marker is not at their version.
async fn markers_changed(
    pool: &PgPool,
    indexed: &Indexed,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    let users: Vec<(Uuid, i32)> = sqlx::query_as("SELECT id, version FROM users")
        .fetch_all(pool)
        .await?;
    Ok(users
        .into_iter()
        .filter(|(id, version)| indexed.get(id).map(|(indexed, _)| indexed) != Some(version))
        .collect())
}

/// Runs on the rebuild's own thread (`in_the_background`) for the build:
/// making documents parses every body, and held an async worker for half a
/// second a page.
fn write(
    mut index: PostIndex,
    schema: &PostIndexSchema,
    rows: Vec<PostRow>,
    indexed: &mut Indexed,
) -> PostIndex {
    for row in &rows {
        let document = schema.post_document(row);
        put(
            &mut index,
            indexed,
            row.id,
            (row.version, row.is_public()),
            document,
        );
    }
    index
}

/// `indexed` is what this generation holds: a stream it has no document
/// for is added without a delete (which tantivy looks up in every segment).
fn put(
    index: &mut PostIndex,
    indexed: &mut Indexed,
    id: Uuid,
    reflects: (i32, bool),
    document: tantivy::TantivyDocument,
) {
    match indexed.insert(id, reflects) {
        None => index.add_new(document),
        Some(_) => index.upsert(id, document),
    }
}

fn write_markers(
    mut index: PostIndex,
    schema: &PostIndexSchema,
    markers: Vec<(Uuid, i32)>,
    indexed: &mut Indexed,
) -> PostIndex {
    for (id, version) in markers {
        put(
            &mut index,
            indexed,
            id,
            (version, false),
            schema.marker(id, version),
        );
    }
    index
}

/// Tells readers a new generation is live.
async fn announce_generation(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(&chronicle_schema::projected::Projected {
        projection: indexer::PROJECTION.to_owned(),
        events: Vec::new(),
        rows: None,
    })
    .expect("plain data serialises");
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(chronicle_schema::projected::CHANNEL)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}
