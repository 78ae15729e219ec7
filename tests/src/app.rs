use std::time::Duration;

use chronicle_schema::search_schema::IndexLayout;
use clap::Parser;
use futures::StreamExt;
use projector::rebuild::{Projection, RebuildOptions, digest};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::database::TestDatabase;
use crate::graphql::GraphqlRequest;
use crate::kafka::{TestTopic, brokers};

/// Every read-model column, by table (`projector::rebuild::digest`).
pub type Digest = std::collections::BTreeMap<String, String>;
/// A search index's documents, by post.
pub type Documents = std::collections::BTreeMap<uuid::Uuid, String>;

#[derive(Clone, Debug)]
pub struct TestOptions {
    pub partitions: i32,
    /// Start the projector in-process (tests of the write side alone, or of
    /// the projector binary, may not want it).
    pub projector: bool,
    /// Run the outbox relay in the command-service.
    pub relay: bool,
    pub consistency_timeout_ms: u64,
    pub projector_batch_size: usize,
    pub search_commit_interval_ms: u64,
    /// Requests per minute per client, and per user, at the public API.
    pub rate_limit_per_minute: (u32, u32),
    /// Another Kafka than the shared one (a test's private broker).
    pub kafka_brokers: Option<String>,
    /// query-service's TRUSTED_PROXIES (CIDRs), if any.
    pub trusted_proxies: Option<String>,
    /// Start an image worker in-process.
    pub image_worker: bool,
    /// Image uploads per minute per user.
    pub uploads_per_minute: u32,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            partitions: 3,
            projector: true,
            relay: true,
            consistency_timeout_ms: 10_000,
            projector_batch_size: 500,
            search_commit_interval_ms: 100,
            // High enough that no other test meets it.
            rate_limit_per_minute: (100_000, 100_000),
            kafka_brokers: None,
            trusted_proxies: None,
            image_worker: false,
            uploads_per_minute: 100_000,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    url: String,
    /// Where the service serves `/metrics`, when apart from `url`.
    metrics_url: Option<String>,
}

pub struct TestApp {
    pub options: TestOptions,
    pub database: String,
    pub database_url: String,
    /// On the test database, with the services' search path ("read").
    pub pool: PgPool,
    pub topic: String,
    pub consumer_group: String,
    /// The Kafka the services use.
    pub brokers: String,
    pub jwt_secret: String,
    pub command_api_token: String,
    /// The search index directory (removed with the app).
    pub search_index_dir: std::path::PathBuf,
    /// The object store (images' originals and renditions): a directory.
    pub object_store_dir: std::path::PathBuf,
    pub http: reqwest::Client,
    command_service: Running,
    projector: Option<(Running, projector::rebuild::Rebuilder)>,
    query_service: Running,
    image_worker: Option<Running>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(options: TestOptions) -> TestApp {
        chronicle_platform::telemetry::init_with_default(
            "tests",
            "warn,tower_http=error,tantivy=error",
        );
        let database = TestDatabase::create().await;
        let brokers = options.kafka_brokers.clone().unwrap_or_else(brokers);
        let topic = TestTopic::create_on(&brokers, options.partitions).await;
        let mut app = TestApp {
            pool: database.pool(),
            database: database.name.clone(),
            database_url: database.url.clone(),
            topic: topic.name,
            consumer_group: format!("chronicle-projector-{}", uuid::Uuid::new_v4().simple()),
            brokers,
            jwt_secret: format!("test-jwt-{}", uuid::Uuid::new_v4()),
            command_api_token: format!("test-service-{}", uuid::Uuid::new_v4()),
            search_index_dir: std::env::temp_dir()
                .join(format!("chronicle-index-{}", uuid::Uuid::new_v4())),
            object_store_dir: std::env::temp_dir()
                .join(format!("chronicle-objects-{}", uuid::Uuid::new_v4())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            command_service: placeholder(),
            projector: None,
            query_service: placeholder(),
            image_worker: None,
            options,
        };
        app.command_service = app.start_command_service().await;
        if app.options.projector {
            app.projector = Some(app.start_projector_service().await);
        }
        app.query_service = app.start_query_service().await;
        if app.options.image_worker {
            app.image_worker = Some(app.start_image_worker().await);
        }
        app.wait_ready().await;
        app
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.query_service.url)
    }

