//! GraphQL over HTTP as the spec says, and the limits that keep a query cheap.

use chronicle_tests::TestApp;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_work_over_get_and_mutations_are_refused_there() {
    let app = TestApp::spawn().await;
    let query = app
        .http
        .get(app.graphql_url())
        .query(&[("query", "{ posts { totalCount } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let body: Value = query.json().await.unwrap();
    assert_eq!(body["data"]["posts"]["totalCount"], 0);

    let mutation = app
        .http
        .get(app.graphql_url())
        .query(&[("query", "mutation { logout(refreshToken: \"x\") }")])
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);
    assert_eq!(mutation.headers()["allow"], "POST");
    let body: Value = mutation.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_media_type_and_status_follow_what_the_client_accepts() {
    let app = TestApp::spawn().await;
    let send = |accept: &'static str, query: &'static str| {
        app.http
            .post(app.graphql_url())
            .header("accept", accept)
            .json(&json!({"query": query}))
            .send()
    };
    let modern_ok = send(
        "application/graphql-response+json",
        "{ posts { totalCount } }",
    )
    .await
    .unwrap();
    assert_eq!(modern_ok.status(), 200);
    assert_eq!(
        modern_ok.headers()["content-type"],
        "application/graphql-response+json"
    );

    let modern_invalid = send("application/graphql-response+json", "{ nosuchfield }")
        .await
        .unwrap();
    assert_eq!(
        modern_invalid.status(),
        400,
        "a request error is a 4xx in the modern media type"
    );
    let legacy_invalid = send("application/json", "{ nosuchfield }").await.unwrap();
    assert_eq!(
        legacy_invalid.status(),
        200,
        "application/json always answers 200"
    );
    assert_eq!(legacy_invalid.headers()["content-type"], "application/json");
    let body: Value = legacy_invalid.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let syntax = send("application/graphql-response+json", "{ posts { ")
        .await
        .unwrap();
    assert_eq!(syntax.status(), 400);
    let unauthenticated = app
        .http
        .post(app.graphql_url())
        .header("accept", "application/graphql-response+json")
        .bearer_auth("not-a-token")
        .json(&json!({"query": "{ viewer { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_costly_or_oversized_pages_are_refused() {
    let app = TestApp::spawn().await;
    // posts > nodes > author > posts > nodes > author > ... twenty levels down.
    let mut deep = "title".to_owned();
    for _ in 0..7 {
        deep = format!("posts {{ nodes {{ author {{ {deep} }} }} }}");
    }
    let deep = format!("{{ {} }}", deep.replacen("title", "handle", 1));
    let response = app.graphql(&deep).send().await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert!(
        response.error()["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nested"),
        "{}",
        response.body
    );

    let aliases: String = (0..600)
        .map(|index| format!("a{index}: posts {{ totalCount }} "))
        .collect();
    let costly = app.graphql(&format!("{{ {aliases} }}")).send().await;
    assert_eq!(costly.error_code(), "BAD_USER_INPUT");

    let too_many = app
        .graphql("{ posts(first: 101) { totalCount } }")
        .send()
        .await;
    assert_eq!(too_many.error_code(), "BAD_USER_INPUT");
    assert!(too_many.error()["extensions"]["fields"]["first"].is_string());
    let both = app
        .graphql("{ posts(first: 1, last: 1) { totalCount } }")
        .send()
        .await;
    assert_eq!(both.error_code(), "BAD_USER_INPUT");
    let bad_cursor = app
        .graphql("{ posts(after: \"bm9wZQ\") { totalCount } }")
        .send()
        .await;
    assert_eq!(bad_cursor.error_code(), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_to_browsers() {
    let app = TestApp::spawn().await;
    let page = app
        .http
        .get(app.graphql_url())
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}
