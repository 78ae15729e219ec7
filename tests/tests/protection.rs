//! Protecting the public API: rate limits with their headers, CORS.

use chronicle_tests::{TestApp, TestOptions};
use serde_json::Value;

fn limited(client: u32, user: u32) -> TestOptions {
    TestOptions {
        rate_limit_per_minute: (client, user),
        ..TestOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_says_where_the_client_stands_and_the_excess_is_refused() {
    let app = TestApp::spawn_with(limited(5, 100)).await;
    for sent in 1..=5 {
        let response = app.graphql("{ posts { totalCount } }").send().await;
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["x-ratelimit-limit"], "5");
        assert_eq!(
            response.headers["x-ratelimit-remaining"],
            (5 - sent).to_string().as_str()
        );
        assert!(
            response.headers["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 60
        );
    }

    let refused = app.graphql("{ posts { totalCount } }").send().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "RATE_LIMITED");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    // The REST endpoint is the same API, behind the same bucket.
    let search = app
        .http
        .get(format!("{}/search?q=x", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 429);
    let body: Value = search.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Operators are not rate-limited out of their probes.
    let health = app
        .http
        .get(format!("{}/health/ready", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_has_a_bucket_of_their_own() {
    let app = TestApp::spawn_with(limited(1_000, 3)).await;
    let (_, ada) = app.signed_in("ada").await;
    for _ in 0..3 {
        let response = app
            .graphql("{ viewer { handle } }")
            .bearer(&ada.access_token)
            .send()
            .await;
        assert_eq!(response.status, 200);
    }
    let refused = app
        .graphql("{ viewer { handle } }")
        .bearer(&ada.access_token)
        .send()
        .await;
    assert_eq!(refused.status, 429);
    // Others from the same address are not held back by Ada's bucket.
    let anonymous = app.graphql("{ viewer { handle } }").send().await;
    assert_eq!(anonymous.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_may_call_from_allowed_origins_only() {
    let app = TestApp::spawn().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.graphql_url())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://blog.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://blog.example.com"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed_headers.contains("idempotency-key"));
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
