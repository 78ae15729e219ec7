//! The read models are one model however they are built: random histories,
//! applied by the live path on three concurrent appliers (as three projector
//! instances sharing a topic's partitions would), with messages lost on the
//! way (holes filled from the store), equal a rebuild from the store on
//! every column. No Kafka: the live path's own code, on a database of its own.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::{StoreCursor, fence, read_committed};
use chronicle_schema::privacy::Keyring;
use chronicle_schema::search_schema::IndexLayout;
use chronicle_tests::{TestDatabase, history};
use projector::apply::{self, Incoming};
use projector::rebuild::{Projection, RebuildOptions, Rebuilder, digest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

const APPLIERS: usize = 3;

async fn stored_events(pool: &PgPool) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut cursor = StoreCursor::start();
    loop {
        let horizon = fence::horizon(pool).await.unwrap();
        let batch = read_committed(pool, &cursor, &horizon, 1_000)
            .await
            .unwrap();
        let Some((last, _)) = batch.last() else { break };
        cursor = last.clone();
        let keys = Keyring::for_payloads(pool, batch.iter().map(|(_, row)| &row.payload))
            .await
            .unwrap();
        events.extend(
            batch
                .into_iter()
                .map(|(_, row)| RecordedEvent::open(row, &keys).unwrap()),
        );
    }
    events
}

/// One applier's share, as a partition of the topic would carry it: every
/// event of its streams in order, some of them lost (never the last of a
/// stream: a later one fills the hole).
fn partitions(events: Vec<RecordedEvent>, rng: &mut StdRng) -> Vec<Vec<RecordedEvent>> {
    let last_of: HashMap<Uuid, i32> = events.iter().fold(HashMap::new(), |mut last, event| {
        let version = last.entry(event.stream_id).or_insert(0);
        *version = (*version).max(event.version);
        last
    });
    let mut partitions = vec![Vec::new(); APPLIERS];
    for event in events {
        let lost = event.version < last_of[&event.stream_id] && rng.random_ratio(1, 25);
        if !lost {
            let partition = (event.stream_id.as_u128() % APPLIERS as u128) as usize;
            partitions[partition].push(event);
        }
    }
    partitions
}

