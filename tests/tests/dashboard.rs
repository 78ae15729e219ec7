//! The Grafana dashboard shows metrics the services really export.

use std::collections::BTreeSet;

use chronicle_tests::{TestApp, TestOptions};

const DASHBOARD: &str = include_str!("../../ops/grafana/chronicle.json");

/// Metric names in PromQL expressions (the `chronicle_`/`http_` ones).
fn metrics_in_dashboard() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("chronicle_") || word.starts_with("http_") {
                    let name = word
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .trim_end_matches("_sum");
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_on_the_dashboard_is_exported() {
    let app = TestApp::spawn_with(TestOptions {
        image_worker: true,
        ..TestOptions::default()
    })
    .await;
    // Some activity of every kind, so counters and histograms exist.
    let ada = app.register("ada").await;
    let session = app.login(&ada).await;
    let post = app.published_post(&session, "Measured", &["metrics"]).await;
    let uploaded = app
        .upload_image(
            Some(&session),
            post,
            "",
            "m.png",
            chronicle_tests::images::png(64, 64),
        )
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    chronicle_tests::eventually(
        std::time::Duration::from_secs(30),
        "the image to be processed",
        || async {
            app.graphql("query($id: ID!) { post(id: $id) { images { status } } }")
                .variables(serde_json::json!({"id": post}))
                .send()
                .await
                .data()["post"]["images"][0]["status"]
                == "READY"
        },
    )
    .await;
    app.graphql("mutation { login(input: {email: \"ada@example.com\", password: \"wrong one here\"}) { accessToken } }")
        .send()
        .await;
    app.graphql("{ search(query: \"measured\") { totalCount } }")
        .send()
        .await;
    app.drain().await;
    let mut exported = String::new();
    for service in [
        app.command_url(),
        app.projector_url().unwrap(),
        app.query_metrics_url(),
    ] {
        // Gauges reported every few seconds: wait until they appear.
        let url = format!("{service}/metrics");
        chronicle_tests::eventually(
            std::time::Duration::from_secs(15),
            "periodic gauges",
            || async {
                app.http
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .contains("chronicle_db_pool_connections")
            },
        )
        .await;
        exported.push_str(
            &app.http
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let missing: Vec<String> = metrics_in_dashboard()
        .into_iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    // Only failure counters that nothing here provokes may be absent.
    let may_be_absent = [
        "chronicle_rate_limited_total",
        "chronicle_login_rate_limited_total",
        "chronicle_relay_failures_total",
        "chronicle_command_retries_total",
        "chronicle_dead_letters_total",
        "chronicle_projector_batch_failures_total",
        "chronicle_projector_holes_filled_total",
    ];
    let missing: Vec<String> = missing
        .into_iter()
        .filter(|name| !may_be_absent.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows metrics nobody exports: {missing:?}"
    );
}
