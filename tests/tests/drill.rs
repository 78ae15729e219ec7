//! The scale-out drill: two instances of each service (their binaries) behind
//! HAProxy: command-services, read-model projectors sharing the partitions,
//! and query-services each with a search sidecar of its own (the projector
//! in its search role, on the replica's own index directory); one instance of
//! each is killed (SIGKILL) mid-load. Clients retry what failed with the same
//! idempotency key, as a client should. Nothing acknowledged is lost or
//! doubled, and in the end the read models and every search index are what a
//! replay of the event store builds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chronicle_schema::search_schema::IndexLayout;
use chronicle_tests::{
    ServiceProcess, TestApp, TestOptions, eventually, free_port, search, wait_ready,
};
use projector::rebuild::{Projection, RebuildOptions};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

const WRITERS: usize = 4;
const POSTS_PER_WRITER: usize = 12;

/// A service binary of the fleet; only errors are logged.
async fn start_binary(name: &str, args: Vec<String>, envs: Vec<(&str, String)>) -> ServiceProcess {
    ServiceProcess::start(name, args, envs, "error", None).await
}

/// Two command-services, two read-model projectors, and two query-service
/// hosts: a query-service and its search sidecar on one index directory.
struct Fleet {
    commands: Vec<ServiceProcess>,
    projectors: Vec<ServiceProcess>,
    sidecars: Vec<ServiceProcess>,
    queries: Vec<ServiceProcess>,
    index_dirs: Vec<PathBuf>,
    front: Front,
}

impl Fleet {
    async fn start(app: &TestApp) -> Fleet {
        let front = Front::reserve();
        let index_dirs: Vec<PathBuf> = (1..=2)
            .map(|i| app.search_index_dir.join(format!("replica-{i}")))
            .collect();
        let mut fleet = Fleet {
            commands: Vec::new(),
            projectors: Vec::new(),
            sidecars: Vec::new(),
            queries: Vec::new(),
            index_dirs,
            front,
        };
        for _ in 0..2 {
            let command =
                start_binary("command-service", app.command_service_args(true), vec![]).await;
            fleet.commands.push(command);
        }
        for i in 0..2 {
            let own = app.search_index_dir.join(format!("read-models-{i}"));
            let args = projector_args(app, "read-models", &own);
            fleet
                .projectors
                .push(start_binary("projector", args, vec![]).await);
            let args = projector_args(app, "search", &fleet.index_dirs[i]);
            fleet
                .sidecars
                .push(start_binary("projector", args, vec![]).await);
        }
        fleet.front.start(&fleet.commands, None).await;
        for i in 0..2 {
            let mut env = app.query_service_env(fleet.front.commands_url(), &fleet.index_dirs[i]);
            env.push(("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()));
            let query = start_binary("query-service", vec![], env).await;
            fleet.queries.push(query);
        }
        fleet
            .front
            .start(&fleet.commands, Some(&fleet.queries))
            .await;
        fleet
    }
}

fn projector_args(app: &TestApp, role: &str, index_dir: &Path) -> Vec<String> {
    app.projector_args()
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--search-index-dir=") {
                format!("--search-index-dir={}", index_dir.display())
            } else {
                arg
            }
        })
        .chain([format!("--role={role}")])
        .collect()
}

/// HAProxy (Debian's, installed by `./dev test`), round robin over the
/// instances that answer `/health/ready`; a request whose connection is
/// refused goes to another instance.
struct Front {
    commands_port: u16,
    queries_port: u16,
    config: PathBuf,
    process: Option<Child>,
}

impl Front {
    fn reserve() -> Front {
        Front {
            commands_port: free_port(),
            queries_port: free_port(),
            config: std::env::temp_dir().join(format!("chronicle-drill-{}.cfg", Uuid::now_v7())),
            process: None,
        }
    }

