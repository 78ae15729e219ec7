//! Poison events don't stop the world: set aside, reported, re-driven.

use chronicle_schema::events::{PostEdited, PostEvent, UserEvent, UserProfileUpdated};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use chronicle_tests::TestApp;
use command_service::event_store;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_set_aside_later_events_are_applied_and_a_redrive_keeps_refusing_it() {
    let app = TestApp::spawn().await;
    // An edit of a post the read model never heard of: no handler can apply it.
    let orphan = Uuid::now_v7();
    let command_id = Uuid::now_v7();
    let mut transaction = app.pool.begin().await.unwrap();
    event_store::append(
        &mut transaction,
        orphan,
        StreamType::Post,
        0,
        &[DomainEvent::Post(PostEvent::Edited(PostEdited {
            title: "Recovered".into(),
            body: "b".into(),
            tags: vec![],
        }))],
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
    transaction.commit().await.unwrap();

    // Later events go through.
    let (_, moderator) = app.signed_in_as("moderator", Role::Moderator).await;
    app.drain().await;

    let (stream, version, error): (Uuid, i32, String) = sqlx::query_as(
        "SELECT stream_id, version, error FROM projector.dead_letters WHERE redriven_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((stream, version), (orphan, 1));
    assert!(error.contains("does not have"), "{error}");

    let status = app
        .graphql("{ projectionStatus { name state deadLetters lagEvents } }")
        .bearer(&moderator.access_token)
        .send()
        .await;
    let read_models = status.data()["projectionStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|projection| projection["name"] == "read_models")
        .cloned();
    chronicle_tests::eventually(
        std::time::Duration::from_secs(10),
        "status to report the dead letter",
        || async {
            let status = app
                .graphql("{ projectionStatus { name deadLetters } }")
                .bearer(&moderator.access_token)
                .send()
                .await;
            status.data()["projectionStatus"]
                .as_array()
                .unwrap()
                .iter()
                .any(|projection| {
                    projection["name"] == "read_models" && projection["deadLetters"] == 1
                })
        },
    )
    .await;
    assert!(read_models.is_some());
    let metrics = app
        .http
        .get(format!("{}/metrics", app.projector_url().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chronicle_dead_letters_total"),
        "{metrics}"
    );

    // An edit of a post that was never created stays refused: a redrive
    // folds the stream again from the store, and the store has no creation.
    let admin =
        projector::cli::AdminClient::new(app.projector_url().unwrap(), &app.command_api_token);
    let report = admin.redrive().await.unwrap();
    assert_eq!((report.redriven, report.still_failing), (0, 1));
}

/// An event this build cannot read (written by a newer one mid-deploy) is set
/// aside and its stream moves on; once this build can read it (here: the
/// stored row rewritten, as an upcaster would read it), a redrive applies it,
/// in order, under the later events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_set_aside_its_stream_moves_on_and_a_redrive_applies_it_after_a_fix()
{
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    // Version 2 of Ada's stream, from a newer build: schema version 9.
    sqlx::query(
        "INSERT INTO event_store.events (event_id, stream_id, stream_type, version, event_type, \
           schema_version, payload, command_id, correlation_id, causation_id) \
         VALUES ($1, $2, 'user', 2, 'UserProfileUpdated', 9, $3, $1, $1, $1)",
    )
    .bind(Uuid::now_v7())
    .bind(ada.id)
    .bind(serde_json::json!({"displayName": "Ada from the future", "bio": "v9", "mood": "new"}))
    .execute(&app.pool)
    .await
    .unwrap();
    // Later events of the same stream are applied past it.
    let command_id = Uuid::now_v7();
    let mut transaction = app.pool.begin().await.unwrap();
    event_store::append(
        &mut transaction,
        ada.id,
        StreamType::User,
        2,
        &[DomainEvent::User(UserEvent::ProfileUpdated(
            UserProfileUpdated {
                display_name: "Ada from the future".into(),
                bio: Some("after".into()),
            },
        ))],
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
    transaction.commit().await.unwrap();
    app.drain().await;
    let (version, error): (i32, String) = sqlx::query_as(
        "SELECT version, error FROM projector.dead_letters WHERE redriven_at IS NULL AND stream_id = $1",
    )
    .bind(ada.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(version, 2);
    assert!(error.contains("newer than this build"), "{error}");

    // The fix: this build can read it now.
    sqlx::query(
        "UPDATE event_store.events SET schema_version = 1 WHERE stream_id = $1 AND version = 2",
    )
    .bind(ada.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let report =
        projector::cli::AdminClient::new(app.projector_url().unwrap(), &app.command_api_token)
            .redrive()
            .await
            .unwrap();
    assert_eq!((report.redriven, report.still_failing), (1, 0));
    // Folded in order: v2, then v3 on top of it.
    let (name, bio, version): (String, Option<String>, i32) =
        sqlx::query_as("SELECT display_name, bio, version FROM users WHERE id = $1")
            .bind(ada.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), bio.as_deref(), version),
        ("Ada from the future", Some("after"), 3)
    );
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projector.dead_letters WHERE redriven_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_status_is_for_moderators_and_says_live() {
    let app = TestApp::spawn().await;
    let (_, user) = app.signed_in("reader").await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;

    let refused = app
        .graphql("{ projectionStatus { name } }")
        .bearer(&user.access_token)
        .send()
        .await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let anonymous = app.graphql("{ projectionStatus { name } }").send().await;
    assert_eq!(anonymous.error_code(), "UNAUTHENTICATED");

    chronicle_tests::eventually(
        std::time::Duration::from_secs(10),
        "the outbox and both projections to report LIVE",
        || async {
            let status = app
                .graphql(
                    "{ projectionStatus { name state lagEvents lagSeconds deadLetters detail } }",
                )
                .bearer(&admin.access_token)
                .send()
                .await;
            let projections = status.data()["projectionStatus"]
                .as_array()
                .unwrap()
                .clone();
            let mut names: Vec<_> = projections
                .iter()
                .map(|projection| projection["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names == ["outbox", "read_models", "search"]
                && projections
                    .iter()
                    .all(|projection| projection["state"] == "LIVE" && projection["lagEvents"] == 0)
        },
    )
    .await;
}

/// A consistency token on a version the read models set aside gets an answer
/// that says so, not success with rows that miss the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_token_on_a_dead_lettered_version_is_answered_so() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    sqlx::query(
        "INSERT INTO event_store.events (event_id, stream_id, stream_type, version, event_type, \
           schema_version, payload, command_id, correlation_id, causation_id) \
         VALUES ($1, $2, 'user', 2, 'UserProfileUpdated', 9, '{}', $1, $1, $1)",
    )
    .bind(Uuid::now_v7())
    .bind(ada.id)
    .execute(&app.pool)
    .await
    .unwrap();
    app.drain().await;
    let token = chronicle_schema::ConsistencyToken {
        stream_type: StreamType::User,
        stream_id: ada.id,
        version: 2,
    };
    let response = app
        .graphql("{ user(handle: \"ada\") { displayName } }")
        .header("x-consistency-token", &token.to_string())
        .send()
        .await;
    assert_eq!(response.error_code(), "INTERNAL");
    assert_eq!(response.error()["extensions"]["deadLetteredVersion"], 2);
    assert!(
        response.error()["message"]
            .as_str()
            .unwrap()
            .contains("dead letter")
    );
}
