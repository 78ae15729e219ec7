//! The outbox relay: every committed event reaches Kafka, none skipped, none
//! phantom, per-stream order kept, even when transactions commit out of order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chronicle_schema::events::{UserEvent, UserProfileUpdated};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use chronicle_tests::{BusMessage, TestApp, TestOptions, eventually, read_raw_topic, read_topic};
use command_service::event_store::{self, AppendContext};
use serde_json::{Value, json};
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

    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_store.relay_lease WHERE expires_at > now()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(leases, 1, "exactly one relay holds the lease");

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

/// A row this build cannot decode (schema version 9, as a newer instance
/// writes it during a rolling deploy) is published as stored, and so is
/// everything behind it: consumers decide what they can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_this_build_cannot_read_is_published_as_stored_and_what_follows_it_too() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let newer = Uuid::now_v7();
    let payload = json!({"displayName": "from a newer build", "mood": "new"});
    sqlx::query(
        "INSERT INTO event_store.events (event_id, stream_id, stream_type, version, event_type, \
           schema_version, payload, command_id, correlation_id, causation_id) \
         VALUES ($1, $2, 'user', 1, 'UserProfileUpdated', 9, $3, $1, $1, $1)",
    )
    .bind(Uuid::now_v7())
    .bind(newer)
    .bind(&payload)
    .execute(&app.pool)
    .await
    .unwrap();
    let after = Uuid::now_v7();
    commit_one(&app, after, "behind it").await;

    let messages = read_raw_topic(&app.topic, 2, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 2, "both rows are published");
    let subject = |stream: Uuid| {
        messages
            .iter()
            .find(|message| message.header("ce_subject") == Some(stream.to_string().as_str()))
            .unwrap_or_else(|| panic!("no message for stream {stream}"))
    };
    let unreadable = subject(newer);
    assert_eq!(unreadable.header("ce_schemaversion"), Some("9"));
    assert_eq!(
        serde_json::from_slice::<Value>(&unreadable.payload).unwrap(),
        payload,
        "the payload is published as stored"
    );
    assert!(unreadable.decode().is_err(), "this build cannot read it");
    assert_eq!(subject(after).decode().unwrap().stream_id, after);
}

/// The relay waits only for transactions that append events: a write
/// transaction held open in another database on the server, or one in this
/// database that appends nothing (a rebuild's bulk write), delays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_transaction_held_open_elsewhere_delays_no_publication() {
    let app = TestApp::spawn_with(write_side_only()).await;
    let elsewhere = chronicle_tests::TestDatabase::create().await;
    let elsewhere_pool = elsewhere.pool();
    let mut other_database = elsewhere_pool.begin().await.unwrap();
    for statement in ["CREATE TABLE held (id int)", "INSERT INTO held VALUES (1)"] {
        sqlx::query(statement)
            .execute(&mut *other_database)
            .await
            .unwrap();
    }
    let mut same_database = app.pool.begin().await.unwrap();
    for statement in [
        "CREATE TABLE read.held (id int)",
        "INSERT INTO read.held VALUES (1)",
    ] {
        sqlx::query(statement)
            .execute(&mut *same_database)
            .await
            .unwrap();
    }

    let stream_id = Uuid::now_v7();
    commit_one(&app, stream_id, "while others are open").await;
    let messages = read_topic(&app.topic, 1, Duration::from_secs(10)).await;
    assert_eq!(
        messages.len(),
        1,
        "published within 10 s while both transactions stay open"
    );
    assert_eq!(messages[0].event.stream_id, stream_id);

    // Both were open throughout.
    for transaction in [&mut other_database, &mut same_database] {
        sqlx::query("SELECT 1")
            .execute(&mut **transaction)
            .await
            .unwrap();
    }
    other_database.rollback().await.unwrap();
    same_database.rollback().await.unwrap();
    elsewhere_pool.close().await;
    chronicle_tests::TestDatabase::drop_now(&elsewhere.name).await;
}

/// A command-service binary of this app, with its relay on.
struct RelayProcess {
    child: tokio::process::Child,
    url: String,
}

impl RelayProcess {
    async fn spawn(app: &TestApp) -> RelayProcess {
        let port = chronicle_tests::free_port();
        let child = tokio::process::Command::new(chronicle_tests::binary("command-service"))
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .args(app.command_service_args(true))
            .env("RUST_LOG", "warn,command_service::outbox=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the command-service binary (built by ./dev test)");
        let url = format!("http://127.0.0.1:{port}");
        chronicle_tests::wait_ready(&reqwest::Client::new(), &url).await;
        RelayProcess { child, url }
    }

