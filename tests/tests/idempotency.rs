//! Idempotency-Key: a retried mutation returns the first outcome and appends
//! nothing; the same key with another input is refused.

use chronicle_tests::TestApp;
use serde_json::json;

const CREATE: &str = "mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } version consistencyToken } }";

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mutation_returns_the_first_outcome_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let create = || {
        app.graphql(CREATE)
            .variables(json!({"input": {"title": "Once", "body": "Only once."}}))
            .bearer(&session.access_token)
            .header("idempotency-key", "create-once-1")
            .send()
    };
    let first = create().await;
    let before = events(&app).await;

    let retried = create().await;

    assert_eq!(retried.data()["createPost"], first.data()["createPost"]);
    assert_eq!(events(&app).await, before);
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(posts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_append_once() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let before = events(&app).await;
    let attempts = (0..5).map(|_| {
        app.graphql(CREATE)
            .variables(json!({"input": {"title": "Once", "body": "Only once."}}))
            .bearer(&session.access_token)
            .header("idempotency-key", "same-key")
            .send()
    });
    let responses = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<String> = responses
        .iter()
        .map(|response| {
            response.data()["createPost"]["post"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry got the one outcome");
    assert_eq!(events(&app).await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_input_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let create = |title: &str| {
        app.graphql(CREATE)
            .variables(json!({"input": {"title": title, "body": "b"}}))
            .bearer(&session.access_token)
            .header("idempotency-key", "reused-key")
            .send()
    };
    create("First").await.data();
    let other = create("Second").await;
    assert_eq!(other.error_code(), "CONFLICT");
    assert!(
        other.error()["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_caller_and_expire() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (_, bob) = app.signed_in("bob").await;
    let create = |token: &str| {
        app.graphql(CREATE)
            .variables(json!({"input": {"title": "Mine", "body": "b"}}))
            .bearer(token)
            .header("idempotency-key", "k1")
            .send()
    };
    let by_ada = create(&ada.access_token).await;
    let by_bob = create(&bob.access_token).await;
    assert_ne!(
        by_ada.data()["createPost"]["post"]["id"],
        by_bob.data()["createPost"]["post"]["id"]
    );

    // Past its expiry (24 h by default) a key is forgotten: the command runs again.
    sqlx::query("UPDATE event_store.idempotency_keys SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let again = create(&ada.access_token).await;
    assert_ne!(
        again.data()["createPost"]["post"]["id"],
        by_ada.data()["createPost"]["post"]["id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_key_is_bad_input() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let response = app
        .graphql(CREATE)
        .variables(json!({"input": {"title": "t", "body": "b"}}))
        .bearer(&ada.access_token)
        .header("idempotency-key", &"k".repeat(256))
        .send()
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
}

/// No password reaches any stored record or hash: the fingerprint of a
/// request is keyed by a server secret and leaves secrets out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idempotency_record_keeps_a_password_or_a_hash_of_one() {
    use sha2::{Digest, Sha256};
    let app = TestApp::spawn().await;
    let password = "Zebra Secret Passphrase 42";
    let input = json!({"email": "ada@example.com", "handle": "ada", "displayName": "Ada", "password": password});
    app.graphql("mutation($input: RegisterUserInput!) { registerUser(input: $input) { version } }")
        .variables(json!({"input": input}))
        .header("idempotency-key", "register-ada")
        .send()
        .await
        .data();

    let records: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT request_hash, response FROM event_store.idempotency_keys")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(records.len(), 1);
    let (fingerprint, response) = &records[0];
    // What the old, unkeyed fingerprint was: a hash of the command with the password.
    let command = json!({"type": "RegisterUser", "email": "ada@example.com", "handle": "ada",
                         "displayName": "Ada", "password": password});
    let unkeyed = format!(
        "{:x}",
        Sha256::digest(serde_json::to_vec(&command).unwrap())
    );
    assert_ne!(fingerprint, &unkeyed);
    assert!(!response.to_string().contains(password));
    // Nowhere in the database either: every text column of every table.
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, E'\\n') FROM (
           SELECT row_to_json(k)::text AS t FROM event_store.idempotency_keys k
           UNION ALL SELECT payload::text FROM event_store.events
           UNION ALL SELECT row_to_json(c)::text FROM auth.credentials c) rows",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!dump.contains(password));
}

/// A retry after the first request succeeded answers its first outcome even
/// where deciding again would refuse: the post it deleted is gone, the
/// version it expected has moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_success_answers_the_first_outcome_where_deciding_again_would_refuse() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let post = app.published_post(&session, "Short-lived", &[]).await;
    let delete = || {
        app.graphql("mutation($id: ID!) { deletePost(id: $id) { version } }")
            .variables(json!({"id": post}))
            .bearer(&session.access_token)
            .header("idempotency-key", "delete-once")
            .send()
    };
    let first = delete().await;
    let retried = delete().await;
    assert_eq!(retried.data()["deletePost"], first.data()["deletePost"]);

    let rename = |name: &'static str| {
        app.graphql(
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
        )
        .variables(json!({"input": {"displayName": name, "expectedVersion": 1}}))
        .bearer(&session.access_token)
        .header("idempotency-key", "rename-once")
        .send()
    };
    let first = rename("Ada L.").await;
    assert_eq!(first.data()["updateProfile"]["version"], 2);
    let before = events(&app).await;
    let retried = rename("Ada L.").await;
    assert_eq!(
        retried.data()["updateProfile"],
        first.data()["updateProfile"]
    );
    // Another input under the key is refused as such, not as a stale version.
    let other = rename("Someone else").await;
    assert_eq!(other.error_code(), "CONFLICT");
    assert!(
        other.error()["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{}",
        other.body
    );
    assert_eq!(events(&app).await, before);
}
