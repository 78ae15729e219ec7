//! Rebuilding projections from the event store: identical to the live ones,
//! swapped in with no downtime, triggered by a changed read-model DDL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chronicle_schema::search_schema::IndexLayout;
use chronicle_tests::{TestApp, search, workload};
use projector::rebuild::{Projection, RebuildOptions, digest};
use serde_json::json;

async fn digest_of(app: &TestApp, schema: &str) -> std::collections::BTreeMap<String, String> {
    let mut connection = app.pool.acquire().await.unwrap();
    digest::read_models(&mut connection, schema).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_read_models_and_search_index_are_identical_to_the_live_ones() {
    let app = TestApp::spawn().await;
    workload::blog_activity(&app, 1).await;
    app.drain().await;
    app.drain_search().await;

    app.rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: false })
        .await
        .unwrap();
    let live = digest_of(&app, "read").await;
    let replayed = digest_of(&app, "read_next").await;
    assert_eq!(live, replayed);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM read_next.users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(users >= 4, "the replay is not empty");

    let layout = IndexLayout::new(&app.search_index_dir);
    let live_generation = layout.current().unwrap().unwrap();
    app.rebuilder()
        .run(Projection::Search, RebuildOptions { swap: false })
        .await
        .unwrap();
    let rebuilt_generation = *layout.generations().unwrap().last().unwrap();
    assert_ne!(rebuilt_generation, live_generation);
    let live_documents = search::documents(&layout, live_generation);
    assert!(live_documents.len() >= 12);
    assert_eq!(
        live_documents,
        search::documents(&layout, rebuilt_generation)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_in_while_queries_and_writes_go_on() {
    let app = Arc::new(TestApp::spawn().await);
    workload::blog_activity(&app, 2).await;
    app.drain().await;
    let (_, session) = app.signed_in("steady").await;
    let post = app
        .published_post(&session, "Always readable", &["uptime"])
        .await;

    // A transaction held open elsewhere on the server (another application's)
    // holds the server-wide xmin back: nothing of the rebuild may wait on it,
    // nor lose what the live path applied meanwhile.
    let elsewhere = chronicle_tests::TestDatabase::create().await;
    let elsewhere_pool = elsewhere.pool();
    let mut held = elsewhere_pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *held)
        .await
        .unwrap();

    // Readers that must never see a failure while the rebuild runs and swaps.
    let stop = Arc::new(AtomicBool::new(false));
    let (queries, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (app, stop, queries, failures) = (app.clone(), stop.clone(), queries.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let response = app
                        .graphql("query($id: ID!) { post(id: $id) { title commentCount author { handle postCount } } user(handle: \"steady\") { postCount } }")
                        .variables(json!({"id": post}))
                        .send()
                        .await;
                    queries.fetch_add(1, Ordering::Relaxed);
                    if response.status != 200 || response.body.get("errors").is_some() || response.body["data"]["post"]["title"] != "Always readable" {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("query failed during the rebuild: {}", response.body);
                    }
                }
            })
        })
        .collect();
    // And a writer.
    let writer = {
        let (app, stop, session) = (app.clone(), stop.clone(), session.clone());
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                app.published_post(
                    &session,
                    &format!("During the rebuild {written}"),
                    &["live"],
                )
                .await;
                written += 1;
            }
            written
        })
    };

    let read_models = app
        .rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: true })
        .await
        .unwrap();
    let search = app
        .rebuilder()
        .run(Projection::Search, RebuildOptions { swap: true })
        .await
        .unwrap();
    // Where each rebuild's time went, phase by phase, to its end.
    let phases = |progress: &projector::rebuild::Progress| -> Vec<String> {
        progress.phases.iter().map(|p| p.phase.clone()).collect()
    };
    assert_eq!(
        phases(&read_models),
        [
            "starting",
            "reading the event store",
            "indexing the new tables",
            "catching up",
            "verifying against the live read models",
            "swapping"
        ]
    );
    assert_eq!(
        phases(&search),
        ["starting", "reading the read models", "swapping"]
    );
    let timed: f64 = read_models.phases.iter().map(|p| p.seconds).sum();
    let took = (read_models.finished_at.unwrap() - read_models.started_at.unwrap())
        .num_milliseconds() as f64
        / 1000.0;
    assert!(
        read_models.phases.iter().all(|p| p.seconds >= 0.0) && timed <= took + 0.05,
        "{:?} in {took} s",
        read_models.phases
    );
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let written = writer.await.unwrap();
    held.rollback().await.unwrap();
    elsewhere_pool.close().await;
    chronicle_tests::TestDatabase::drop_now(&elsewhere.name).await;

    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{} of {} queries failed",
        failures.load(Ordering::Relaxed),
        queries.load(Ordering::Relaxed)
    );
    assert!(queries.load(Ordering::Relaxed) > 10);
    assert!(written > 0);
    let generation: i64 = sqlx::query_scalar(
        "SELECT generation FROM projector.generations WHERE projection = 'read_models'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(generation, 2);
    // The live projector carried on into the new tables: nothing lost, nothing twice.
    app.drain().await;
    app.drain_search().await;
    app.rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: false })
        .await
        .unwrap();
    assert_eq!(
        digest_of(&app, "read").await,
        digest_of(&app, "read_next").await
    );
    let posts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM posts WHERE title LIKE 'During the rebuild%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(posts, written as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_read_model_ddl_is_rebuilt_before_the_projector_goes_live() {
    let mut app = TestApp::spawn().await;
    workload::blog_activity(&app, 3).await;
    app.drain().await;
    let before = digest_of(&app, "read").await;

    app.stop_projector().await;
    // As if the running read models had been built by an older release.
    sqlx::query(
        "UPDATE projector.generations SET ddl_hash = 'older' WHERE projection = 'read_models'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    app.start_projector().await;

    let (generation, hash): (i64, String) = sqlx::query_as(
        "SELECT generation, ddl_hash FROM projector.generations WHERE projection = 'read_models'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(generation, 2);
    assert_eq!(hash, projector::read_models::ddl_hash());
    assert_eq!(digest_of(&app, "read").await, before);
}

/// History the bus never carried (older than Kafka's retention, say) reaches
/// the index by a rebuild, and the projection status then counts it as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebuild_the_search_status_counts_what_the_new_index_holds() {
    let app = TestApp::spawn_with(chronicle_tests::TestOptions {
        relay: false,
        ..Default::default()
    })
    .await;
    let written = workload::append_load(&app.pool, 2, 3, 11).await;
    assert!(written > 0);
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // The index is derived from the read models: they are rebuilt first.
    for projection in [Projection::ReadModels, Projection::Search] {
        app.rebuilder()
            .run(projection, RebuildOptions { swap: true })
            .await
            .unwrap();
    }
    chronicle_tests::eventually(
        std::time::Duration::from_secs(30),
        "the search status to count the rebuilt index",
        || async {
            let (state, applied): (String, i64) = sqlx::query_as(
                "SELECT state, applied_position FROM projector.status WHERE projection = 'search'",
            )
            .fetch_optional(&app.pool)
            .await
            .unwrap()
            .unwrap_or_default();
            state == "LIVE" && applied >= last
        },
    )
    .await;
}

