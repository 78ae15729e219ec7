//! Search: GraphQL `search` and REST `GET /search` over the tantivy index.

use chronicle_tests::{Session, TestApp};
use projector::rebuild::{Projection, RebuildOptions};
use serde_json::{Value, json};
use uuid::Uuid;

const SEARCH: &str = "query($q: String!, $filter: SearchFilter, $first: Int, $after: String) {
  search(query: $q, filter: $filter, first: $first, after: $after) {
    totalCount tookMs
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor score node { id title } highlights { title body } }
  }
}";

async fn post(
    app: &TestApp,
    session: &Session,
    title: &str,
    body: &str,
    tags: &[&str],
) -> (Uuid, String) {
    let response = app
        .graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } } }")
        .variables(json!({"input": {"title": title, "body": body, "tags": tags}}))
        .bearer(&session.access_token)
        .send()
        .await;
    let id: Uuid = response.data()["createPost"]["post"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let published = app
        .graphql("mutation($id: ID!) { publishPost(id: $id) { consistencyToken } }")
        .variables(json!({"id": id}))
        .bearer(&session.access_token)
        .send()
        .await;
    (
        id,
        published.data()["publishPost"]["consistencyToken"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn search(app: &TestApp, query: &str, extra: Value) -> Value {
    let mut variables = json!({"q": query});
    if let Value::Object(extra) = extra {
        variables.as_object_mut().unwrap().extend(extra);
    }
    app.graphql(SEARCH).variables(variables).send().await.data()["search"].clone()
}

fn titles(result: &Value) -> Vec<String> {
    result["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_posts_are_found_ranked_and_highlighted_drafts_are_not() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    post(
        &app,
        &ada,
        "Event sourcing in practice",
        "Events are facts. Kafka carries them.",
        &["cqrs"],
    )
    .await;
    post(
        &app,
        &ada,
        "Notes on databases",
        "Postgres is where event sourcing keeps its facts.",
        &["postgres"],
    )
    .await;
    app.create_post(&ada, "Event sourcing draft", &[]).await;
    let (deleted, _) = post(&app, &ada, "Deleted event sourcing post", "gone", &[]).await;
    app.graphql("mutation($id: ID!) { deletePost(id: $id) { version } }")
        .variables(json!({"id": deleted}))
        .bearer(&ada.access_token)
        .send()
        .await
        .data();
    app.drain_search().await;

    let result = search(&app, "event sourcing", json!({})).await;

    // The title match ranks above the body match; drafts and deleted posts never show.
    assert_eq!(
        titles(&result),
        vec!["Event sourcing in practice", "Notes on databases"]
    );
    assert_eq!(result["totalCount"], 2);
    assert!(result["tookMs"].as_f64().unwrap() >= 0.0);
    let first = &result["edges"][0];
    assert!(
        first["highlights"]["title"]
            .as_str()
            .unwrap()
            .contains("<mark>Event</mark>")
    );
    let second = &result["edges"][1];
    assert_eq!(second["highlights"]["title"], Value::Null);
    assert!(
        second["highlights"]["body"]
            .as_str()
            .unwrap()
            .contains("<mark>event</mark> <mark>sourcing</mark>")
    );
    assert!(first["score"].as_f64().unwrap() > second["score"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phrases_exclusions_and_filters_narrow_the_results() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (_, bob) = app.signed_in("bob").await;
    post(
        &app,
        &ada,
        "Kafka streams explained",
        "Partitions keep order per key.",
        &["kafka"],
    )
    .await;
    post(
        &app,
        &ada,
        "Streams of consciousness",
        "Kafka wrote stories.",
        &["books"],
    )
    .await;
    post(
        &app,
        &bob,
        "Kafka operations",
        "Running streams in production.",
        &["kafka", "ops"],
    )
    .await;
    app.drain_search().await;

    assert_eq!(
        titles(&search(&app, "\"kafka streams\"", json!({})).await),
        vec!["Kafka streams explained"]
    );
    let without_books = titles(&search(&app, "kafka -books", json!({})).await);
    assert_eq!(without_books.len(), 2);
    assert!(!without_books.contains(&"Streams of consciousness".to_owned()));
    let by_bob = search(&app, "kafka", json!({"filter": {"authorHandle": "BOB"}})).await;
    assert_eq!(titles(&by_bob), vec!["Kafka operations"]);
    let tagged = search(&app, "kafka", json!({"filter": {"tags": ["kafka", "ops"]}})).await;
    assert_eq!(titles(&tagged), vec!["Kafka operations"]);
    let future = search(
        &app,
        "kafka",
        json!({"filter": {"publishedAfter": "2999-01-01T00:00:00Z"}}),
    )
    .await;
    assert_eq!(future["totalCount"], 0);
    let past = search(
        &app,
        "kafka",
        json!({"filter": {"publishedBefore": "2000-01-01T00:00:00Z"}}),
    )
    .await;
    assert_eq!(past["totalCount"], 0);
    let window = search(&app, "kafka", json!({"filter": {"publishedAfter": "2000-01-01T00:00:00Z", "publishedBefore": "9999-12-31T00:00:00Z"}})).await;
    assert_eq!(window["totalCount"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highlights_are_html_escaped() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    post(
        &app,
        &ada,
        "Escaping <script>alert(1)</script> safely",
        "Body with <b>tags</b> and escaping.",
        &[],
    )
    .await;
    app.drain_search().await;

    let result = search(&app, "escaping", json!({})).await;
    let title = result["edges"][0]["highlights"]["title"].as_str().unwrap();
    assert!(title.contains("&lt;script&gt;"), "{title}");
    assert!(!title.contains("<script>"));
    assert!(title.contains("<mark>Escaping</mark>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_result_exactly_once() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    for number in 0..7 {
        post(
            &app,
            &ada,
            &format!("Paging post {number}"),
            "About paging.",
            &[],
        )
        .await;
    }
    app.drain_search().await;

    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = search(&app, "paging", json!({"first": 3, "after": after})).await;
        assert_eq!(page["totalCount"], 7);
        seen.extend(titles(&page));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(unique.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_query_is_bad_input_never_a_server_error() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    post(&app, &ada, "Something", "to search", &[]).await;
    app.drain_search().await;
    for query in [
        "title:",
        "\"unbalanced",
        "nosuchfield:x",
        "",
        "-only",
        &"x".repeat(501),
    ] {
        let response = app
            .graphql(SEARCH)
            .variables(json!({"q": query}))
            .send()
            .await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{query}: {}",
            response.body
        );
        assert!(response.error()["extensions"]["fields"]["query"].is_string());

        let rest = app
            .http
            .get(format!("{}/search", app.query_url()))
            .query(&[("q", query)])
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 400, "{query}");
        let body: Value = rest.json().await.unwrap();
        assert_eq!(body["code"], "BAD_USER_INPUT");
        assert!(body["message"].as_str().unwrap().len() > 5);
    }
    let bad_cursor = app
        .graphql(SEARCH)
        .variables(json!({"q": "something", "after": "garbage"}))
        .send()
        .await;
    assert_eq!(bad_cursor.error_code(), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_search_answers_the_documented_shape() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (id, _) = post(
        &app,
        &ada,
        "REST and search",
        "Search over HTTP.",
        &["http"],
    )
    .await;
    app.drain_search().await;

    let response = app
        .http
        .get(format!(
            "{}/search?q=search&tag=http&author=ada&first=5",
            app.query_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["totalCount"], 1);
    let hit = &body["hits"][0];
    assert_eq!(hit["id"], id.to_string());
    assert_eq!(hit["slug"], "rest-and-search");
    assert_eq!(hit["author"]["handle"], "ada");
    assert_eq!(hit["tags"], json!(["http"]));
    assert!(hit["publishedAt"].is_string());
    assert!(
        hit["highlights"]["title"]
            .as_str()
            .unwrap()
            .contains("<mark>")
    );
    assert!(body["endCursor"].is_string() && body["tookMs"].is_number());

    let openapi: Value = app
        .http
        .get(format!("{}/openapi.json", app.query_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(openapi["paths"]["/search"]["get"]["parameters"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_token_makes_search_wait_for_the_index_even_across_a_rebuild() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (_, token) = post(&app, &ada, "Freshly published", "Right now.", &[]).await;

    // No waiting in the client: the token makes the query wait for the index.
    let found = app
        .graphql(SEARCH)
        .variables(json!({"q": "freshly"}))
        .header("x-consistency-token", &token)
        .send()
        .await;
    assert_eq!(found.data()["search"]["totalCount"], 1);

    app.rebuilder()
        .run(Projection::Search, RebuildOptions { swap: true })
        .await
        .unwrap();
    let (_, token) = post(
        &app,
        &ada,
        "Published after the swap",
        "New generation.",
        &[],
    )
    .await;
    let after_swap = app
        .graphql(SEARCH)
        .variables(json!({"q": "swap"}))
        .header("x-consistency-token", &token)
        .send()
        .await;
    assert_eq!(
        after_swap.data()["search"]["totalCount"],
        1,
        "query-service follows the new generation"
    );
    let old = app
        .graphql(SEARCH)
        .variables(json!({"q": "freshly"}))
        .send()
        .await;
    assert_eq!(old.data()["search"]["totalCount"], 1);
}

/// A cursor is input like any other: one whose offset is absurd is refused
/// (it once went straight into the index and ended the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_the_deepest_page_is_bad_input_and_the_service_lives_on() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    post(&app, &ada, "Something", "to search", &[]).await;
    app.drain_search().await;
    let huge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("search:1000000000000000");
    let overflow =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("search:{}", u64::MAX));
    for cursor in [&huge, &overflow, &"A".repeat(5000)] {
        let rest = app
            .http
            .get(format!("{}/search", app.query_url()))
            .query(&[("q", "x"), ("after", cursor.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 400);
        let body: Value = rest.json().await.unwrap();
        assert_eq!(body["code"], "BAD_USER_INPUT", "{body}");
        assert!(body["fields"]["after"].is_string(), "{body}");

        let graphql = app
            .graphql(SEARCH)
            .variables(json!({"q": "zzqqnomatch", "after": cursor}))
            .send()
            .await;
        assert_eq!(graphql.error_code(), "BAD_USER_INPUT");
    }
    // Still serving.
    let result = search(&app, "something", json!({})).await;
    assert_eq!(result["totalCount"], 1);
}

/// The syntax users get: words, "phrases", -exclusions and field:term on the
/// documented fields; every other operator is refused by name, before any of
/// it runs against the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_syntax_is_words_phrases_exclusions_and_fields_and_refuses_the_rest_by_name() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    post(
        &app,
        &ada,
        "Kafka streams",
        "Exactly once delivery.",
        &["kafka"],
    )
    .await;
    post(&app, &ada, "Kafka and Java", "Old clients.", &["java"]).await;
    app.drain_search().await;

    let found = |query: &'static str| {
        let app = &app;
        async move { titles(&search(app, query, json!({})).await) }
    };
    assert_eq!(found("kafka -java").await, vec!["Kafka streams"]);
    assert_eq!(found("title:kafka tag:java").await, vec!["Kafka and Java"]);
    assert_eq!(found("body:\"exactly once\"").await, vec!["Kafka streams"]);
    assert_eq!(
        found("kafka author:ada -tag:java").await,
        vec!["Kafka streams"]
    );

    for (query, named) in [
        ("*", "wildcards"),
        ("body:*", "wildcards"),
        ("title:[a TO zzzz]", "ranges"),
        ("\"kafka streams\"~4294967295", "proximity"),
        ("kafka~2", "fuzzy"),
        ("kafka^9", "boosts"),
        ("kafka OR java", "boolean"),
        ("secret:x", "no field"),
    ] {
        let response = app
            .graphql(SEARCH)
            .variables(json!({"q": query}))
            .send()
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{query}");
        let message = response.error()["message"].as_str().unwrap();
        assert!(message.contains(named), "{query}: {message}");
        let rest = app
            .http
            .get(format!("{}/search", app.query_url()))
            .query(&[("q", query)])
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 400, "{query}");
    }
}

/// Search applies the visibility `posts` does, counts included, on both
/// endpoints: a deactivated author's posts are gone from hits and totals;
/// drafts change neither results, counts nor scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_shows_and_counts_what_lists_show_and_drafts_change_no_score() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (bob_user, bob) = app.signed_in("bob").await;
    let (_, admin) = app
        .signed_in_as("admin", chronicle_schema::Role::Admin)
        .await;
    post(
        &app,
        &ada,
        "Kafka internals",
        "Partitions and offsets.",
        &[],
    )
    .await;
    post(&app, &bob, "Kafka streams", "Kafka for streams.", &[]).await;
    app.graphql("mutation($id: ID!) { deactivateUser(id: $id) { version } }")
        .variables(json!({"id": bob_user.id}))
        .bearer(&admin.access_token)
        .send()
        .await
        .data();
    app.drain_search().await;

    let graphql = search(&app, "kafka", json!({})).await;
    assert_eq!(titles(&graphql), vec!["Kafka internals"]);
    assert_eq!(graphql["totalCount"], 1);
    let rest: Value = app
        .http
        .get(format!("{}/search", app.query_url()))
        .query(&[("q", "kafka")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["totalCount"], 1, "{rest}");
    assert_eq!(rest["hits"].as_array().unwrap().len(), 1, "{rest}");
    assert!(!rest.to_string().contains("bob"), "{rest}");

    let score = graphql["edges"][0]["score"].as_f64().unwrap();
    for _ in 0..3 {
        app.create_post(&ada, "Kafka kafka kafka, a draft", &[])
            .await;
    }
    app.drain_search().await;
    let after = search(&app, "kafka", json!({})).await;
    assert_eq!(after["totalCount"], 1);
    assert_eq!(after["edges"][0]["score"].as_f64().unwrap(), score);
}
