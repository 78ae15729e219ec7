//! Bad input: per-field messages, nothing written; oversized requests refused
//! before they are parsed.

use chronicle_tests::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_bad_fields_names_each_of_them() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;

    let response = app
        .graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { version } }")
        .variables(json!({"input": {
            "title": "x".repeat(201),
            "body": "   ",
            "tags": ["ok", "not ok!"],
        }}))
        .bearer(&session.access_token)
        .send()
        .await;

    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    let fields = &response.error()["extensions"]["fields"];
    assert_eq!(fields["title"], "must be at most 200 characters");
    assert_eq!(fields["body"], "is required");
    assert!(fields["tags"].as_str().unwrap().contains("not ok!"));
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_store.events WHERE stream_type = 'post'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_and_profiles_have_limits_too() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let post = app.published_post(&session, "Hello", &[]).await;

    let comment = app
        .add_comment(&session, post, None, &"x".repeat(10_001))
        .await;
    assert_eq!(comment.error_code(), "BAD_USER_INPUT");
    assert_eq!(
        comment.error()["extensions"]["fields"]["body"],
        "must be at most 10000 characters"
    );

    let profile = app
        .graphql("mutation($bio: String) { updateProfile(input: {bio: $bio}) { version } }")
        .variables(json!({"bio": "b".repeat(501)}))
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(profile.error_code(), "BAD_USER_INPUT");
    assert!(profile.error()["extensions"]["fields"]["bio"].is_string());

    let not_an_id = app
        .graphql(r#"mutation { publishPost(id: "nope") { version } }"#)
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(not_an_id.error_code(), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_before_it_is_parsed() {
    let app = TestApp::spawn().await;
    let huge = json!({"query": format!("{{ viewer {{ id }} }} #{}", "x".repeat(2 * 1024 * 1024))});

    let response = app
        .http
        .post(app.graphql_url())
        .json(&huge)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_clear_client_error() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}
