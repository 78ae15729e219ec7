//! One trace from the GraphQL mutation through the command-service, the
//! relay and Kafka to the projector's apply (W3C trace context all the way).
//! In a binary of its own: it installs the process's span exporter.

use std::time::Duration;

use chronicle_tests::{TestApp, read_topic};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_is_one_trace_from_the_request_to_the_projection() {
    let exporter = InMemorySpanExporter::default();
    chronicle_platform::telemetry::init_with_exporter("tests", "warn", exporter.clone());
    let app = TestApp::spawn().await;

    let response = app
        .graphql("mutation($input: RegisterUserInput!) { registerUser(input: $input) { user { id } } }")
        .variables(json!({"input": {
            "email": "ada@example.com", "handle": "ada", "displayName": "Ada", "password": "analytical engine 1843",
        }}))
        .header("traceparent", &format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await;
    response.data();

    // The stored event and the Kafka message carry the trace on.
    let stored: serde_json::Value = sqlx::query_scalar("SELECT metadata FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        stored["traceparent"].as_str().unwrap().contains(TRACE_ID),
        "{stored}"
    );
    let messages = read_topic(&app.topic, 1, Duration::from_secs(30)).await;
    assert!(
        messages[0]
            .header("traceparent")
            .unwrap()
            .contains(TRACE_ID)
    );

    // And every hop made a span in that trace.
    let wanted = ["request", "command", "relay.publish", "projector.apply"];
    chronicle_tests::eventually(
        Duration::from_secs(10),
        "the spans of every hop",
        || async {
            let spans = exporter.get_finished_spans().unwrap_or_default();
            wanted.iter().all(|name| {
                spans.iter().any(|span| {
                    span.name == *name && span.span_context.trace_id().to_string() == TRACE_ID
                })
            })
        },
    )
    .await;
    let spans = exporter.get_finished_spans().unwrap();
    let requests = spans
        .iter()
        .filter(|span| {
            span.name == "request" && span.span_context.trace_id().to_string() == TRACE_ID
        })
        .count();
    assert!(
        requests >= 2,
        "the query-service's and the command-service's requests"
    );
}
