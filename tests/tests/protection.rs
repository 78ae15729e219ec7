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
async fn a_limit_holds_across_replicas() {
    chronicle_tests::clear_of_a_minutes_end().await;
    let app = TestApp::spawn_with(limited(8, 100)).await;
    let other = app.spawn_extra_query_service().await;
    let send = |url: String| {
        let http = app.http.clone();
        async move {
            http.post(format!("{url}/graphql"))
                .json(&serde_json::json!({"query": "{ posts { totalCount } }"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // One client spends its limit on the first replica…
    for _ in 0..8 {
        assert_eq!(send(app.query_url().to_owned()).await, 200);
    }
    // …and, once the replicas have shared their counts, the second refuses
    // it too (alone it would allow 8 more). It reads the shared count in its
    // next sync after it first sees the client, never holding a request for
    // it: what arrives before that may pass (the bound on overshoot).
    tokio::time::sleep(query_service::rate_limit::SYNC_EVERY * 3).await;
    let first = send(other.url().to_owned()).await;
    tokio::time::sleep(query_service::rate_limit::SYNC_EVERY * 3).await;
    let mut allowed = 0;
    for _ in 0..7 {
        if send(other.url().to_owned()).await == 200 {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 0,
        "the second replica let the client through (first: {first})"
    );
    // The shared count is in Postgres, per client and minute.
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(count), 0)::int8 FROM limits.request_windows WHERE key LIKE 'client:%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(counted >= 8, "{counted}");
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

/// Behind trusted proxies the client is the right-most address a trusted
/// proxy reported, for every limit: what a client writes into
/// X-Forwarded-For itself neither escapes its bucket nor locks others out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_every_limit_keys_on_the_address_the_proxy_saw() {
    // The test client connects from loopback: it plays the proxy.
    let app = TestApp::spawn_with(TestOptions {
        trusted_proxies: Some("127.0.0.0/8".to_owned()),
        ..limited(3, 1_000)
    })
    .await;
    let as_client = |forwarded: &'static str| {
        app.graphql("{ posts { totalCount } }")
            .header("x-forwarded-for", forwarded)
            .send()
    };
    for spoofed in [
        "1.1.1.1, 198.51.100.7",
        "2.2.2.2, 198.51.100.7",
        "198.51.100.7",
    ] {
        assert_eq!(as_client(spoofed).await.status, 200);
    }
    // A new made-up left-most address is still the same client to the proxy.
    assert_eq!(as_client("3.3.3.3, 198.51.100.7").await.status, 429);
    // Another client behind the same proxy has a bucket of its own.
    assert_eq!(as_client("198.51.100.8").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_one_client_guessing_passwords_locks_out_only_itself() {
    let app = TestApp::spawn_with(TestOptions {
        trusted_proxies: Some("127.0.0.0/8".to_owned()),
        ..TestOptions::default()
    })
    .await;
    let ada = app.register("ada").await;
    let login = |email: String, password: String, forwarded: &'static str| {
        app.graphql("mutation($input: LoginInput!) { login(input: $input) { accessToken } }")
            .variables(serde_json::json!({"input": {"email": email, "password": password}}))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    for index in 0..20 {
        let guess = login(
            format!("guess{index}@example.com"),
            "some password".into(),
            "198.51.100.7",
        )
        .await;
        assert_eq!(guess.error_code(), "UNAUTHENTICATED");
    }
    let attacker = login(ada.email.clone(), ada.password.clone(), "198.51.100.7").await;
    assert_eq!(attacker.error_code(), "RATE_LIMITED");
    // Ada, elsewhere behind the same proxy, signs in.
    login(ada.email.clone(), ada.password.clone(), "198.51.100.9")
        .await
        .data();
}
