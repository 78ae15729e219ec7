//! The projector: idempotent per stream version, never past a hole.

use std::time::Duration;

use chronicle_schema::events::{UserEvent, UserProfileUpdated, UserRegistered};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use chronicle_tests::{TestApp, TestOptions};
use command_service::event_store::{self, AppendContext};
use uuid::Uuid;

fn metadata() -> EventMetadata {
    let command_id = Uuid::now_v7();
    EventMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor_id: None,
        traceparent: None,
    }
}

async fn append(app: &TestApp, stream_id: Uuid, base: i32, event: UserEvent) {
    let mut transaction = app.pool.begin().await.unwrap();
    event_store::append(
        &mut transaction,
        stream_id,
        StreamType::User,
        base,
        &[DomainEvent::User(event)],
        &metadata(),
        &AppendContext::default(),
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
}

fn registered(handle: &str) -> UserEvent {
    UserEvent::Registered(UserRegistered {
        email: format!("{handle}@example.com"),
        handle: handle.to_owned(),
        display_name: handle.to_owned(),
        role: Role::User,
    })
}

fn renamed(name: &str) -> UserEvent {
    UserEvent::ProfileUpdated(UserProfileUpdated {
        display_name: name.to_owned(),
        bio: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_skipped_not_applied_again() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    // Mark the row: re-applying UserRegistered would overwrite the email.
    sqlx::query("UPDATE users SET email = 'marker@example.com' WHERE id = $1")
        .bind(ada.id)
        .execute(&app.pool)
        .await
        .unwrap();

    // The relay starts over from the beginning and publishes v1 again, then v2.
    sqlx::query("UPDATE event_store.relay_cursor SET transaction_id = '0', position = 0")
        .execute(&app.pool)
        .await
        .unwrap();
    append(&app, ada.id, 1, renamed("Ada 2")).await;
    app.drain().await;

    let (email, display_name, version): (String, String, i32) =
        sqlx::query_as("SELECT email, display_name, version FROM users WHERE id = $1")
            .bind(ada.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        email, "marker@example.com",
        "the redelivered v1 was skipped"
    );
    assert_eq!((display_name.as_str(), version), ("Ada 2", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_past_a_hole_is_applied_only_after_the_hole_is_filled_from_the_event_store() {
    let app = TestApp::spawn_with(TestOptions {
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let stream_id = Uuid::now_v7();
    append(&app, stream_id, 0, registered("grace")).await;
    append(&app, stream_id, 1, renamed("Grace Hopper")).await;

    // Only version 2 reaches the bus.
    let version_two = event_store::read_stream(&mut app.pool.acquire().await.unwrap(), stream_id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    chronicle_tests::publish(&app.topic, &version_two).await;

    app.drain().await;
    let (handle, display_name, version): (String, String, i32) =
        sqlx::query_as("SELECT handle, display_name, version FROM users WHERE id = $1")
            .bind(stream_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (handle.as_str(), display_name.as_str(), version),
        ("grace", "Grace Hopper", 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_announces_what_it_applied() {
    let app = TestApp::spawn().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener
        .listen(chronicle_schema::projected::CHANNEL)
        .await
        .unwrap();

    let ada = app.register("ada").await;

    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("an announcement")
        .unwrap();
    let projected: chronicle_schema::projected::Projected =
        serde_json::from_str(notification.payload()).unwrap();
    assert_eq!(projected.events[0].stream_id, ada.id);
    assert_eq!(projected.events[0].event_type, "UserRegistered");
}

/// A stored event this build cannot read, met while filling a hole, is set
/// aside like any poison; the event that arrived is applied after it, and
/// nothing is lost or retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_in_a_filled_hole_is_set_aside_and_the_arriving_event_applied() {
    let app = TestApp::spawn_with(TestOptions {
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let stream_id = Uuid::now_v7();
    append(&app, stream_id, 0, registered("grace")).await;
    sqlx::query(
        "INSERT INTO event_store.events (event_id, stream_id, stream_type, version, event_type, \
           schema_version, payload, command_id, correlation_id, causation_id) \
         VALUES ($1, $2, 'user', 2, 'UserProfileUpdated', 9, '{}', $1, $1, $1)",
    )
    .bind(Uuid::now_v7())
    .bind(stream_id)
    .execute(&app.pool)
    .await
    .unwrap();
    append(&app, stream_id, 2, renamed("Grace Hopper")).await;

    // Only version 3 reaches the bus: versions 1 and 2 come from the store.
    let version_three: chronicle_schema::events::StoredEventRow = sqlx::query_as(
        "SELECT position, event_id, stream_id, stream_type, version, event_type, schema_version, \
           payload, command_id, correlation_id, causation_id, actor_id, metadata, recorded_at \
         FROM event_store.events WHERE stream_id = $1 AND version = 3",
    )
    .bind(stream_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    chronicle_tests::publish_row(&app.topic, &version_three).await;

    app.drain().await;
    let (display_name, version): (String, i32) =
        sqlx::query_as("SELECT display_name, version FROM users WHERE id = $1")
            .bind(stream_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((display_name.as_str(), version), ("Grace Hopper", 3));
    let letters: Vec<i32> = sqlx::query_scalar(
        "SELECT version FROM projector.dead_letters WHERE stream_id = $1 AND redriven_at IS NULL",
    )
    .bind(stream_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(letters, vec![2]);
}

/// A message that says nothing readable about itself, delivered twice (a
/// crash before its offset was committed), is one dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_redelivered_is_one_dead_letter() {
    use projector::apply::{self, Incoming};
    use projector::dead_letters::{KafkaPosition, Letter};
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        ..TestOptions::default()
    })
    .await;
    let message = || {
        Incoming::Unreadable(Box::new(Letter::unreadable(
            Some(KafkaPosition {
                partition: 1,
                offset: 42,
            }),
            "header ce_id is missing".into(),
        )))
    };
    apply::apply_batch(&app.pool, &[message()]).await.unwrap();
    apply::apply_batch(&app.pool, &[message()]).await.unwrap();
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM projector.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(letters, 1);
}

/// Consumers long-poll (`FETCH_WAIT_MAX_MS`) so an idle one costs the broker
/// little; that must cost no latency: the broker answers a waiting fetch as
/// soon as a message arrives. Checked with a wait far longer than any
/// delivery, so only a fetch that runs its whole wait could fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_on_an_idle_topic_gets_a_new_message_without_waiting_its_fetch_out() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    const LONG_WAIT: Duration = Duration::from_secs(10);
    let topic = chronicle_tests::TestTopic::create(1).await;
    let brokers = chronicle_tests::brokers();
    let consumer: StreamConsumer = chronicle_platform::kafka::consumer_config(&brokers)
        .set("group.id", format!("test-long-poll-{}", Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", LONG_WAIT.as_millis().to_string())
        .create()
        .unwrap();
    consumer.subscribe(&[&topic.name]).unwrap();
    let producer: FutureProducer = chronicle_platform::kafka::client_config(&brokers)
        .create()
        .unwrap();
    let produce = |payload: &'static str| {
        let (producer, topic) = (&producer, &topic.name);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key("k").payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    };
    // A first message, received: the consumer has joined, has its offset
    // and fetches. Then it finds the topic empty and parks a fetch.
    produce("first").await;
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("the first message arrives")
        .unwrap();
    assert_eq!(rdkafka::Message::payload(&first), Some(&b"first"[..]));
    drop(first);
    let consumer = std::sync::Arc::new(consumer);
    let receiving = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            let message = consumer.recv().await.map(|message| message.detach());
            (message, tokio::time::Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce("second").await;
    let sent = tokio::time::Instant::now();
    let (message, received) = tokio::time::timeout(LONG_WAIT * 2, receiving)
        .await
        .expect("the second message arrives")
        .unwrap();
    assert_eq!(
        rdkafka::Message::payload(&message.unwrap()),
        Some(&b"second"[..])
    );
    let waited = received.saturating_duration_since(sent);
    assert!(
        waited < LONG_WAIT / 2,
        "the message waited {waited:?}: the fetch ran out its wait"
    );
}