/// The swap's check compares every column: a read model the live path got
/// wrong (here, a derived count) stops the swap, and the live one stays,
/// even while some stream is unsettled between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_differs_from_the_live_read_models_in_any_column_is_not_swapped_in() {
    let app = TestApp::spawn().await;
    workload::blog_activity(&app, 3).await;
    app.drain().await;
    let (author, generation): (uuid::Uuid, i64) = sqlx::query_as(
        "SELECT u.id, g.generation FROM users u, projector.generations g \
         WHERE g.projection = 'read_models' AND u.post_count > 0 LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE users SET post_count = post_count + 7 WHERE id = $1")
        .bind(author)
        .execute(&app.pool)
        .await
        .unwrap();
    // And one column of every other table, each of a different type.
    for wrong in [
        "UPDATE posts SET author_active = NOT author_active \
         WHERE id = (SELECT min(id::text)::uuid FROM posts)",
        "UPDATE comments SET body = body || '!' WHERE id = (SELECT min(id::text)::uuid FROM comments)",
        "UPDATE tags SET post_count = post_count + 1 WHERE name = (SELECT min(name) FROM tags)",
    ] {
        let changed = sqlx::query(wrong).execute(&app.pool).await.unwrap();
        assert_eq!(changed.rows_affected(), 1, "{wrong}");
    }
    // A stream the live side has applied and the rebuild has not (as the
    // live projector moves on during every rebuild): only rows derived from
    // it are passed over; every other row is still compared.
    sqlx::query("INSERT INTO stream_versions (stream_id, version, position) VALUES ($1, 1, 0)")
        .bind(uuid::Uuid::new_v4())
        .execute(&app.pool)
        .await
        .unwrap();

    let error = app
        .rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: true })
        .await
        .unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("users") && message.contains(&author.to_string()),
        "{message}"
    );
    for table in ["posts", "comments", "tags"] {
        assert!(
            message.contains(&format!("{table} [")),
            "{table}: {message}"
        );
    }
    let still: i64 = sqlx::query_scalar(
        "SELECT generation FROM projector.generations WHERE projection = 'read_models'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(still, generation, "the live read models stay");
}

