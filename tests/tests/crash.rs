//! The projector killed with SIGKILL, repeatedly, under load: nothing lost,
//! nothing applied twice. The final read models and index equal a replay.

use std::process::Stdio;
use std::time::Duration;

use chronicle_tests::{TestApp, TestOptions, workload};

fn spawn_projector(app: &TestApp) -> tokio::process::Child {
    tokio::process::Command::new(chronicle_tests::binary("projector"))
        .arg(format!(
            "--http-addr=127.0.0.1:{}",
            chronicle_tests::free_port()
        ))
        .args(app.projector_args())
        .arg("serve")
        .env("RUST_LOG", "warn,projector::search=debug")
        .stdout(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("/tmp/crash-projector.log")
                .unwrap(),
        )
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the projector binary (built by cargo test --workspace)")
}

async fn applied(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stream_versions")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_projector_mid_batch_under_load_loses_and_duplicates_nothing() {
    let mut app = TestApp::spawn_with(TestOptions {
        projector: false,
        // Small batches: a kill lands mid-batch more often.
        projector_batch_size: 20,
        ..TestOptions::default()
    })
    .await;
    let load = {
        let pool = app.pool.clone();
        tokio::spawn(async move { workload::append_load(&pool, 20, 25, 7).await })
    };

    let mut projector = spawn_projector(&app);
    for kill in 0..4 {
        // Let it apply something, then kill it without warning.
        let before = applied(&app).await;
        chronicle_tests::eventually(
            Duration::from_secs(60),
            "the projector to make progress",
            || async { applied(&app).await > before },
        )
        .await;
        projector.start_kill().unwrap();
        projector.wait().await.unwrap();
        eprintln!(
            "killed the projector ({kill}) with {} streams applied",
            applied(&app).await
        );
        projector = spawn_projector(&app);
    }
    let written = load.await.unwrap();
    assert!(written > 500, "{written}");
    app.drain().await;
    app.drain_search().await;
    // Stop the binary cleanly and compare with a replay from the event store.
    let pid = projector.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    projector.wait().await.unwrap();
    app.start_projector().await;

    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM projector.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(dead_letters, 0);
    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed);

    let (live, rebuilt) = app.search_documents_live_and_rebuilt().await;
    assert_eq!(live, rebuilt);
}
