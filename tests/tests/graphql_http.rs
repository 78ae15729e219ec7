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

/// Cost grows with page sizes times what each item costs, so fan-out and
/// aliases are refused before anything runs, with the cost and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_costs_its_page_sizes_times_its_items_and_fan_out_is_refused_before_it_runs() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    app.published_post(&ada, "Seed", &[]).await;

    let fan_out = "{posts(first:100){nodes{author{posts(first:100){nodes{author{posts(first:100){nodes{id}}}}}}}}}";
    let started = std::time::Instant::now();
    let response = app.graphql(fan_out).send().await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    let error = response.error();
    let cost = error["extensions"]["cost"].as_u64().unwrap();
    let limit = error["extensions"]["limit"].as_u64().unwrap();
    assert!(cost > 1_000_000 && limit == 10_000, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&cost.to_string()) && message.contains("10000"),
        "{message}"
    );
    assert!(
        response.body.get("data").is_none(),
        "refused before execution: {}",
        response.body
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    let tree = "posts(first:100){nodes{comments(first:100){nodes{replies(first:100){nodes{id}}}}}}";
    let aliases: String = (0..60).map(|index| format!("a{index}: {tree} ")).collect();
    let aliased = app.graphql(&format!("{{ {aliases} }}")).send().await;
    assert_eq!(aliased.error_code(), "BAD_USER_INPUT");
    assert!(aliased.error()["extensions"]["cost"].as_u64().unwrap() > 60 * 1_000_000);

    // Variables count as much as literals.
    let by_variable = app
        .graphql("query($n: Int) { posts(first: $n) { nodes { comments(first: $n) { nodes { replies(first: $n) { nodes { id } } } } } } }")
        .variables(json!({"n": 100}))
        .send()
        .await;
    assert_eq!(by_variable.error_code(), "BAD_USER_INPUT");

    // What a client asks for in practice passes: a full page with its authors,
    // and a page of posts with a page of comments each.
    app.graphql("{ posts(first: 100) { totalCount pageInfo { endCursor } nodes { id title excerpt tags publishedAt commentCount author { handle displayName } } } }")
        .send()
        .await
        .data();
    app.graphql("{ posts(first: 20) { nodes { title comments(first: 20) { nodes { body author { handle } } } } } }")
        .send()
        .await
        .data();
}

/// GraphQL over HTTP, for requests that are not well-formed GraphQL requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_graphql_requests_get_4xx_without_data_or_made_up_locations() {
    let app = TestApp::spawn().await;
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.graphql_url())
            .header("accept", "application/graphql-response+json")
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };

    // A document that fails to parse or validate: 4xx, and no `data` entry.
    for query in [
        r#"{"query": "{ posts { "}"#,
        r#"{"query": "{ nosuchfield }"}"#,
    ] {
        let response = post(query, Some("application/json")).await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }

    // No Content-Type: the server cannot know what it was sent.
    let untyped = post(r#"{"query": "{ posts { totalCount } }"}"#, None)
        .await
        .unwrap();
    assert_eq!(untyped.status(), 415);
    let text_plain = post(r#"{"query": "{ __typename }"}"#, Some("text/plain"))
        .await
        .unwrap();
    assert_eq!(text_plain.status(), 415);

    // No `query` parameter is no request, not an empty document.
    let misspelt = post(r#"{"qeury": "{ __typename }"}"#, Some("application/json"))
        .await
        .unwrap();
    assert_eq!(misspelt.status(), 400);
    let body: Value = misspelt.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("query")
    );

    // A body that is not JSON: an error without a (made-up) location.
    let garbage = post("{not json", Some("application/json")).await.unwrap();
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    for error in body["errors"].as_array().unwrap() {
        for location in error["locations"].as_array().into_iter().flatten() {
            assert!(location["line"].as_u64().unwrap() >= 1, "{body}");
        }
    }
}

/// `/metrics` says a lot about the system; it is served apart, not to the public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_served_on_the_public_port() {
    let app = TestApp::spawn().await;
    let public = app
        .http
        .get(format!("{}/metrics", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let private = app
        .http
        .get(format!("{}/metrics", app.query_metrics_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    assert!(private.text().await.unwrap().contains("# TYPE"));
}
