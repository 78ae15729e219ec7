use std::sync::Arc;

use axum::Router;
use chronicle_platform::health::Health;
use object_store::ObjectStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{self, ConsumerSettings, Worker};
use crate::outcomes::Outcomes;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not bind {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    ObjectStore(#[from] chronicle_platform::object_storage::ObjectStorageError),
    #[error(transparent)]
    WeakSecret(#[from] chronicle_platform::secrets::WeakSecret),
}

pub struct Application {
    config: Config,
    listener: TcpListener,
    store: Arc<dyn ObjectStore>,
    outcomes: Outcomes,
    health: Health,
}

impl Application {
    /// Binds the port and prepares clients; nothing here waits for Kafka or
    /// the command-service, so the worker starts (not ready) while they are down.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        chronicle_platform::secrets::check("COMMAND_API_TOKEN", &config.command_api_token)?;
        let store = chronicle_platform::object_storage::open(&config.object_store_url)?;
        let outcomes = Outcomes::new(&config.command_service_url, &config.command_api_token);
        let listener = chronicle_platform::http::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind {
                address: config.http_addr,
                source,
            })?;
        let health = {
            let (brokers, topic) = (config.kafka_brokers.clone(), config.kafka_topic.clone());
            let outcomes = outcomes.clone();
            Health::new()
                .with_check("kafka", move || {
                    chronicle_platform::kafka::ping(brokers.clone(), topic.clone())
                })
                .with_check("command-service", move || {
                    let outcomes = outcomes.clone();
                    async move { outcomes.ping().await }
                })
        };
        Ok(Application {
            config,
            listener,
            store,
            outcomes,
            health,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// Consumes until `shutdown`; the batch in hand is left uncommitted.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application {
            config,
            listener,
            store,
            outcomes,
            health,
        } = self;
        health.mark_started();
        chronicle_platform::kafka::report_consumer_lag(
            config.kafka_brokers.clone(),
            config.kafka_topic.clone(),
            config.consumer_group.clone(),
            shutdown.clone(),
        );
        let consumer = tokio::spawn(consumer::run(
            ConsumerSettings {
                brokers: config.kafka_brokers.clone(),
                topic: config.kafka_topic.clone(),
                group: config.consumer_group.clone(),
                concurrency: config.concurrency,
            },
            Worker { store, outcomes },
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
        let _ = consumer.await;
        tracing::info!("image-worker stopped");
        served
    }
}