    fn commands_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.commands_port)
    }

    fn queries_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.queries_port)
    }

    async fn start(&mut self, commands: &[ServiceProcess], queries: Option<&[ServiceProcess]>) {
        let backend = |name: &str, port: u16, instances: &[ServiceProcess]| {
            let servers: String = instances
                .iter()
                .enumerate()
                .map(|(i, instance)| format!("  server {name}-{i} 127.0.0.1:{}\n", instance.port))
                .collect();
            format!(
                "frontend {name}\n  bind 127.0.0.1:{port}\n  default_backend {name}\n\
                 backend {name}\n  balance roundrobin\n  option httpchk GET /health/ready\n{servers}"
            )
        };
        let mut config = String::from(
            "global\n  maxconn 1024\ndefaults\n  mode http\n  option forwardfor\n  option redispatch\n  \
             retries 3\n  retry-on conn-failure\n  timeout connect 1s\n  timeout client 60s\n  \
             timeout server 60s\n  default-server check inter 500ms fall 2 rise 1\n",
        );
        config += &backend("commands", self.commands_port, commands);
        if let Some(queries) = queries {
            config += &backend("queries", self.queries_port, queries);
        }
        std::fs::write(&self.config, config).unwrap();
        if let Some(mut old) = self.process.take() {
            let _ = old.kill().await;
        }
        let process = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy (./dev test installs Debian's)");
        self.process = Some(process);
        wait_ready(&reqwest::Client::new(), &self.commands_url()).await;
        if queries.is_some() {
            wait_ready(&reqwest::Client::new(), &self.queries_url()).await;
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Sends a mutation through the front until it is answered, with one
/// idempotency key for all its attempts (an instance may die holding it).
async fn mutate(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    let key = Uuid::now_v7().to_string();
    for _ in 0..40 {
        let sent = http
            .post(format!("{url}/graphql"))
            .bearer_auth(token)
            .header("idempotency-key", &key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await;
        if let Ok(response) = sent
            && response.status().is_success()
            && let Ok(body) = response.json::<Value>().await
            && body.get("errors").is_none()
        {
            return body["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{query} was never answered through the front");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_everything_behind_a_proxy_lose_nothing_when_one_of_each_is_killed() {
    let app = TestApp::spawn_with(TestOptions {
        partitions: 4,
        relay: false,
        projector_batch_size: 50,
        ..TestOptions::default()
    })
    .await;
    let mut fleet = Fleet::start(&app).await;
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        writers.push(app.signed_in(&format!("drill{i}")).await.1);
    }

    let front = fleet.front.queries_url();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let load = async {
        let mut tasks = Vec::new();
        for (writer, session) in writers.iter().enumerate() {
            let (http, front, token) = (http.clone(), front.clone(), session.access_token.clone());
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut created = Vec::new();
                for n in 0..POSTS_PER_WRITER {
                    let data = mutate(
                        &http,
                        &front,
                        &token,
                        "mutation($input: CreatePostInput!) { createPost(input: $input) { version consistencyToken } }",
                        json!({"input": {"title": format!("drill {writer} post {n}"), "body": "written through the front"}}),
                    )
                    .await;
                    let token_value = data["createPost"]["consistencyToken"].as_str().unwrap().to_owned();
                    let id = token_value
                        .parse::<chronicle_schema::ConsistencyToken>()
                        .expect("a consistency token")
                        .stream_id;
                    mutate(
                        &http,
                        &front,
                        &token,
                        "mutation($id: ID!) { publishPost(id: $id) { version } }",
                        json!({"id": id}),
                    )
                    .await;
                    created.push(id);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                created
            }));
        }
        let mut created = Vec::new();
        for task in tasks {
            created.extend(task.await.unwrap());
        }
        created
    };
    let kill = async {
        // A quarter of the way through the load.
        let total = WRITERS * POSTS_PER_WRITER;
        while done.load(std::sync::atomic::Ordering::Relaxed) < total / 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The relay's leader is one of the two; either way one dies.
        fleet.commands[0].kill().await;
        fleet.projectors[0].kill().await;
        fleet.sidecars[0].kill().await;
        fleet.queries[0].kill().await;
        done.load(std::sync::atomic::Ordering::Relaxed)
    };
    let (created, done_at_kill) = tokio::join!(load, kill);
    assert_eq!(created.len(), WRITERS * POSTS_PER_WRITER);
    assert!(
        done_at_kill < created.len(),
        "the load ended before the kill ({done_at_kill} done)"
    );

    // Every acknowledged post, once, published, through the front.
    app.drain().await;
    let published: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM posts WHERE title LIKE 'drill %' AND status = 'PUBLISHED' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut expected = created.clone();
    expected.sort();
    assert_eq!(published, expected, "lost or doubled posts");
    let counted = http
        .post(format!("{front}/graphql"))
        .json(&json!({"query": "{ posts { totalCount } }"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        counted["data"]["posts"]["totalCount"].as_u64(),
        Some(created.len() as u64)
    );

    // The killed sidecar comes back and catches up from its checkpoint;
    // every index has every post.
    let args = projector_args(&app, "search", &fleet.index_dirs[0]);
    fleet.sidecars[0] = start_binary("projector", args, vec![]).await;
    app.drain_search().await;
    let versions: std::collections::HashMap<Uuid, i32> =
        sqlx::query_as::<_, (Uuid, i32)>("SELECT id, version FROM posts")
            .fetch_all(&app.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for dir in &fleet.index_dirs {
        let layout = IndexLayout::new(dir);
        eventually(Duration::from_secs(60), "every post in every index", || {
            let layout = layout.clone();
            let versions = versions.clone();
            async move {
                let indexed = search::indexed_versions(&layout);
                versions
                    .iter()
                    .all(|(id, version)| indexed.get(id) == Some(version))
            }
        })
        .await;
    }

    // Read models and search indexes as a replay builds them.
    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed);
    let (_, rebuilt) = app.search_documents_live_and_rebuilt().await;
    for dir in &fleet.index_dirs {
        let layout = IndexLayout::new(dir);
        let current = layout.current().unwrap().unwrap();
        assert_eq!(
            search::documents(&layout, current),
            rebuilt,
            "{}",
            dir.display()
        );
    }
}

/// A read-model rebuild may correct rows without any post event on the bus:
/// a search sidecar, which only follows the bus, rebuilds its index from the
/// new rows when the read models are swapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_sidecar_rebuilds_its_index_when_the_read_models_are_replaced() {
    let app = TestApp::spawn().await;
    let dir = app.search_index_dir.join("sidecar");
    let _sidecar = start_binary("projector", projector_args(&app, "search", &dir), vec![]).await;
    let (_, ada) = app.signed_in("ada").await;
    let post = app
        .published_post(&ada, "Indexed by the sidecar", &[])
        .await;
    let layout = IndexLayout::new(&dir);
    eventually(
        Duration::from_secs(30),
        "the sidecar indexes the post",
        || {
            let layout = layout.clone();
            async move { search::indexed_versions(&layout).contains_key(&post) }
        },
    )
    .await;
    let before = layout.current().unwrap().unwrap();

    app.rebuilder()
        .run(Projection::ReadModels, RebuildOptions { swap: true })
        .await
        .unwrap();

    eventually(
        Duration::from_secs(60),
        "a new generation from the new rows",
        || {
            let layout = layout.clone();
            async move {
                layout
                    .current()
                    .ok()
                    .flatten()
                    .is_some_and(|current| current > before)
                    && search::indexed_versions(&layout).contains_key(&post)
            }
        },
    )
    .await;
}
