//! Optimistic concurrency through the API: a stale expectedVersion is a
//! CONFLICT that says the current version; without one, no write is lost.

use chronicle_tests::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_version_is_a_conflict_with_the_current_version() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let post = app.create_post(&session, "Hello", &[]).await;
    let edit = |title: &str, expected: i32| {
        app.graphql("mutation($input: EditPostInput!) { editPost(input: $input) { version } }")
            .variables(json!({"input": {"id": post, "title": title, "expectedVersion": expected}}))
            .bearer(&session.access_token)
            .send()
    };
    assert_eq!(edit("Second", 1).await.data()["editPost"]["version"], 2);

    let stale = edit("Lost update", 1).await;

    assert_eq!(stale.error_code(), "CONFLICT");
    assert_eq!(stale.error()["extensions"]["currentVersion"], 2);
    let title: String = sqlx::query_scalar("SELECT title FROM posts WHERE id = $1")
        .bind(post)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(title, "Second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_writers_with_the_same_expected_version_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let post = app.create_post(&session, "Hello", &[]).await;
    let attempts = (0..6).map(|writer| {
        app.graphql("mutation($input: EditPostInput!) { editPost(input: $input) { version } }")
            .variables(json!({"input": {"id": post, "title": format!("Writer {writer}"), "expectedVersion": 1}}))
            .bearer(&session.access_token)
            .send()
    });
    let responses = futures::future::join_all(attempts).await;
    let wins = responses
        .iter()
        .filter(|response| response.body.get("errors").is_none())
        .count();
    assert_eq!(wins, 1);
    assert!(
        responses
            .iter()
            .filter(|response| response.body.get("errors").is_some())
            .all(|response| response.error_code() == "CONFLICT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_expected_version_concurrent_changes_are_all_kept() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("ada").await;
    let post = app.published_post(&author, "Hello", &[]).await;
    let mut commenters = Vec::new();
    for index in 0..6 {
        commenters.push(app.signed_in(&format!("reader{index}")).await.1);
    }
    // Concurrent edits of one post's tags: each retried against the new
    // state where it lost the append race, none silently dropped.
    let edits = (0..6).map(|writer| {
        app.graphql("mutation($input: EditPostInput!) { editPost(input: $input) { version } }")
            .variables(json!({"input": {"id": post, "body": format!("Body by writer {writer}")}}))
            .bearer(&author.access_token)
            .send()
    });
    let responses = futures::future::join_all(edits).await;
    assert!(
        responses
            .iter()
            .all(|response| response.body.get("errors").is_none()),
        "{responses:?}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events WHERE stream_id = $1 AND event_type = 'PostEdited'")
        .bind(post)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 6, "every edit was appended");
}
