//! What every service offers operators: health probes, request ids, metrics,
//! and a graceful exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use chronicle_tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_reports_live_started_and_ready_with_its_checks() {
    let app = TestApp::spawn().await;
    let services = [
        app.command_url(),
        app.projector_url().unwrap(),
        app.query_url(),
    ];
    for url in services {
        for probe in ["live", "startup", "ready"] {
            let response = app
                .http
                .get(format!("{url}/health/{probe}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{url}/health/{probe}");
        }
        let ready: serde_json::Value = app
            .http
            .get(format!("{url}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["checks"]["postgres"], "ok", "{url}: {ready}");
    }
    let projector: serde_json::Value = app
        .http
        .get(format!("{}/health/ready", app.projector_url().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projector["checks"]["kafka"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;

    let echoed = app
        .graphql("{ viewer { id } }")
        .header("x-request-id", "req-123")
        .send()
        .await;
    assert_eq!(echoed.headers["x-request-id"], "req-123");

    let generated = app.graphql("{ viewer { id } }").send().await;
    assert!(!generated.headers["x-request-id"].is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_text() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    app.drain().await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.command_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chronicle_events_appended_total"),
        "{metrics}"
    );
    assert!(metrics.contains("http_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_api_refuses_callers_without_the_service_credential() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(format!("{}/v1/commands", app.command_url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
}

/// The binaries, not only the libraries, stop cleanly and promptly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_binary_exits_cleanly_on_sigterm() {
    let app = TestApp::spawn().await;
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    for service in ["command-service", "projector", "query-service"] {
        let port = free_port();
        let mut child = tokio::process::Command::new(bin_dir.join(service))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &app.database_url)
            .env("KAFKA_TOPIC", &app.topic)
            .env("PROJECTOR_GROUP", format!("{}-binary", app.consumer_group))
            .env("JWT_SECRET", &app.jwt_secret)
            .env("COMMAND_API_TOKEN", &app.command_api_token)
            .env("COMMAND_SERVICE_URL", app.command_url())
            .env("RELAY_ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{service} binary: {error} (built by cargo test --workspace)")
            });
        let ready = format!("http://127.0.0.1:{port}/health/ready");
        chronicle_tests::eventually(Duration::from_secs(60), &ready, || async {
            app.http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;

        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{service} did not exit within 20 s of SIGTERM"))
            .unwrap();
        assert!(status.success(), "{service} exited with {status}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
