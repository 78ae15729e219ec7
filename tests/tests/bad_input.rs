//! Whatever arrives at the public endpoint, the answer is a clear client
//! error (or a correct answer), never a 5xx or a panic, and nothing is written.

use chronicle_tests::TestApp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Attack {
    /// Arbitrary bytes as a JSON body.
    RawBody(Vec<u8>),
    /// A GraphQL document of arbitrary text.
    Query(String),
    /// A real mutation with variables of the wrong shape or size.
    Variables(Value),
    /// Nested selections far past any limit.
    Deep(usize),
    /// A garbage bearer token, consistency token or idempotency key.
    Headers {
        authorization: String,
        consistency: String,
        idempotency: String,
    },
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (1usize..300_000).prop_map(|size| Value::from("x".repeat(size))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(Attack::RawBody),
        "[{}()a-zA-Z0-9:$!@#\"\\\\ ,.\\-]{0,200}".prop_map(Attack::Query),
        json_value().prop_map(Attack::Variables),
        (20usize..400).prop_map(Attack::Deep),
        (".{0,80}", ".{0,80}", ".{0,300}").prop_map(|(authorization, consistency, idempotency)| {
            Attack::Headers {
                authorization,
                consistency,
                idempotency,
            }
        }),
    ]
}

const CODES: &[&str] = &[
    "BAD_USER_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
];

async fn send(app: &TestApp, attack: &Attack) -> (u16, String) {
    let http = &app.http;
    let url = app.graphql_url();
    let request = match attack {
        Attack::RawBody(bytes) => http
            .post(&url)
            .header("content-type", "application/json")
            .body(bytes.clone()),
        Attack::Query(query) => http.post(&url).json(&json!({"query": query})),
        Attack::Variables(variables) => http.post(&url).json(&json!({
            "query": "mutation($input: CreatePostInput!) { createPost(input: $input) { version } }",
            "variables": {"input": variables},
        })),
        Attack::Deep(depth) => {
            let query = format!(
                "{{{}{}}}",
                "posts { nodes { author { ".repeat(*depth),
                "} } }".repeat(*depth)
            );
            http.post(&url).json(&json!({"query": query}))
        }
        Attack::Headers {
            authorization,
            consistency,
            idempotency,
        } => {
            let mut request = http.post(&url).json(&json!({
                "query": "mutation { createPost(input: {title: \"t\", body: \"b\"}) { version } }"
            }));
            for (name, value) in [
                ("authorization", format!("Bearer {authorization}")),
                ("x-consistency-token", consistency.clone()),
                ("idempotency-key", idempotency.clone()),
            ] {
                if reqwest::header::HeaderValue::from_str(&value).is_ok() {
                    request = request.header(name, value);
                }
            }
            request
        }
    };
    let response = request.send().await.expect("the query-service answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_always_gets_a_clear_client_error_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let runtime = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&attack(), |attack| {
        let (status, body) = tokio::task::block_in_place(|| runtime.block_on(send(&app, &attack)));
        prop_assert!(status < 500, "{status} for {attack:?}: {body}");
        // Every error is a coded client error.
        if let Ok(response) = serde_json::from_str::<Value>(&body)
            && let Some(errors) = response.get("errors").and_then(Value::as_array)
        {
            for error in errors {
                let code = error["extensions"]["code"].as_str().unwrap_or("none");
                prop_assert!(CODES.contains(&code), "code {code} for {attack:?}: {body}");
            }
        }
        Ok(())
    });
    result.unwrap();

    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events_after, events_before, "nothing was written");
    let ready = app
        .http
        .get(format!("{}/health/ready", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still standing");
}
