//! Signing in: argon2id passwords, short-lived JWTs, rotating refresh tokens
//! with reuse detection, logout, deactivation, brute-force limits.

use chronicle_tests::{TestApp, TestOptions};
use serde_json::json;

const LOGIN: &str = "mutation($input: LoginInput!) {
  login(input: $input) { accessToken refreshToken tokenType expiresIn user { id handle email } }
}";
const REFRESH: &str =
    "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken refreshToken } }";
const LOGOUT: &str = "mutation($token: String!) { logout(refreshToken: $token) }";
const VIEWER: &str = "{ viewer { handle email } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_bearer_token_for_the_user_and_a_refresh_token() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;

    let response = app
        .graphql(LOGIN)
        .variables(json!({"input": {"email": "ADA@example.com", "password": ada.password}}))
        .send()
        .await;

    let auth = &response.data()["login"];
    assert_eq!(auth["tokenType"], "Bearer");
    assert_eq!(auth["expiresIn"], 900);
    assert_eq!(auth["user"]["handle"], "ada");
    let token = auth["accessToken"].as_str().unwrap();
    let viewer = app.graphql(VIEWER).bearer(token).send().await;
    assert_eq!(
        viewer.data()["viewer"],
        json!({"handle": "ada", "email": "ada@example.com"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    for (email, password) in [
        ("ada@example.com", "wrong password here"),
        ("nobody@example.com", "whatever it is"),
    ] {
        let response = app
            .graphql(LOGIN)
            .variables(json!({"input": {"email": email, "password": password}}))
            .send()
            .await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED");
        assert_eq!(
            response.error()["message"],
            "the email or password is wrong"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_stored_as_argon2id_hashes_and_refresh_tokens_as_digests() {
    let app = TestApp::spawn().await;
    let (ada, session) = app.signed_in("ada").await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM auth.credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!hash.contains(&ada.password));
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM auth.refresh_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], session.refresh_token);
    // Nor does any event carry a secret.
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM event_store.events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        payloads
            .iter()
            .all(|payload| !payload.contains(&ada.password) && !payload.contains("argon2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_rotates_and_reusing_a_spent_token_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;

    let rotated = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    let next = rotated.data()["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next, session.refresh_token);
    let access = rotated.data()["refreshToken"]["accessToken"]
        .as_str()
        .unwrap();
    assert_eq!(
        app.graphql(VIEWER).bearer(access).send().await.data()["viewer"]["handle"],
        "ada"
    );

    // The spent token is presented again (it was stolen): refused ...
    let reused = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    assert_eq!(reused.error_code(), "UNAUTHENTICATED");
    // ... and the whole family is revoked, the legitimate next token included.
    let after = app
        .graphql(REFRESH)
        .variables(json!({"token": next}))
        .send()
        .await;
    assert_eq!(after.error_code(), "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;

    let logout = app
        .graphql(LOGOUT)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    assert_eq!(logout.data()["logout"], true);

    let refresh = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    assert_eq!(refresh.error_code(), "UNAUTHENTICATED");
    let bogus = app
        .graphql(LOGOUT)
        .variables(json!({"token": "not-a-token"}))
        .send()
        .await;
    assert_eq!(bogus.error_code(), "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_can_neither_log_in_nor_write_nor_refresh() {
    let app = TestApp::spawn().await;
    let (ada, session) = app.signed_in("ada").await;

    let deactivated = app
        .graphql("mutation($id: ID!) { deactivateUser(id: $id) { user { active } } }")
        .variables(json!({"id": ada.id}))
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(
        deactivated.data()["deactivateUser"]["user"]["active"],
        false
    );

    let login = app
        .graphql(LOGIN)
        .variables(json!({"input": {"email": ada.email, "password": ada.password}}))
        .send()
        .await;
    assert_eq!(login.error_code(), "FORBIDDEN");
    let write = app
        .graphql(r#"mutation { createPost(input: {title: "t", body: "b"}) { version } }"#)
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(write.error_code(), "UNAUTHENTICATED");
    let refresh = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    assert_eq!(refresh.error_code(), "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let attempt = |password: &str| {
        app.graphql(LOGIN)
            .variables(json!({"input": {"email": ada.email, "password": password}}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            attempt("wrong password!!").await.error_code(),
            "UNAUTHENTICATED"
        );
    }

    let limited = attempt(&ada.password).await;

    assert_eq!(limited.error_code(), "RATE_LIMITED");
    let retry_after = limited.error()["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    // Once the window has passed (here: the failures aged out), the right password works.
    sqlx::query("UPDATE auth.login_failures SET failed_at = failed_at - interval '16 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(attempt(&ada.password).await.body.get("errors").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_failing_across_many_accounts_is_limited() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    for index in 0..20 {
        let response = app
            .graphql(LOGIN)
            .variables(json!({"input": {"email": format!("guess{index}@example.com"), "password": "some password"}}))
            .send()
            .await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED");
    }
    let response = app
        .graphql(LOGIN)
        .variables(json!({"input": {"email": ada.email, "password": ada.password}}))
        .send()
        .await;
    assert_eq!(response.error_code(), "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_service_verifies_the_token_itself() {
    let app = TestApp::spawn_with(TestOptions::default()).await;
    let ada = app.register("ada").await;
    let forged = chronicle_platform::access_token::AccessTokens::new(
        "not the secret",
        std::time::Duration::from_secs(60),
    )
    .issue(ada.id, "ADMIN", uuid::Uuid::now_v7());
    // Straight to the command API with the service credential: the forwarder
    // is trusted to forward, not to vouch for the user.
    let response = app
        .http
        .post(format!("{}/v1/commands", app.command_url()))
        .header("x-service-token", &app.command_api_token)
        .bearer_auth(forged)
        .json(&json!({
            "commandId": uuid::Uuid::now_v7(), "correlationId": uuid::Uuid::now_v7(),
            "command": {"type": "CreatePost", "title": "t", "body": "b", "tags": null, "slug": null},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
}

/// A guess is counted before its password is checked: concurrent guesses
/// cannot all slip in between a check and its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_are_checked_no_more_often_than_the_limit() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let guesses = (0..12).map(|index| {
        app.graphql(LOGIN)
            .variables(
                json!({"input": {"email": ada.email, "password": format!("wrong guess {index}")}}),
            )
            .send()
    });
    let responses = futures::future::join_all(guesses).await;
    let checked = responses
        .iter()
        .filter(|response| response.error_code() == "UNAUTHENTICATED")
        .count();
    let limited = responses
        .iter()
        .filter(|response| response.error_code() == "RATE_LIMITED")
        .count();
    assert_eq!((checked, limited), (5, 7));
}

const WRITE: &str = r#"mutation { createPost(input: {title: "After", body: "b"}) { version } }"#;

/// Signing out ends the session's access tokens at once, for writes and
/// within seconds for reads, not when they expire 15 minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_sessions_access_tokens_at_once() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let session = app.login(&ada).await;
    let other_device = app.login(&ada).await;
    app.graphql(LOGOUT)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await
        .data();

    let write = app
        .graphql(WRITE)
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(write.error_code(), "UNAUTHENTICATED");
    assert!(
        write.error()["message"]
            .as_str()
            .unwrap()
            .contains("session")
    );
    chronicle_tests::eventually(
        std::time::Duration::from_secs(5),
        "reads with the signed-out token to end",
        || async {
            app.graphql(VIEWER)
                .bearer(&session.access_token)
                .send()
                .await
                .body["errors"][0]["extensions"]["code"]
                == "UNAUTHENTICATED"
        },
    )
    .await;
    // The other session is another sign-in: it goes on.
    app.graphql(WRITE)
        .bearer(&other_device.access_token)
        .send()
        .await
        .data();
}

/// A reused refresh token revokes its session: the access tokens issued in
/// it (the thief's and the owner's) stop writing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_ends_its_sessions_access_tokens() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let refreshed = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    let thief_access = refreshed.data()["refreshToken"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.graphql(WRITE).bearer(&thief_access).send().await.data();

    let reuse = app
        .graphql(REFRESH)
        .variables(json!({"token": session.refresh_token}))
        .send()
        .await;
    assert_eq!(reuse.error_code(), "UNAUTHENTICATED");

    for token in [&session.access_token, &thief_access] {
        let write = app.graphql(WRITE).bearer(token).send().await;
        assert_eq!(write.error_code(), "UNAUTHENTICATED");
    }
}
