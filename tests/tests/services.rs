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
    for service in ["command-service", "projector", "query-service"] {
        let port = chronicle_tests::free_port();
        let mut child = tokio::process::Command::new(chronicle_tests::binary(service))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &app.database_url)
            .env("KAFKA_TOPIC", &app.topic)
            .env("PROJECTOR_GROUP", format!("{}-binary", app.consumer_group))
            // Never the default, relative to the working directory.
            .env("SEARCH_INDEX_DIR", app.search_index_dir.join("binary"))
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
        chronicle_tests::wait_ready(&app.http, &format!("http://127.0.0.1:{port}")).await;

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

/// Passwords and tokens never reach the logs, even at the most verbose level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_is_ever_logged() {
    let app = TestApp::spawn().await;
    let logs = std::env::temp_dir().join(format!("chronicle-logs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    let (command_port, query_port) = (chronicle_tests::free_port(), chronicle_tests::free_port());
    let mut children = Vec::new();
    for (service, port) in [
        ("command-service", command_port),
        ("query-service", query_port),
    ] {
        let output = std::fs::File::create(logs.join(format!("{service}.log"))).unwrap();
        let child = tokio::process::Command::new(chronicle_tests::binary(service))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", &app.database_url)
            .env("KAFKA_TOPIC", &app.topic)
            .env("JWT_SECRET", &app.jwt_secret)
            .env("COMMAND_API_TOKEN", &app.command_api_token)
            .env(
                "COMMAND_SERVICE_URL",
                format!("http://127.0.0.1:{command_port}"),
            )
            .env("RELAY_ENABLED", "false")
            .env("CONSISTENCY_TIMEOUT_MS", "200")
            .env("RUST_LOG", "trace")
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        children.push(child);
        chronicle_tests::wait_ready(&app.http, &format!("http://127.0.0.1:{port}")).await;
    }
    let graphql = format!("http://127.0.0.1:{query_port}/graphql");
    let password = "Zebra-Secret-Passphrase-42";
    let register = serde_json::json!({
        "query": "mutation($input: RegisterUserInput!) { registerUser(input: $input) { version } }",
        "variables": {"input": {"email": "ada@example.com", "handle": "ada", "displayName": "Ada", "password": password}},
    });
    app.http
        .post(&graphql)
        .json(&register)
        .send()
        .await
        .unwrap();
    let login = serde_json::json!({
        "query": "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }",
        "variables": {"input": {"email": "ada@example.com", "password": password}},
    });
    let session: serde_json::Value = app
        .http
        .post(&graphql)
        .json(&login)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = session["data"]["login"]["accessToken"]
        .as_str()
        .expect("signed in")
        .to_owned();
    let refresh = session["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refreshed = serde_json::json!({
        "query": "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken } }",
        "variables": {"token": refresh},
    });
    app.http
        .post(&graphql)
        .bearer_auth(&access)
        .json(&refreshed)
        .send()
        .await
        .unwrap();

    for mut child in children {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    let mut seen_lines = 0;
    for service in ["command-service", "query-service"] {
        let log = std::fs::read_to_string(logs.join(format!("{service}.log"))).unwrap();
        seen_lines += log.lines().count();
        for (what, secret) in [
            ("password", password),
            ("access token", &access),
            ("refresh token", &refresh),
        ] {
            assert!(!log.contains(secret), "the {what} is in the {service} log");
        }
    }
    assert!(
        seen_lines > 50,
        "the services logged at trace level ({seen_lines} lines)"
    );
    let _ = std::fs::remove_dir_all(logs);
}

/// A guessable secret is never used: a service refuses to start with a
/// template's placeholder or a key under 32 bytes, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_refuse_to_start_with_a_placeholder_or_short_secret() {
    let strong = "mjzuPkpaEEtM5Vwp54hZFjIREKLMXMotkmyR25RFVcpvp0M";
    for service in ["command-service", "query-service"] {
        for (jwt_secret, expected) in [
            ("dev-only-jwt-secret-change-me", "placeholder"),
            ("short-secret", "at least 32"),
        ] {
            let output = tokio::process::Command::new(chronicle_tests::binary(service))
                .env("HTTP_ADDR", "127.0.0.1:0")
                .env("METRICS_ADDR", "127.0.0.1:0")
                .env("JWT_SECRET", jwt_secret)
                .env("COMMAND_API_TOKEN", strong)
                .env("RELAY_ENABLED", "false")
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(20), output)
                .await
                .unwrap_or_else(|_| panic!("{service} started with JWT_SECRET={jwt_secret}"))
                .unwrap();
            assert!(!output.status.success(), "{service} accepted {jwt_secret}");
            let said = String::from_utf8_lossy(&output.stderr).to_string()
                + &String::from_utf8_lossy(&output.stdout);
            assert!(
                said.contains("JWT_SECRET") && said.contains(expected),
                "{service}: {said}"
            );
        }
    }
}