    async fn is_active(&self) -> bool {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.url)).await else {
            return false;
        };
        let metrics = response.text().await.unwrap_or_default();
        metrics.lines().any(|line| {
            line.strip_prefix("chronicle_relay_active ")
                .and_then(|value| value.trim().parse::<f64>().ok())
                == Some(1.0)
        })
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Reads the topic until these events are all there (duplicates allowed).
async fn published(app: &TestApp, events: &HashSet<Uuid>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen: HashSet<Uuid> = read_topic(&app.topic, usize::MAX, Duration::from_secs(3))
            .await
            .iter()
            .map(|message| message.event.event_id)
            .collect();
        if events.is_subset(&seen) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

async fn event_ids(app: &TestApp) -> HashSet<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM event_store.events")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A leader that goes silent (SIGSTOP: frozen, as behind a partition) keeps
/// no lease: it expires, a standby takes over and publishes. When the old
/// leader wakes it knows it lost the lease and stands by; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_loses_the_lease_and_a_standby_takes_over() {
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let relays = [
        RelayProcess::spawn(&app).await,
        RelayProcess::spawn(&app).await,
    ];
    commit_one(&app, Uuid::now_v7(), "before").await;
    assert!(published(&app, &event_ids(&app).await, Duration::from_secs(30)).await);
    let leader = 'found: {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            for (index, relay) in relays.iter().enumerate() {
                if relay.is_active().await {
                    break 'found index;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no relay leads");
    };
    let standby = 1 - leader;

    relays[leader].signal("-STOP");
    let frozen = tokio::time::Instant::now();
    commit_one(&app, Uuid::now_v7(), "while the leader is frozen").await;
    assert!(
        published(&app, &event_ids(&app).await, Duration::from_secs(30)).await,
        "the standby published what was committed while the leader was frozen"
    );
    let took_over_in = frozen.elapsed();
    // The lease lasts 8 s and a standby looks every 2 s.
    assert!(
        took_over_in < Duration::from_secs(15),
        "took over after {took_over_in:?}"
    );
    assert!(relays[standby].is_active().await);

    relays[leader].signal("-CONT");
    eventually(
        Duration::from_secs(20),
        "the old leader to stand by",
        || async { !relays[leader].is_active().await },
    )
    .await;
    commit_one(&app, Uuid::now_v7(), "after it woke").await;
    assert!(published(&app, &event_ids(&app).await, Duration::from_secs(30)).await);
    assert!(
        relays[standby].is_active().await,
        "the new leader kept the lease"
    );
    let leases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_store.relay_lease WHERE expires_at > now()")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(leases, 1);
}

/// A long appending transaction holds the relay back (it publishes only
/// below the appenders still running); the status names it so an operator
/// can find it.
async fn outbox_status(app: &TestApp, token: &str) -> Value {
    let status = app
        .graphql("{ projectionStatus { name state lagEvents detail } }")
        .bearer(token)
        .send()
        .await;
    status.data()["projectionStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|projection| projection["name"] == "outbox")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_appending_transaction_holding_the_outbox_back_is_named_in_the_status() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;

    // A transaction that appends (it holds the appenders' lock, as every
    // append does) and stays open.
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared(event_store.appenders_key())")
        .execute(&mut *holder)
        .await
        .unwrap();
    let (pid, xid): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), pg_current_xact_id()::text")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    // Committed after the holder started: it may not be relayed before it.
    app.graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { version } }")
        .variables(json!({"input": {"title": "Held back", "body": "Behind a long transaction.", "tags": []}}))
        .bearer(&admin.access_token)
        .send()
        .await
        .data();

    let culprit = format!("held by xid {xid}, pid {pid}");
    eventually(
        Duration::from_secs(20),
        "the outbox to report HELD",
        || async {
            let outbox = outbox_status(&app, &admin.access_token).await;
            outbox["state"] == "HELD"
                && outbox["lagEvents"].as_i64() > Some(0)
                && outbox["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.starts_with(&culprit))
        },
    )
    .await;

    holder.rollback().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the outbox to catch up",
        || async {
            let outbox = outbox_status(&app, &admin.access_token).await;
            outbox["state"] == "LIVE" && outbox["lagEvents"] == 0 && outbox["detail"].is_null()
        },
    )
    .await;
    app.drain().await;
}