/// Rows derived from a stream the two schemas stand at different versions
/// of are passed over by the swap's check: the live projector moves on
/// during every rebuild, and that alone must not refuse the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_derived_from_an_unsettled_stream_do_not_stop_the_swap() {
    let app = TestApp::spawn().await;
    workload::blog_activity(&app, 3).await;
    app.drain().await;
    let (comment, post, author, generation): (uuid::Uuid, uuid::Uuid, uuid::Uuid, i64) =
        sqlx::query_as(
            "SELECT c.id, c.post_id, c.author_id, g.generation \
             FROM comments c, projector.generations g \
             WHERE g.projection = 'read_models' AND c.parent_id IS NULL AND NOT c.deleted \
             LIMIT 1",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // As if the live side had applied the comment's deletion, which the
    // rebuild has not read: the comment, its post's count and its author's
    // count all differ, every one derived from the unsettled comment stream.
    for change in [
        "UPDATE stream_versions SET version = version + 1 WHERE stream_id = $1",
        "UPDATE comments SET deleted = true WHERE id = $1",
        "UPDATE posts SET comment_count = comment_count - 1 WHERE id = $2",
        "UPDATE users SET comment_count = comment_count - 1 WHERE id = $3",
    ] {
        let changed = sqlx::query(change)
            .bind(comment)
            .bind(post)
            .bind(author)
            .execute(&app.pool)
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1, "{change}");
    }
    // And as if it had applied a newcomer taking a handle, and a post taking
    // a slug, that an erasure freed: the rows that gave them up
    // (`users::release_handles`, `posts::release_slugs`) changed with no
    // version of their own.
    let (released_user, handle): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, handle FROM users WHERE id <> $1 LIMIT 1")
            .bind(author)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (released_post, slug): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, slug FROM posts WHERE id <> $1 LIMIT 1")
            .bind(post)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (newcomer, new_post) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for change in [
        "UPDATE users SET handle = '~' || replace(id::text, '-', '') WHERE id = $1",
        "UPDATE posts SET slug = '~' || replace(id::text, '-', '') WHERE id = $2",
        "INSERT INTO users (id, handle, display_name, email, role, joined_at, updated_at, version) \
         SELECT $3, $5, 'Newcomer', 'newcomer@example.com', role, joined_at, updated_at, 1 \
         FROM users WHERE id = $1",
        "INSERT INTO posts (id, slug, title, body, excerpt, status, author_id, author_handle, \
                            author_display_name, created_at, updated_at, version) \
         SELECT $4, $6, title, body, excerpt, 'DRAFT', author_id, author_handle, \
                author_display_name, created_at, updated_at, 1 \
         FROM posts WHERE id = $2",
        "INSERT INTO stream_versions (stream_id, version, position) \
         VALUES ($3, 1, 0), ($4, 1, 0)",
    ] {
        // Every statement is given all six; each uses those it names.
        let changed = sqlx::query(change)
            .bind(released_user)
            .bind(released_post)
            .bind(newcomer)
            .bind(new_post)
            .bind(&handle)
            .bind(&slug)
            .execute(&app.pool)
            .await;
        assert!(changed.unwrap().rows_affected() >= 1, "{change}");
    }

    app.rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: true })
        .await
        .unwrap();

    let swapped: i64 = sqlx::query_scalar(
        "SELECT generation FROM projector.generations WHERE projection = 'read_models'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(swapped, generation + 1, "the rebuild is live");
    let deleted: bool = sqlx::query_scalar("SELECT deleted FROM comments WHERE id = $1")
        .bind(comment)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        !deleted,
        "the live tables are the rebuilt ones, as the store says"
    );
}
