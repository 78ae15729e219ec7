//! One long transaction anywhere on the cluster holds the relay back (it
//! publishes only below the oldest running transaction). The status names the
//! culprit so an operator can find it. A file of its own: holding a
//! transaction open stalls every relay on the cluster, so no other test of
//! this binary may run beside it.

use std::time::Duration;

use chronicle_schema::Role;
use chronicle_tests::{TestApp, eventually};
use serde_json::{Value, json};

async fn outbox_status(app: &TestApp, token: &str) -> Value {
    let status = app
        .graphql("{ projectionStatus { name state lagEvents detail } }")
        .bearer(token)
        .send()
        .await;
    status.data()["projectionStatus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|projection| projection["name"] == "outbox")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holding_the_outbox_back_is_named_in_the_status() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;

    let mut holder = app.pool.begin().await.unwrap();
    let (pid, xid): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), pg_current_xact_id()::text")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    // Committed after the holder started: it may not be relayed before it.
    app.graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { version } }")
        .variables(json!({"input": {"title": "Held back", "body": "Behind a long transaction.", "tags": []}}))
        .bearer(&admin.access_token)
        .send()
        .await
        .data();

    let culprit = format!("held by xid {xid}, pid {pid}");
    eventually(
        Duration::from_secs(20),
        "the outbox to report HELD",
        || async {
            let outbox = outbox_status(&app, &admin.access_token).await;
            outbox["state"] == "HELD"
                && outbox["lagEvents"].as_i64() > Some(0)
                && outbox["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.starts_with(&culprit))
        },
    )
    .await;

    holder.rollback().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the outbox to catch up",
        || async {
            let outbox = outbox_status(&app, &admin.access_token).await;
            outbox["state"] == "LIVE" && outbox["lagEvents"] == 0 && outbox["detail"].is_null()
        },
    )
    .await;
    app.drain().await;
}
