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
