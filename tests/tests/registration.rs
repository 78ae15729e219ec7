//! Registering users through the public API, end to end.

use chronicle_tests::TestApp;
use serde_json::json;

const REGISTER: &str = r#"
    mutation($input: RegisterUserInput!) {
      registerUser(input: $input) {
        user { id handle displayName role active postCount commentCount version }
        version
        consistencyToken
      }
    }"#;

fn input(email: &str, handle: &str) -> serde_json::Value {
    json!({"input": {
        "email": email, "handle": handle, "displayName": "Ada Lovelace",
        "password": "analytical engine 1843",
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_returns_the_user_read_back_from_the_projection() {
    let app = TestApp::spawn().await;

    let response = app
        .graphql(REGISTER)
        .variables(input("ada@example.com", "ada"))
        .send()
        .await;

    let payload = &response.data()["registerUser"];
    assert_eq!(payload["version"], 1);
    assert!(
        payload["consistencyToken"]
            .as_str()
            .is_some_and(|token| !token.is_empty())
    );
    let user = &payload["user"];
    assert_eq!(user["handle"], "ada");
    assert_eq!(user["displayName"], "Ada Lovelace");
    assert_eq!(user["role"], "USER");
    assert_eq!(user["active"], true);
    assert_eq!(user["version"], 1);
    // It was read from the read model, which holds exactly this user.
    let projected: (String, i32) = sqlx::query_as("SELECT handle, version FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(projected, ("ada".to_owned(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_user_is_found_by_handle_and_by_id() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;

    let by_handle = app
        .graphql(r#"{ user(handle: "ADA") { id handle } }"#)
        .send()
        .await;
    assert_eq!(by_handle.data()["user"]["id"], ada.id.to_string());

    let by_id = app
        .graphql("query($id: ID!) { user(id: $id) { handle email } }")
        .variables(json!({"id": ada.id}))
        .send()
        .await;
    assert_eq!(by_id.data()["user"]["handle"], "ada");
    // Anonymous callers never see an email.
    assert_eq!(by_id.data()["user"]["email"], serde_json::Value::Null);

    let missing = app
        .graphql(r#"{ user(handle: "nobody") { id } }"#)
        .send()
        .await;
    assert_eq!(missing.data()["user"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_taken_handle_or_email_is_a_conflict_and_creates_no_second_user() {
    let app = TestApp::spawn().await;
    app.register("ada").await;

    let same_handle = app
        .graphql(REGISTER)
        .variables(input("other@example.com", "Ada"))
        .send()
        .await;
    assert_eq!(same_handle.error_code(), "CONFLICT");
    assert_eq!(
        same_handle.error()["extensions"]["fields"]["handle"],
        "is already taken"
    );

    let same_email = app
        .graphql(REGISTER)
        .variables(input("ADA@Example.com", "other"))
        .send()
        .await;
    assert_eq!(same_email.error_code(), "CONFLICT");
    assert_eq!(
        same_email.error()["extensions"]["fields"]["email"],
        "is already registered"
    );

    app.drain().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let credentials: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((users, events, credentials), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_handle_leave_exactly_one_user() {
    let app = TestApp::spawn().await;

    let attempts = (0..8).map(|attempt| {
        app.graphql(REGISTER)
            .variables(input(&format!("ada{attempt}@example.com"), "ada"))
            .send()
    });
    let responses = futures::future::join_all(attempts).await;

    let won = responses
        .iter()
        .filter(|response| response.body.get("errors").is_none())
        .count();
    let conflicts = responses
        .iter()
        .filter(|response| {
            response.body.get("errors").is_some() && response.error_code() == "CONFLICT"
        })
        .count();
    assert_eq!((won, conflicts), (1, 7));
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_store.unique_claims WHERE kind = 'handle'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((claims, events), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registration_names_every_bad_field_and_writes_nothing() {
    let app = TestApp::spawn().await;

    let response = app
        .graphql(REGISTER)
        .variables(json!({"input": {
            "email": "not-an-email", "handle": "x", "displayName": " ", "password": "password123",
        }}))
        .send()
        .await;

    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    let fields = &response.error()["extensions"]["fields"];
    for field in ["email", "handle", "displayName", "password"] {
        assert!(
            fields[field].is_string(),
            "no message for {field}: {fields}"
        );
    }
    assert!(response.error()["extensions"]["requestId"].is_string());
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}
