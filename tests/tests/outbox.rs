//! The outbox relay: every committed event reaches Kafka, none skipped, none
//! phantom, per-stream order kept, even when transactions commit out of order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chronicle_schema::events::{UserEvent, UserProfileUpdated};
use chronicle_schema::{DomainEvent, EventMetadata, StreamType};
use chronicle_tests::{BusMessage, TestApp, TestOptions, read_topic};
use command_service::event_store::{self, AppendContext};
use sqlx::PgConnection;
use uuid::Uuid;

fn metadata() -> EventMetadata {
    let command_id = Uuid::now_v7();
    EventMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor_id: None,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

fn renamed(name: &str) -> Vec<DomainEvent> {
    vec![DomainEvent::User(UserEvent::ProfileUpdated(
        UserProfileUpdated {
            display_name: name.to_owned(),
            bio: None,
        },
    ))]
}

async fn append(connection: &mut PgConnection, stream_id: Uuid, name: &str) -> i32 {
    let base = event_store::current_version(&mut *connection, stream_id)
        .await
        .unwrap();
    event_store::append(
        connection,
        stream_id,
        StreamType::User,
        base,
        &renamed(name),
        &metadata(),
        &AppendContext::default(),
    )
    .await
    .unwrap()
}

async fn commit_one(app: &TestApp, stream_id: Uuid, name: &str) {
    let mut transaction = app.pool.begin().await.unwrap();
    append(&mut transaction, stream_id, name).await;
    transaction.commit().await.unwrap();
}

fn write_side_only() -> TestOptions {
    TestOptions {
        projector: false,
        ..TestOptions::default()
    }
}

/// Asserts each stream's versions arrive in order (first delivery of each).
fn assert_per_stream_order(messages: &[BusMessage]) {
    let mut last: HashMap<Uuid, i32> = HashMap::new();
    for message in messages {
        let previous = last.entry(message.event.stream_id).or_insert(0);
        assert_eq!(
            message.event.version,
            *previous + 1,
            "stream {} jumped from version {} to {}",
            message.event.stream_id,
            previous,
            message.event.version
        );
        *previous = message.event.version;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_reaches_kafka_even_when_an_earlier_transaction_commits_late() {
    let app = TestApp::spawn_with(write_side_only()).await;

    // A transaction appends first (its position and transaction id are the
    // lowest) but commits last.
    let late_stream = Uuid::now_v7();
    let mut late = app.pool.begin().await.unwrap();
    append(&mut late, late_stream, "late").await;

    // Meanwhile twenty writers on other streams commit.
    let writers = (0..20).map(|writer| {
        let app = &app;
        async move { commit_one(app, Uuid::now_v7(), &format!("writer {writer}")).await }
    });
    futures::future::join_all(writers).await;

    // The relay must hold them back: publishing them would move its cursor
    // past the open transaction's event, which a position cursor then skips.
    let while_open = read_topic(&app.topic, 1, Duration::from_millis(1500)).await;
    assert!(
        while_open.is_empty(),
        "published past an open transaction: {while_open:?}"
    );

    late.commit().await.unwrap();

    let messages = read_topic(&app.topic, 21, Duration::from_secs(30)).await;
    let stored: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM event_store.events")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let published: HashSet<Uuid> = messages
        .iter()
        .map(|message| message.event.event_id)
        .collect();
    assert_eq!(stored.len(), 21);
    assert_eq!(
        published, stored,
        "every committed event, and nothing else, is on the bus"
    );
    assert_eq!(messages.len(), 21, "no duplicates");
    assert!(
        messages
            .iter()
            .any(|message| message.event.stream_id == late_stream)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_publishes_nothing() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let mut aborted = app.pool.begin().await.unwrap();
    append(&mut aborted, Uuid::now_v7(), "never").await;
    aborted.rollback().await.unwrap();
    let kept = Uuid::now_v7();
    commit_one(&app, kept, "kept").await;

    let messages = read_topic(&app.topic, 2, Duration::from_secs(3)).await;

    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].event.stream_id, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_order_holds_when_another_transaction_on_the_stream_commits_in_between() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let stream_id = Uuid::now_v7();
    commit_one(&app, stream_id, "v1").await;

    // A command's transaction begins and takes its idempotency lock (as
    // commands do: advisory locks assign no transaction id) ...
    let mut slow = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(42)")
        .execute(&mut *slow)
        .await
        .unwrap();
    // ... another command on the same stream commits version 2 meanwhile ...
    commit_one(&app, stream_id, "v2").await;
    // ... and the slow one then reads the stream and appends version 3.
    assert_eq!(append(&mut slow, stream_id, "v3").await, 3);
    slow.commit().await.unwrap();
    for version in 4..=6 {
        commit_one(&app, stream_id, &format!("v{version}")).await;
    }

    let messages = read_topic(&app.topic, 6, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 6);
    assert_per_stream_order(&messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_before_the_stream_is_read_would_invert_the_order_which_is_why_appends_come_first()
{
    // The control for the test above: the relay orders by transaction id, so
    // a transaction that wrote anything before reading the stream carries an
    // older id than a version committed in between. Appends are therefore
    // always the first write of a command's transaction.
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let stream_id = Uuid::now_v7();
    commit_one(&app, stream_id, "v1").await;
    let mut early_writer = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO event_store.unique_claims (kind, value, stream_id) VALUES ('test', 'x', $1)",
    )
    .bind(stream_id)
    .execute(&mut *early_writer)
    .await
    .unwrap();
    commit_one(&app, stream_id, "v2").await;
    append(&mut early_writer, stream_id, "v3").await;
    early_writer.commit().await.unwrap();

    let by_relay_order: Vec<i32> = sqlx::query_scalar(
        "SELECT version FROM event_store.events WHERE stream_id = $1 ORDER BY transaction_id, position",
    )
    .bind(stream_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(by_relay_order, vec![1, 3, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_many_streams_keep_per_stream_order_on_the_bus() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let streams: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let writers = streams.iter().map(|stream_id| {
        let app = &app;
        async move {
            for version in 1..=10 {
                commit_one(app, *stream_id, &format!("v{version}")).await;
            }
        }
    });
    futures::future::join_all(writers).await;

    let messages = read_topic(&app.topic, 80, Duration::from_secs(30)).await;

    assert_eq!(messages.len(), 80);
    assert_per_stream_order(&messages);
    // One stream, one partition: the key is the stream id.
    let mut partitions: HashMap<Uuid, HashSet<i32>> = HashMap::new();
    for message in &messages {
        assert_eq!(message.key, message.event.stream_id.to_string());
        partitions
            .entry(message.event.stream_id)
            .or_default()
            .insert(message.partition);
    }
    assert!(partitions.values().all(|partitions| partitions.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_follow_the_cloudevents_kafka_binding() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let stream_id = Uuid::now_v7();
    commit_one(&app, stream_id, "ada").await;

    let messages = read_topic(&app.topic, 1, Duration::from_secs(30)).await;
    let message = &messages[0];

    assert_eq!(message.header("ce_specversion"), Some("1.0"));
    assert_eq!(
        message.header("ce_type"),
        Some("dev.chronicle.UserProfileUpdated")
    );
    assert_eq!(
        message.header("ce_source"),
        Some("/chronicle/command-service")
    );
    assert_eq!(
        message.header("ce_subject"),
        Some(stream_id.to_string().as_str())
    );
    assert_eq!(
        message.header("ce_id"),
        Some(message.event.event_id.to_string().as_str())
    );
    assert_eq!(message.header("content-type"), Some("application/json"));
    for header in [
        "ce_time",
        "ce_schemaversion",
        "ce_streamversion",
        "ce_position",
        "ce_correlationid",
        "ce_causationid",
        "traceparent",
    ] {
        assert!(message.header(header).is_some(), "missing header {header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_is_active_and_a_standby_takes_over_when_it_goes() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let standby = app.spawn_extra_command_service().await;
    commit_one(&app, Uuid::now_v7(), "before").await;
    read_topic(&app.topic, 1, Duration::from_secs(30)).await;

    let holders = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(holders().await, 1, "exactly one relay holds the lock");

    app.stop_command_service().await;
    commit_one(&app, Uuid::now_v7(), "after").await;

    let messages = read_topic(&app.topic, 2, Duration::from_secs(30)).await;
    assert_eq!(
        messages.len(),
        2,
        "the standby relay published the later event"
    );
    drop(standby);
}
