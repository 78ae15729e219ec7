//! Building and running the projector service.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chronicle_platform::database::{self, PoolSettings};
use chronicle_platform::health::Health;
use chronicle_platform::kafka;
use chronicle_platform::retry::{self, Backoff};
use chronicle_schema::commands::Secret;
use chronicle_schema::search_schema::IndexLayout;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{Config, Role};
use crate::consumer::{self, ConsumerSettings};
use crate::read_models::{self, ReadModelError};
use crate::rebuild::{Projection, RebuildOptions, Rebuilder};
use crate::search::indexer::{self, IndexerSettings};
use crate::status::{self, Failures};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not bind {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    #[error(transparent)]
    WeakSecret(#[from] chronicle_platform::secrets::WeakSecret),
    #[error("cannot open the search index in {dir}: {source}")]
    SearchIndex {
        dir: std::path::PathBuf,
        source: crate::search::SearchIndexError,
    },
}

pub struct Application {
    config: Config,
    listener: TcpListener,
    pool: PgPool,
    health: Health,
    rebuilder: Rebuilder,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        if let Some(token) = &config.service_token {
            chronicle_platform::secrets::check("COMMAND_API_TOKEN", token.expose())?;
        }
        let pool = database::connect(
            &config.database_url,
            &PoolSettings {
                max_connections: config.database_max_connections,
                ..PoolSettings::default()
            },
        )?;
        let listener = chronicle_platform::http::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind {
                address: config.http_addr,
                source,
            })?;
        let layout = IndexLayout::new(&config.search_index_dir);
        let live_index = indexer::open_live(&layout, &config.kafka_topic).map_err(|source| {
            StartupError::SearchIndex {
                dir: config.search_index_dir.clone(),
                source,
            }
        })?;
        let rebuilder = Rebuilder::new(
            pool.clone(),
            config.database_url.clone(),
            layout,
            Arc::new(Mutex::new(live_index)),
        );
        let health = {
            let pool = pool.clone();
            let (brokers, topic) = (config.kafka_brokers.clone(), config.kafka_topic.clone());
            Health::new()
                .with_check("postgres", move || {
                    let pool = pool.clone();
                    async move { database::ping(&pool).await }
                })
                .with_check("kafka", move || kafka::ping(brokers.clone(), topic.clone()))
        };
        Ok(Application {
            config,
            listener,
            pool,
            health,
            rebuilder,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// The rebuilder, for tests that rebuild without the admin API.
    pub fn rebuilder(&self) -> Rebuilder {
        self.rebuilder.clone()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application {
            config,
            listener,
            pool,
            health,
            rebuilder,
        } = self;
        let admin = AdminState {
            rebuilder: rebuilder.clone(),
            pool: pool.clone(),
            token_digest: config
                .service_token
                .as_ref()
                .map(|token| Arc::new(admin::digest(Secret::expose(token)))),
        };
        database::report_pool_usage(pool.clone(), "projector", shutdown.clone());
        if config.role.read_models() {
            chronicle_platform::kafka::report_consumer_lag(
                config.kafka_brokers.clone(),
                config.kafka_topic.clone(),
                config.consumer_group.clone(),
                shutdown.clone(),
            );
        }
        let background = tokio::spawn(run_background(
            config,
            pool.clone(),
            health.clone(),
            rebuilder,
            shutdown.clone(),
        ));
        let router = Router::new()
            .merge(admin::router(admin))
            .merge(health.router())
            .merge(chronicle_platform::metrics::router());
        let served = chronicle_platform::http::serve(
            listener,
            chronicle_platform::http::with_standard_layers(router),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        // The consumers finish and commit their batches before they stop.
        let _ = background.await;
        pool.close().await;
        tracing::info!("projector stopped");
        served
    }
}

async fn run_background(
    config: Config,
    pool: PgPool,
    health: Health,
    rebuilder: Rebuilder,
    shutdown: CancellationToken,
) {
    if !initialise(&config, &pool, &rebuilder, &shutdown).await {
        return;
    }
    health.mark_started();
    tracing::info!("projector started");
    let failures = Failures::default();
    let status = tokio::spawn(status::run(
        pool.clone(),
        rebuilder.clone(),
        rebuilder.live_index.clone(),
        failures.clone(),
        [
            (config.role.read_models(), Projection::ReadModels),
            (config.role.search(), Projection::Search),
        ]
        .into_iter()
        .filter_map(|(runs, projection)| runs.then_some(projection))
        .collect(),
        shutdown.clone(),
    ));
    tracing::info!(role = ?config.role, "projecting");
    // A sidecar alone sees no rebuild of the read models: it follows their swap.
    let follow_swap = (config.role == Role::Search).then(|| {
        tokio::spawn(crate::search::follow_swap::run(
            pool.clone(),
            rebuilder.clone(),
            shutdown.clone(),
        ))
    });
    let search = config.role.search().then(|| {
        tokio::spawn(indexer::run(
            IndexerSettings {
                brokers: config.kafka_brokers.clone(),
                topic: config.kafka_topic.clone(),
                layout: rebuilder.layout.clone(),
                commit_interval: Duration::from_millis(config.search_commit_interval_ms),
                batch_size: config.batch_size,
            },
            pool.clone(),
            rebuilder.live_index.clone(),
            failures.clone(),
            shutdown.clone(),
        ))
    });
    if config.role.read_models() {
        consumer::run(
            ConsumerSettings {
                brokers: config.kafka_brokers.clone(),
                topic: config.kafka_topic.clone(),
                group: config.consumer_group.clone(),
                batch_size: config.batch_size,
                instance_id: config.instance_id.clone(),
            },
            pool,
            failures,
            shutdown,
        )
        .await;
    } else {
        shutdown.cancelled().await;
    }
    if let Some(search) = search {
        let _ = search.await;
    }
    if let Some(follow_swap) = follow_swap {
        let _ = follow_swap.await;
    }
    let _ = status.await;
}

/// Migrations, the read models (rebuilt first when their DDL changed), and
/// the topic, retried until they succeed or shutdown.
async fn initialise(
    config: &Config,
    pool: &PgPool,
    rebuilder: &Rebuilder,
    shutdown: &CancellationToken,
) -> bool {
    retry::until_ok("initialisation", shutdown, Backoff::standard(), || async {
        database::migrate(&config.database_url)
            .await
            .map_err(|error| error.to_string())?;
        match read_models::ensure(pool).await {
            Ok(()) => {}
            Err(ReadModelError::Stale { built, current }) => {
                tracing::warn!(%built, %current, "the read models' DDL changed; rebuilding them before going live");
                rebuilder
                    .run(Projection::ReadModels, RebuildOptions { swap: true })
                    .await
                    .map_err(|error| error.to_string())?;
            }
            Err(error) => return Err(error.to_string()),
        }
        kafka::ensure_topic(
            &config.kafka_brokers,
            &config.kafka_topic,
            config.kafka_topic_partitions,
        )
        .await
        .map_err(|error| error.to_string())
    })
    .await
    .is_some()
}
