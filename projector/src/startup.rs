//! Building and running the projector service.

use std::time::Duration;

use axum::Router;
use chronicle_platform::database::{self, PoolSettings};
use chronicle_platform::health::Health;
use chronicle_platform::kafka;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{self, ConsumerSettings};
use crate::read_models;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not bind {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
}

pub struct Application {
    config: Config,
    listener: TcpListener,
    pool: PgPool,
    health: Health,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
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
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application {
            config,
            listener,
            pool,
            health,
        } = self;
        let background = tokio::spawn(run_background(
            config,
            pool.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        let router = Router::new()
            .merge(health.router())
            .merge(chronicle_platform::metrics::router());
        let served = chronicle_platform::http::serve(
            listener,
            chronicle_platform::http::with_standard_layers(router),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        // The consumer finishes and commits its batch before it stops.
        let _ = background.await;
        pool.close().await;
        tracing::info!("projector stopped");
        served
    }
}

async fn run_background(config: Config, pool: PgPool, health: Health, shutdown: CancellationToken) {
    if !initialise(&config, &pool, &shutdown).await {
        return;
    }
    health.mark_started();
    tracing::info!("projector started");
    consumer::run(
        ConsumerSettings {
            brokers: config.kafka_brokers.clone(),
            topic: config.kafka_topic.clone(),
            group: config.consumer_group.clone(),
            batch_size: config.batch_size,
        },
        pool,
        shutdown,
    )
    .await;
}

async fn initialise(config: &Config, pool: &PgPool, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            database::migrate(&config.database_url)
                .await
                .map_err(|error| error.to_string())?;
            read_models::ensure(pool)
                .await
                .map_err(|error| error.to_string())?;
            kafka::ensure_topic(
                &config.kafka_brokers,
                &config.kafka_topic,
                config.kafka_topic_partitions,
            )
            .await
            .map_err(|error| error.to_string())
        };
        match attempt.await {
            Ok(()) => return true,
            Err(error) => tracing::warn!(%error, retry_in = ?delay, "initialisation failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
