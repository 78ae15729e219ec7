//! Faults, against real services: Kafka gone while writes go on, Postgres
//! restarted under the services. Nothing accepted is lost or doubled, and the
//! services recover by themselves.

use std::time::{Duration, Instant};

use chronicle_tests::broker::PrivateBroker;
use chronicle_tests::{TestApp, TestOptions, begin_outage, end_outage};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_down_writes_are_accepted_and_projected_exactly_once_when_it_returns() {
    let mut broker = PrivateBroker::start().await;
    let app = TestApp::spawn_with(TestOptions {
        kafka_brokers: Some(broker.address.clone()),
        consistency_timeout_ms: 1_500,
        ..TestOptions::default()
    })
    .await;
    let (_, ada) = app.signed_in("ada").await;

    broker.stop();
    let mut tokens = Vec::new();
    for number in 0..5 {
        let response = app
            .graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } version consistencyToken } }")
            .variables(json!({"input": {"title": format!("Written while Kafka was down {number}"), "body": "b"}}))
            .bearer(&ada.access_token)
            .send()
            .await;
        // Accepted: committed in Postgres, its read-back pending, said so.
        let payload = &response.data()["createPost"];
        assert_eq!(payload["post"], Value::Null);
        assert_eq!(payload["version"], 1);
        let token = payload["consistencyToken"].as_str().unwrap().to_owned();
        assert_eq!(
            response.body["extensions"]["consistency"]["pendingWrites"][0],
            token.as_str()
        );
        tokens.push(token);
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type = 'PostCreated'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 5, "every write is committed while Kafka is down");

    broker.resume().await;
    // The relay catches up by itself; then each write reads back by its token.
    app.drain().await;
    for token in &tokens {
        let read = app
            .graphql("{ posts(filter: {status: DRAFT}) { totalCount } }")
            .bearer(&ada.access_token)
            .header("x-consistency-token", token)
            .send()
            .await;
        assert_eq!(read.data()["posts"]["totalCount"], 5);
    }
    let (posts, versions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM posts WHERE title LIKE 'Written while Kafka was down%'), \
                (SELECT count(*) FROM stream_versions v JOIN posts p ON p.id = v.stream_id WHERE v.version = 1)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((posts, versions), (5, 5), "each write projected once");
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM projector.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_restarting_requests_fail_fast_and_the_services_recover_by_themselves() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    app.published_post(&ada, "Before the restart", &[]).await;

    begin_outage(&app.database).await;

    let started = Instant::now();
    let read = app.graphql("{ posts { totalCount } }").send().await;
    assert_eq!(read.error_code(), "UNAVAILABLE", "{}", read.body);
    let write = app
        .graphql("mutation { createPost(input: {title: \"During\", body: \"b\"}) { version } }")
        .bearer(&ada.access_token)
        .send()
        .await;
    assert_eq!(write.error_code(), "UNAVAILABLE", "{}", write.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed in {:?}, not fast",
        started.elapsed()
    );
    let ready = app
        .http
        .get(format!("{}/health/ready", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    end_outage(&app.database).await;

    // Nobody restarts anything: reads, writes, relay and projector resume.
    chronicle_tests::eventually(Duration::from_secs(30), "reads to work again", || async {
        app.graphql("{ posts { totalCount } }")
            .send()
            .await
            .body
            .get("errors")
            .is_none()
    })
    .await;
    let after = app.published_post(&ada, "After the restart", &[]).await;
    let read = app
        .graphql("query($id: ID!) { post(id: $id) { title } }")
        .variables(json!({"id": after}))
        .send()
        .await;
    assert_eq!(read.data()["post"]["title"], "After the restart");
    for service in [
        app.command_url(),
        app.projector_url().unwrap(),
        app.query_url(),
    ] {
        let url = format!("{service}/health/ready");
        chronicle_tests::eventually(Duration::from_secs(30), &url, || async {
            app.http
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
    }
}
