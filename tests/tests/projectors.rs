//! Several projector instances in one consumer group keep the read models
//! right: derived columns (counts, authors' names and standing copied onto
//! posts, tag counts) come out as a replay of the store computes them, under
//! concurrent writers that share authors and tags and through a rebalance.

use std::time::Duration;

use chronicle_schema::events::{PostCreated, PostPublished, UserDeactivated, UserRegistered};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use chronicle_tests::{TestApp, TestOptions, history};
use uuid::Uuid;

async fn append_together(app: &TestApp, appends: Vec<(Uuid, StreamType, i32, Vec<DomainEvent>)>) {
    let mut transaction = app.pool.begin().await.unwrap();
    for (stream, stream_type, base, events) in appends {
        let command_id = Uuid::now_v7();
        command_service::event_store::append(
            &mut transaction,
            stream,
            stream_type,
            base,
            &events,
            &EventMetadata {
                command_id,
                correlation_id: command_id,
                causation_id: command_id,
                actor_id: None,
                traceparent: None,
            },
            &Default::default(),
        )
        .await
        .unwrap();
    }
    transaction.commit().await.unwrap();
}

fn registered(handle: &str) -> DomainEvent {
    UserRegistered {
        email: format!("{handle}@example.com"),
        handle: handle.to_owned(),
        display_name: handle.to_owned(),
        role: Role::User,
    }
    .into()
}

fn created(author: Uuid, handle: &str, slug: &str) -> DomainEvent {
    PostCreated {
        author_id: author,
        author_handle: handle.to_owned(),
        slug: slug.to_owned(),
        title: slug.to_owned(),
        body: "body".into(),
        tags: vec!["shared".into(), "skew".into()],
    }
    .into()
}

/// The write skews seen with two instances: two posts of one author in one
/// transaction (their partitions differ, each counted the author's posts
/// without the other), and a post created in the transaction that
/// deactivates its author (the post copied a standing the deactivation never
/// saw).
async fn skew_prone_writes(app: &TestApp, authors: usize, seed: usize) {
    for index in 0..authors {
        let handle = format!("skew{seed}_{index}");
        let author = Uuid::now_v7();
        append_together(
            app,
            vec![(author, StreamType::User, 0, vec![registered(&handle)])],
        )
        .await;
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        append_together(
            app,
            vec![
                (
                    first,
                    StreamType::Post,
                    0,
                    vec![
                        created(author, &handle, &format!("{handle}-a")),
                        PostPublished {}.into(),
                    ],
                ),
                (
                    second,
                    StreamType::Post,
                    0,
                    vec![
                        created(author, &handle, &format!("{handle}-b")),
                        PostPublished {}.into(),
                    ],
                ),
            ],
        )
        .await;
        if index % 2 == 0 {
            append_together(
                app,
                vec![
                    (
                        Uuid::now_v7(),
                        StreamType::Post,
                        0,
                        vec![
                            created(author, &handle, &format!("{handle}-c")),
                            PostPublished {}.into(),
                        ],
                    ),
                    (author, StreamType::User, 1, vec![UserDeactivated {}.into()]),
                ],
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_projectors_in_one_group_through_a_rebalance_build_what_a_replay_builds() {
    let app = TestApp::spawn_with(TestOptions {
        partitions: 6,
        projector_batch_size: 50,
        ..TestOptions::default()
    })
    .await;
    let second = app.spawn_extra_projector("second").await;
    let third = app.spawn_extra_projector("third").await;

    // Concurrent writers sharing authors and tags, with a rebalance mid-run:
    // one instance leaves, another joins.
    let writers = async {
        tokio::join!(
            history::random_history(&app.pool, 11, 250),
            history::random_history(&app.pool, 12, 250),
            skew_prone_writes(&app, 40, 1),
        )
    };
    let rebalance = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        third.stop().await;
        app.spawn_extra_projector("fourth").await
    };
    let (_, fourth) = tokio::join!(writers, rebalance);
    skew_prone_writes(&app, 20, 2).await;
    app.drain().await;
    app.drain_search().await;

    // Every column of every read model, as a replay of the store builds it.
    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed);
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users u WHERE u.handle LIKE 'skew%' AND u.post_count <> \
         (SELECT count(*) FROM posts p WHERE p.author_id = u.id AND p.public)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    let public_of_inactive: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM posts p JOIN users u ON u.id = p.author_id WHERE NOT u.active AND p.author_active",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        public_of_inactive, 0,
        "a deactivated author's post stayed public"
    );

    // And the search index (derived from those rows) as a rebuild makes it.
    let (live, rebuilt) = app.search_documents_live_and_rebuilt().await;
    assert_eq!(live, rebuilt);
    drop(second);
    drop(fourth);
}