    pub fn query_url(&self) -> &str {
        &self.query_service.url
    }

    /// Where query-service serves `/metrics` (not on its public port).
    pub fn query_metrics_url(&self) -> &str {
        self.query_service
            .metrics_url
            .as_deref()
            .expect("query-service serves metrics apart")
    }

    pub fn command_url(&self) -> &str {
        &self.command_service.url
    }

    pub fn projector_url(&self) -> Option<&str> {
        self.projector
            .as_ref()
            .map(|(running, _)| running.url.as_str())
    }

    /// The in-process projector's rebuilder.
    pub fn rebuilder(&self) -> &projector::rebuild::Rebuilder {
        &self
            .projector
            .as_ref()
            .expect("this app runs a projector")
            .1
    }

    /// Every read-model column as it is live, and as a replay of the event
    /// store builds it (beside the live tables, not swapped in).
    pub async fn read_models_live_and_replayed(&self) -> (Digest, Digest) {
        self.rebuilder()
            .run(Projection::ReadModels, RebuildOptions { swap: false })
            .await
            .expect("a replay of the read models");
        let mut connection = self.pool.acquire().await.unwrap();
        let live = digest::read_models(&mut connection, "read").await.unwrap();
        let replayed = digest::read_models(&mut connection, "read_next")
            .await
            .unwrap();
        (live, replayed)
    }

    /// The app's search index as it is live, and as rebuilt from the read
    /// models beside it (not swapped in), document by document.
    pub async fn search_documents_live_and_rebuilt(&self) -> (Documents, Documents) {
        let layout = IndexLayout::new(&self.search_index_dir);
        let live = layout.current().unwrap().expect("a live generation");
        self.rebuilder()
            .run(Projection::Search, RebuildOptions { swap: false })
            .await
            .expect("a rebuild of the search index");
        let rebuilt = *layout.generations().unwrap().last().unwrap();
        (
            crate::search::documents(&layout, live),
            crate::search::documents(&layout, rebuilt),
        )
    }

