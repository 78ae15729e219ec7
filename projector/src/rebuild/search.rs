//! Rebuilding the search index as a new generation and swapping it in.

use std::collections::{HashMap, HashSet};

use chronicle_schema::events::{StoreCursor, horizon, read_committed};
use chronicle_schema::{RecordedEvent, StreamType};
use uuid::Uuid;

use super::{READ_BATCH, RebuildError, RebuildOptions, Rebuilder, Tracker, count_below};
use crate::search::indexer::{self, load_posts};
use crate::search::{PostIndex, SearchPost};

pub(super) async fn rebuild(
    rebuilder: &Rebuilder,
    tracker: &Tracker<'_>,
    options: RebuildOptions,
) -> Result<(), RebuildError> {
    let pool = &rebuilder.pool;
    let layout = rebuilder.layout.clone();
    let generation = layout.generations()?.last().copied().unwrap_or(0) + 1;
    let mut index =
        tokio::task::spawn_blocking(move || PostIndex::open(&layout, generation)).await??;

    tracker.phase("reading the event store");
    let horizon = horizon(pool).await?;
    tracker.total(count_below(pool, &horizon).await?);
    let mut posts: HashMap<Uuid, Option<SearchPost>> = HashMap::new();
    let mut cursor = StoreCursor::start();
    loop {
        let batch = read_committed(pool, &cursor, Some(&horizon), READ_BATCH).await?;
        let Some((last, _)) = batch.last() else { break };
        cursor = last.clone();
        let count = batch.len() as u64;
        for (_, row) in batch
            .into_iter()
            .filter(|(_, row)| row.stream_type == StreamType::Post.as_str())
        {
            let event = RecordedEvent::try_from(row)?;
            SearchPost::apply(posts.entry(event.stream_id).or_default(), &event);
        }
        tracker.processed(count);
    }

    tracker.phase("writing the new index");
    let folded: Vec<SearchPost> = posts.into_values().flatten().collect();
    index = tokio::task::spawn_blocking(move || {
        for post in &folded {
            index.upsert(post);
        }
        index
    })
    .await?;

    tracker.phase("catching up");
    while catch_up(rebuilder, &mut index, &mut cursor, tracker).await? > 0 {}

    if !options.swap {
        let mut index = index;
        let checkpoint = rebuilder.live_index.lock().await.checkpoint();
        tokio::task::spawn_blocking(move || index.commit(&checkpoint)).await??;
        return Ok(());
    }

    tracker.phase("swapping");
    // Pause the live indexer: its index and offsets are ours until the swap is done.
    let live = rebuilder.live_index.clone().lock_owned().await;
    while catch_up(rebuilder, &mut index, &mut cursor, tracker).await? > 0 {}
    // The new index holds everything committed below the horizon now, so
    // everything the live indexer read from the bus: it continues from there.
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
    // The new generation holds the store up to the cursor: its lag starts there.
    live.applied_position = live.applied_position.max(cursor.position);
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

/// Re-folds from the store every post changed after `cursor`; answers how many events.
async fn catch_up(
    rebuilder: &Rebuilder,
    index: &mut PostIndex,
    cursor: &mut StoreCursor,
    tracker: &Tracker<'_>,
) -> Result<usize, RebuildError> {
    let batch = read_committed(&rebuilder.pool, cursor, None, READ_BATCH).await?;
    let Some((last, _)) = batch.last() else {
        return Ok(0);
    };
    *cursor = last.clone();
    let count = batch.len();
    let touched: HashSet<Uuid> = batch
        .iter()
        .filter(|(_, row)| row.stream_type == StreamType::Post.as_str())
        .map(|(_, row)| row.stream_id)
        .collect();
    let ids: Vec<Uuid> = touched.into_iter().collect();
    for post in load_posts(&rebuilder.pool, &ids).await? {
        index.upsert(&post);
    }
    tracker.processed(count as u64);
    Ok(count)
}

/// Tells readers a new generation is live.
async fn announce_generation(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(&chronicle_schema::projected::Projected {
        projection: indexer::PROJECTION.to_owned(),
        events: Vec::new(),
    })
    .expect("plain data serialises");
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(chronicle_schema::projected::CHANNEL)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}