/// Applies a partition in random batch sizes, retrying a batch a deadlock or
/// other transient failure refused (as the consumer does).
async fn apply_partition(pool: PgPool, events: Vec<RecordedEvent>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut incoming: Vec<Incoming> = events.into_iter().map(Incoming::Event).collect();
    while !incoming.is_empty() {
        let size = rng.random_range(1..=40).min(incoming.len());
        let batch: Vec<Incoming> = incoming.drain(..size).collect();
        let mut attempts = 0;
        loop {
            match apply::apply_batch(&pool, &batch).await {
                Ok(_) => break,
                Err(error) => {
                    attempts += 1;
                    assert!(attempts < 20, "a batch keeps failing: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_histories_applied_live_by_concurrent_appliers_equal_a_rebuild_on_every_column() {
    let run = chronicle_tests::random_seed();
    for case in 0..5 {
        let seed = run.wrapping_add(case);
        let database = TestDatabase::create().await;
        let pool = database.pool();
        let written = history::random_history(&pool, seed, 300).await;
        assert!(written > 200);
        let mut rng = StdRng::seed_from_u64(seed);
        let appliers: Vec<_> = partitions(stored_events(&pool).await, &mut rng)
            .into_iter()
            .enumerate()
            .map(|(index, events)| {
                tokio::spawn(apply_partition(pool.clone(), events, seed + index as u64))
            })
            .collect();
        for applier in appliers {
            applier.await.unwrap();
        }

        let index_dir = std::env::temp_dir().join(format!("chronicle-prop-{}", Uuid::new_v4()));
        let layout = IndexLayout::new(&index_dir);
        let live_index = projector::search::indexer::open_live(&layout, "unused").unwrap();
        let rebuilder = Rebuilder::new(
            pool.clone(),
            database.url.clone(),
            layout,
            std::sync::Arc::new(tokio::sync::Mutex::new(live_index)),
        );
        rebuilder
            .run(Projection::ReadModels, RebuildOptions { swap: false })
            .await
            .unwrap();
        let mut connection = pool.acquire().await.unwrap();
        let live = digest::read_models(&mut connection, "read").await.unwrap();
        let rebuilt = digest::read_models(&mut connection, "read_next")
            .await
            .unwrap();
        drop(connection);
        pool.close().await;
        TestDatabase::drop_now(&database.name).await;
        let _ = std::fs::remove_dir_all(index_dir);
        assert_eq!(
            live, rebuilt,
            "live and rebuilt differ for seed {seed} (rerun with CHRONICLE_SEED={run})"
        );
    }
}

/// Rows of no one in the history, in every read-model table.
const BYSTANDERS: i64 = 3_000;

/// Runs of one prepared statement after which Postgres may keep a plan made
/// for any arguments (it plans the first five for their own).
const PLANS_SETTLE: usize = 6;

/// Adds the bystanders: as many users, each with a public post that has a
/// comment and with a draft changed later than any public post, and as many
/// stream versions, with values as varied as real ones (so the planner's
/// statistics see no single author or tag owning the table). A selective
/// statement about the history never reads them.
async fn add_bystanders(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO read.users (id, handle, display_name, email, role, joined_at, updated_at, version)
         SELECT gen_random_uuid(), 'bystander-' || n, 'Bystander', 'bystander-' || n || '@example.com',
                'USER', now(), now(), 1
         FROM generate_series(1, $1) AS n",
    )
    .bind(BYSTANDERS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO read.stream_versions (stream_id, version, position)
         SELECT gen_random_uuid(), 1, 0 FROM generate_series(1, $1) AS n",
    )
    .bind(BYSTANDERS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::raw_sql(
        "INSERT INTO read.posts (id, slug, title, body, excerpt, status, tags, author_id,
                                 author_handle, author_display_name, comment_count, created_at,
                                 updated_at, published_at, version)
         SELECT gen_random_uuid(), u.handle || '-' || status, 'B', 'B', 'B', status,
                ARRAY['bystander-' || substring(u.handle FROM 11)::int % 100], u.id, u.handle,
                u.display_name, 1, now() - interval '1 day',
                CASE status WHEN 'DRAFT' THEN now() + interval '1 hour' ELSE now() END,
                CASE status WHEN 'DRAFT' THEN NULL ELSE now() END, 2
         FROM read.users u, (VALUES ('PUBLISHED'), ('DRAFT')) AS statuses(status)
         WHERE u.handle LIKE 'bystander-%';
         INSERT INTO read.comments (id, post_id, author_id, body, created_at, version)
         SELECT gen_random_uuid(), p.id, p.author_id, 'B', now(), 1
         FROM read.posts p WHERE p.slug LIKE 'bystander-%' AND p.status = 'PUBLISHED';
         ANALYZE;",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Per read-model table, the rows and index entries this transaction has
/// read so far (sequential scans and every index's scans).
async fn rows_read(connection: &mut sqlx::PgConnection) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT t.relname::text,
                (pg_stat_get_xact_tuples_returned(t.oid)
                 + COALESCE(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0))::int8
         FROM pg_class t
         JOIN pg_namespace n ON n.oid = t.relnamespace
         LEFT JOIN pg_index i ON i.indrelid = t.oid
         WHERE n.nspname = 'read' AND t.relkind = 'r'
         GROUP BY t.oid, t.relname",
    )
    .fetch_all(connection)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every statement of the live path reads only the rows it is about: one
/// that cannot find them through an index (a recount by author over a
/// partial index it may not use, say) reads the whole table for each batch
/// that reaches it, a fraction of a second per batch at a hundred thousand
/// posts, and every reader waits behind it. Each statement is planned as
/// the projector's are once it has run them a few times: one plan for any
/// arguments (a generic plan guesses at an array's length, and a join on
/// its guess may hash a whole table). What is checked is how much each
/// batch read, by any scan: never the bystanders.
#[tokio::test]
async fn the_live_path_reads_only_the_rows_a_batch_is_about() {
    let seed = chronicle_tests::random_seed();
    let database = TestDatabase::create().await;
    let pool = database.pool();
    history::random_history(&pool, seed, 300).await;
    let events = stored_events(&pool).await;
    add_bystanders(&pool).await;

    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let mut incoming: Vec<Incoming> = events.into_iter().map(Incoming::Event).collect();
    let mut too_much = Vec::new();
    while !incoming.is_empty() {
        let batch: Vec<Incoming> = incoming.drain(..incoming.len().min(20)).collect();
        let before = rows_read(&mut transaction).await;
        apply::apply_within(&mut transaction, &batch, apply::LIVE)
            .await
            .unwrap();
        for (table, read) in rows_read(&mut transaction).await {
            let read = read - before.get(&table).copied().unwrap_or(0);
            if read >= BYSTANDERS {
                too_much.push((table, read));
            }
        }
    }
    drop(transaction);
    pool.close().await;
    TestDatabase::drop_now(&database.name).await;
    assert_eq!(
        too_much,
        Vec::<(String, i64)>::new(),
        "batches that read a table whole, with the rows they read (seed {seed})"
    );
}

/// A page of any post list, either way from either end or from a cursor,
/// reads about a page: never every post of its scope, as a sort of the
/// whole scope, a filter no index serves, or a plan made for any tag (a
/// prepared statement's, after a few runs) would.
#[tokio::test]
async fn every_page_of_posts_reads_a_page_not_the_table() {
    use chrono::Utc;
    use query_service::graphql::query::PostOrder;
    use query_service::read_models::lists::{
        Page, PostScope, SortKey, fetch_page, posts_statement,
    };

    let seed = chronicle_tests::random_seed();
    let database = TestDatabase::create().await;
    let pool = database.pool();
    history::random_history(&pool, seed, 300).await;
    let events: Vec<Incoming> = stored_events(&pool)
        .await
        .into_iter()
        .map(Incoming::Event)
        .collect();
    for batch in events.chunks(50) {
        apply::apply_batch(&pool, batch).await.unwrap();
    }
    add_bystanders(&pool).await;
    let (author_id, handle): (Uuid, String) =
        sqlx::query_as("SELECT id, handle FROM users WHERE handle NOT LIKE 'bystander-%' LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let tag: String =
        sqlx::query_scalar("SELECT name FROM tags WHERE name NOT LIKE 'bystander-%' LIMIT 1")
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap_or_else(|| "none".into());

    let public = PostScope::default();
    let scopes = [
        ("public", public.clone(), false),
        (
            "by handle",
            PostScope {
                author_handle: Some(handle),
                ..public.clone()
            },
            false,
        ),
        (
            "by author",
            PostScope {
                author_id: Some(author_id),
                ..public.clone()
            },
            false,
        ),
        (
            "by tag",
            PostScope {
                tag: Some(tag),
                ..public.clone()
            },
            false,
        ),
        (
            "drafts",
            PostScope {
                drafts: true,
                ..public.clone()
            },
            true,
        ),
        (
            "an author's drafts",
            PostScope {
                drafts: true,
                drafts_of: Some(author_id),
                ..public
            },
            true,
        ),
    ];
    let orders = [
        PostOrder::PublishedAtDesc,
        PostOrder::PublishedAtAsc,
        PostOrder::UpdatedAtDesc,
        PostOrder::CommentCountDesc,
    ];
    let mut transaction = pool.begin().await.unwrap();
    let mut too_much = Vec::new();
    for (name, scope, drafts) in &scopes {
        for order in orders {
            // Drafts have no publication time: their lists go by the last
            // change. Known and left: by comment count, drafts are sorted
            // whole (no index orders them so).
            if *drafts && order != PostOrder::UpdatedAtDesc {
                continue;
            }
            let middle = match order {
                PostOrder::CommentCountDesc => SortKey::Count(1),
                _ => SortKey::Time(Some(Utc::now() - chrono::Duration::minutes(1))),
            };
            let mut pages = vec![(true, None), (false, None)];
            // Known and left: a narrow scope (an author, a tag) by comment
            // count from a cursor deep in the counts walks the comment-count
            // index past every post with fewer comments.
            if !(order == PostOrder::CommentCountDesc && *name != "public") {
                pages.push((true, Some((middle.clone(), Uuid::max()))));
                pages.push((false, Some((middle, Uuid::nil()))));
            }
            for (forward, cursor) in pages {
                let page = Page {
                    forward,
                    size: 20,
                    cursor: cursor.clone(),
                };
                // Run as the query-service runs it, often enough for
                // Postgres to settle on the plan it keeps; the last run counts.
                for _ in 0..PLANS_SETTLE {
                    let statement = posts_statement("SELECT id", scope, order.order(), &page);
                    fetch_page::<(Uuid,)>(&mut *transaction, statement, &page)
                        .await
                        .unwrap();
                }
                let before = rows_read(&mut transaction).await;
                let statement = posts_statement("SELECT id", scope, order.order(), &page);
                fetch_page::<(Uuid,)>(&mut *transaction, statement, &page)
                    .await
                    .unwrap();
                for (table, read) in rows_read(&mut transaction).await {
                    let read = read - before.get(&table).copied().unwrap_or(0);
                    if read >= BYSTANDERS {
                        too_much.push(format!(
                            "{name}, {order:?}, forward {forward}, cursor {}: {read} of {table}",
                            cursor.is_some()
                        ));
                    }
                }
            }
        }
    }
    drop(transaction);
    pool.close().await;
    TestDatabase::drop_now(&database.name).await;
    assert!(
        too_much.is_empty(),
        "pages that read the table (seed {seed}):\n{}",
        too_much.join("\n")
    );
}