    /// A GraphQL request to the query-service.
    pub fn graphql(&self, query: &str) -> GraphqlRequest<'_> {
        GraphqlRequest::new(self, query)
    }

    /// The command-service's settings for this app, as flags (for its
    /// binary too), with its relay on or off.
    pub fn command_service_args(&self, relay: bool) -> Vec<String> {
        vec![
            format!("--database-url={}", self.database_url),
            format!("--kafka-brokers={}", self.brokers),
            format!("--kafka-topic={}", self.topic),
            format!("--jwt-secret={}", self.jwt_secret),
            format!("--command-api-token={}", self.command_api_token),
            format!("--relay-enabled={relay}"),
            "--database-max-connections=30".to_owned(),
            format!("--object-store-url={}", self.object_store_dir.display()),
        ]
    }

    async fn start_command_service(&self) -> Running {
        let args = [
            "command-service".to_owned(),
            "--http-addr=127.0.0.1:0".to_owned(),
        ]
        .into_iter()
        .chain(self.command_service_args(self.options.relay));
        let config = command_service::Config::try_parse_from(args)
            .expect("a valid command-service configuration");
        let application = command_service::Application::build(config)
            .await
            .expect("build the command-service");
        spawn_service(application.port(), |shutdown| {
            application.run_until_stopped(shutdown)
        })
    }

    /// The projector's settings for this app, as flags (for its binary too).
    pub fn projector_args(&self) -> Vec<String> {
        vec![
            format!("--database-url={}", self.database_url),
            format!("--kafka-brokers={}", self.brokers),
            format!("--kafka-topic={}", self.topic),
            format!("--consumer-group={}", self.consumer_group),
            format!("--batch-size={}", self.options.projector_batch_size),
            format!("--search-index-dir={}", self.search_index_dir.display()),
            format!(
                "--search-commit-interval-ms={}",
                self.options.search_commit_interval_ms
            ),
            format!("--service-token={}", self.command_api_token),
        ]
    }

    async fn start_projector_service(&self) -> (Running, projector::rebuild::Rebuilder) {
        let args = ["projector".to_owned(), "--http-addr=127.0.0.1:0".to_owned()]
            .into_iter()
            .chain(self.projector_args());
        let cli =
            projector::config::Cli::try_parse_from(args).expect("a valid projector configuration");
        let application = projector::Application::build(cli.config)
            .await
            .expect("build the projector");
        let rebuilder = application.rebuilder();
        let running = spawn_service(application.port(), |shutdown| {
            application.run_until_stopped(shutdown)
        });
        (running, rebuilder)
    }

    async fn start_query_service(&self) -> Running {
        let trusted_proxies = self
            .options
            .trusted_proxies
            .as_ref()
            .map(|cidrs| format!("--trusted-proxies={cidrs}"));
        let config = query_service::Config::try_parse_from(
            [
                "query-service",
                "--http-addr=127.0.0.1:0",
                "--metrics-addr=127.0.0.1:0",
                &format!("--database-url={}", self.database_url),
                &format!("--command-service-url={}", self.command_service.url),
                &format!("--jwt-secret={}", self.jwt_secret),
                &format!("--command-api-token={}", self.command_api_token),
                &format!(
                    "--consistency-timeout-ms={}",
                    self.options.consistency_timeout_ms
                ),
                &format!("--search-index-dir={}", self.search_index_dir.display()),
                &format!(
                    "--rate-limit-client-per-minute={}",
                    self.options.rate_limit_per_minute.0
                ),
                &format!(
                    "--rate-limit-user-per-minute={}",
                    self.options.rate_limit_per_minute.1
                ),
                "--cors-allowed-origins=https://blog.example.com",
                &format!("--object-store-url={}", self.object_store_dir.display()),
                &format!(
                    "--rate-limit-uploads-per-minute={}",
                    self.options.uploads_per_minute
                ),
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(trusted_proxies),
        )
        .expect("a valid query-service configuration");
        let application = query_service::Application::build(config)
            .await
            .expect("build the query-service");
        let metrics_url = format!("http://127.0.0.1:{}", application.metrics_port());
        let mut running = spawn_service(application.port(), |shutdown| {
            application.run_until_stopped(shutdown)
        });
        running.metrics_url = Some(metrics_url);
        running
    }

    async fn start_image_worker(&self) -> Running {
        let config = image_worker::Config::try_parse_from([
            "image-worker".to_owned(),
            "--http-addr=127.0.0.1:0".to_owned(),
            format!("--kafka-brokers={}", self.brokers),
            format!("--kafka-topic={}", self.topic),
            format!("--consumer-group=chronicle-images-{}", self.topic),
            format!("--object-store-url={}", self.object_store_dir.display()),
            format!("--command-service-url={}", self.command_service.url),
            format!("--command-api-token={}", self.command_api_token),
        ])
        .expect("a valid image-worker configuration");
        let application = image_worker::Application::build(config)
            .await
            .expect("build the image worker");
        spawn_service(application.port(), |shutdown| {
            application.run_until_stopped(shutdown)
        })
    }

    /// Another command-service on the same database and topic (its relay
    /// stands by while the first one's is active); stopped when dropped.
    pub async fn spawn_extra_command_service(&self) -> ServiceHandle {
        let running = self.start_command_service().await;
        wait_ready(&self.http, &running.url).await;
        ServiceHandle(running)
    }

    /// Another query-service replica on the same database and command-service,
    /// with its own in-memory state (buckets, row cache); stopped when dropped.
    pub async fn spawn_extra_query_service(&self) -> ServiceHandle {
        let running = self.start_query_service().await;
        wait_ready(&self.http, &running.url).await;
        ServiceHandle(running)
    }

    /// Another projector in the same consumer group (the topic's partitions
    /// are shared between them), with a search index of its own; stopped
    /// gracefully by `ServiceHandle::stop`, or when dropped.
    pub async fn spawn_extra_projector(&self, name: &str) -> ServiceHandle {
        let index_dir = self.search_index_dir.join(format!("extra-{name}"));
        let own_index = format!("--search-index-dir={}", index_dir.display());
        let args = ["projector".to_owned(), "--http-addr=127.0.0.1:0".to_owned()]
            .into_iter()
            .chain(self.projector_args().into_iter().map(|arg| {
                if arg.starts_with("--search-index-dir=") {
                    own_index.clone()
                } else {
                    arg
                }
            }));
        let cli =
            projector::config::Cli::try_parse_from(args).expect("a valid projector configuration");
        let application = projector::Application::build(cli.config)
            .await
            .expect("build the projector");
        let running = spawn_service(application.port(), |shutdown| {
            application.run_until_stopped(shutdown)
        });
        wait_ready(&self.http, &running.url).await;
        ServiceHandle(running)
    }

    /// Stops the command-service gracefully (its relay saves its cursor).
    pub async fn stop_command_service(&self) {
        self.command_service.shutdown.cancel();
        crate::eventually(
            Duration::from_secs(30),
            "the command-service to stop",
            || async { self.command_service.task.is_finished() },
        )
        .await;
    }

    /// Stops the projector gracefully (it finishes and commits its batch).
    pub async fn stop_projector(&mut self) {
        if let Some((running, _)) = self.projector.take() {
            running.shutdown.cancel();
            let _ = running.task.await;
        }
    }

    pub async fn start_projector(&mut self) {
        if self.projector.is_none() {
            let (running, rebuilder) = self.start_projector_service().await;
            wait_ready(&self.http, &running.url).await;
            self.projector = Some((running, rebuilder));
        }
    }

    async fn wait_ready(&self) {
        wait_ready(&self.http, &self.command_service.url).await;
        if let Some((projector, _)) = &self.projector {
            wait_ready(&self.http, &projector.url).await;
        }
        wait_ready(&self.http, &self.query_service.url).await;
        if let Some(worker) = &self.image_worker {
            wait_ready(&self.http, &worker.url).await;
        }
    }

    /// Waits until every event in the store is applied to the read models.
    pub async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let behind: Vec<(uuid::Uuid, i32, Option<i32>)> = sqlx::query_as(
                r#"SELECT written.stream_id, written.version, applied.version FROM (
                     SELECT stream_id, max(version) AS version FROM event_store.events GROUP BY stream_id
                   ) written
                   LEFT JOIN stream_versions applied USING (stream_id)
                   WHERE applied.version IS NULL OR applied.version < written.version
                   LIMIT 10"#,
            )
            .fetch_all(&self.pool)
            .await
            .expect("compare the store with the read models");
            if behind.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the projector to catch up; behind (stream, written, applied): {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A read with a consistency token also retires query-service's
        // in-memory rows older than it (their announcement may still be on
        // its way), so what the test reads next is what it drained to.
        let last: Option<(String, uuid::Uuid, i32)> = sqlx::query_as(
            "SELECT stream_type, stream_id, version FROM event_store.events ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .expect("read the last event");
        if let Some((stream_type, stream_id, version)) = last {
            let token = chronicle_schema::consistency::ConsistencyToken {
                stream_type: chronicle_schema::events::StreamType::parse(&stream_type)
                    .expect("a known stream type"),
                stream_id,
                version,
            };
            let response = self
                .graphql("{ __typename }")
                .header("x-consistency-token", &token.to_string())
                .send()
                .await;
            // A set-aside last event is an answer too: the read models moved past it.
            if response.body["errors"][0]["extensions"]["deadLetteredVersion"].is_null() {
                response.data();
            }
        }
    }

    /// Waits until the search index has every post and user at the version
    /// the read models have (call `drain` first), and query-service's reader
    /// has loaded that commit (it reloads on the
    /// projector's announcement, a moment after the commit is on disk).
    pub async fn drain_search(&self) {
        self.drain().await;
        let latest = self.drain_search_on_disk().await;
        let seen_by_queries = latest.iter().map(|&(stream_id, version, ref stream_type)| {
            let token = chronicle_schema::consistency::ConsistencyToken {
                stream_type: chronicle_schema::events::StreamType::parse(stream_type)
                    .expect("a stream type"),
                stream_id,
                version,
            }
            .to_string();
            async move {
                self.graphql("{ search(query: \"drain\", first: 1) { totalCount } }")
                    .header("x-consistency-token", &token)
                    .send()
                    .await
                    .data();
            }
        });
        futures::stream::iter(seen_by_queries)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }

    async fn drain_search_on_disk(&self) -> Vec<(uuid::Uuid, i32, String)> {
        let layout = chronicle_schema::search_schema::IndexLayout::new(&self.search_index_dir);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            // The index is derived from the read models' rows: every post row
            // and every user (a marker) at the version the read models have.
            let latest: Vec<(uuid::Uuid, i32, String)> = sqlx::query_as(
                "SELECT id, version, 'post' FROM posts UNION ALL SELECT id, version, 'user' FROM users",
            )
            .fetch_all(&self.pool)
            .await
            .expect("read the post streams");
            let indexed = crate::search::indexed_versions(&layout);
            let behind: Vec<_> = latest
                .iter()
                .filter(|(id, version, _)| indexed.get(id) != Some(version))
                .map(|(id, version, _)| (id, *version, indexed.get(id).copied()))
                .collect();
            if behind.is_empty() {
                return latest;
            }
            if tokio::time::Instant::now() >= deadline {
                let all = crate::search::all_versions(&layout);
                let duplicates: Vec<_> = behind.iter().map(|(id, _, _)| all.get(id)).collect();
                panic!(
                    "the search index did not catch up: {} of {} rows behind, e.g. (stream, read-model version, indexed version) {:?}; indexed versions of those: {:?}",
                    behind.len(),
                    latest.len(),
                    &behind[..behind.len().min(3)],
                    &duplicates[..duplicates.len().min(3)]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A service started beside the test app's own; stopped when dropped.
pub struct ServiceHandle(Running);

impl ServiceHandle {
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// Stops the service gracefully and waits until it has.
    pub async fn stop(self) {
        self.0.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.0.task.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
    }
}

fn placeholder() -> Running {
    Running {
        shutdown: CancellationToken::new(),
        task: tokio::spawn(async { Ok(()) }),
        url: String::new(),
        metrics_url: None,
    }
}

fn spawn_service<F, Fut>(port: u16, run: F) -> Running
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(shutdown.clone()));
    Running {
        shutdown,
        task,
        url: format!("http://127.0.0.1:{port}"),
        metrics_url: None,
    }
}

/// Waits until the service at `url` answers `/health/ready` with 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    let ready = format!("{url}/health/ready");
    crate::eventually(Duration::from_secs(60), &ready, || async {
        http.get(&ready)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.command_service.shutdown.cancel();
        self.query_service.shutdown.cancel();
        if let Some((projector, _)) = &self.projector {
            projector.shutdown.cancel();
        }
        if let Some(worker) = &self.image_worker {
            worker.shutdown.cancel();
        }
        let _ = std::fs::remove_dir_all(&self.object_store_dir);
        let (database, topic, brokers) = (
            self.database.clone(),
            self.topic.clone(),
            self.brokers.clone(),
        );
        let _ = std::fs::remove_dir_all(&self.search_index_dir);
        // The test's runtime is going away; clean up on a runtime of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime");
            runtime.block_on(async {
                TestDatabase::drop_now(&database).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    chronicle_platform::kafka::delete_topic(&brokers, &topic),
                )
                .await;
            });
        });
        let _ = cleanup.join();
    }
}
