//! Poison events don't stop the world: set aside, reported, re-driven.

use chronicle_schema::events::{PostEdited, PostEvent};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use chronicle_tests::TestApp;
use command_service::event_store;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_set_aside_later_events_are_applied_and_a_redrive_applies_it_after_a_fix()
{
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

    // The fix: here, the post the edit belongs to appears in the read model.
    sqlx::query(
        "INSERT INTO posts (id, slug, title, body, excerpt, status, author_id, author_handle, author_display_name, \
         created_at, updated_at, version) VALUES ($1, 'orphan', 'Lost', '', '', 'DRAFT', $1, 'x', 'x', now(), now(), 0)",
    )
    .bind(orphan)
    .execute(&app.pool)
    .await
    .unwrap();
    let report =
        projector::cli::AdminClient::new(app.projector_url().unwrap(), &app.command_api_token)
            .redrive()
            .await
            .unwrap();

    assert_eq!((report.redriven, report.still_failing), (1, 0));
    let title: String = sqlx::query_scalar("SELECT title FROM posts WHERE id = $1")
        .bind(orphan)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(title, "Recovered");
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
