//! The browser IDE: served by query-service itself, working with nothing but
//! this origin (offline, behind a firewall), under a Content-Security-Policy.

use chronicle_tests::TestApp;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_and_its_assets_come_from_this_origin_under_a_content_security_policy() {
    let app = TestApp::spawn().await;
    let page = app
        .http
        .get(app.graphql_url())
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        !html.contains("<script>"),
        "no inline script may run: {html}"
    );

    let assets: Vec<&str> = html
        .split('"')
        .filter(|part| part.starts_with("/graphql/assets/"))
        .collect();
    assert_eq!(assets.len(), 6, "{assets:?}");
    for asset in assets {
        let response = app
            .http
            .get(format!("{}{asset}", app.query_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            kind.starts_with(if asset.ends_with(".js") {
                "text/javascript"
            } else {
                "text/css"
            }),
            "{asset}: {kind}"
        );
    }
    let missing = app
        .http
        .get(format!("{}/graphql/assets/../Cargo.toml", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Headless Chromium (Debian's `chromium`, installed by `./dev test`) opens
/// the page, types a query, clicks Run and reads the answer; the page asks
/// nothing of any other origin and breaks none of its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_runs_through_graphiql_in_a_browser_with_nothing_from_elsewhere() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    app.published_post(&ada, "Seen through the IDE", &[]).await;
    app.drain().await;

    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}; ./dev test installs Debian's chromium"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/graphiql.mjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(&chromium)
        .arg(app.graphql_url())
        .arg("{ posts(first: 5) { nodes { title } } }")
        .output()
        .await
        .expect("node runs (./dev test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the browser driver said: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "{report}");
    let response = report["response"].as_str().unwrap();
    assert!(response.contains("Seen through the IDE"), "{response}");
    assert_eq!(report["offOrigin"], serde_json::json!([]), "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}
