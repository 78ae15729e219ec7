//! Building and running the command-service (the same code in `main` and tests).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chronicle_platform::access_token::AccessTokens;
use chronicle_platform::database::{self, PoolSettings};
use chronicle_platform::health::Health;
use chronicle_platform::kafka;
use chronicle_platform::retry::{self, Backoff};
use chronicle_platform::secrets;
use chronicle_schema::commands::Secret;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::login_limit::{self, LoginLimits};
use crate::commands::{self, CommandServices};
use crate::config::Config;
use crate::event_store::GroupCommit;
use crate::http::{self, ApiState};
use crate::outbox::{Relay, RelaySettings};
use crate::privacy::SealingKeys;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not bind {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error(transparent)]
    WeakSecret(#[from] chronicle_platform::secrets::WeakSecret),
    #[error(transparent)]
    ObjectStore(#[from] chronicle_platform::object_storage::ObjectStorageError),
}

pub struct Application {
    config: Config,
    listener: TcpListener,
    pool: PgPool,
    health: Health,
    services: CommandServices,
}

impl Application {
    /// Binds the port and prepares clients; nothing here waits for Postgres or
    /// Kafka, so the service starts (not ready) while they are down.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let jwt_secret = config
            .jwt_secret
            .clone()
            .ok_or(StartupError::Missing("JWT_SECRET"))?;
        let command_api_token = config
            .command_api_token
            .clone()
            .ok_or(StartupError::Missing("COMMAND_API_TOKEN"))?;
        secrets::check("JWT_SECRET", jwt_secret.expose())?;
        secrets::check("COMMAND_API_TOKEN", command_api_token.expose())?;
        let pool = database::connect(
            &config.database_url,
            &PoolSettings {
                max_connections: config.database_max_connections,
                ..PoolSettings::default()
            },
        )?;
        let images = chronicle_platform::object_storage::open(&config.object_store_url)?;
        let listener = chronicle_platform::http::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind {
                address: config.http_addr,
                source,
            })?;
        let health = {
            let pool = pool.clone();
            Health::new().with_check("postgres", move || {
                let pool = pool.clone();
                async move { database::ping(&pool).await }
            })
        };
        let services = CommandServices {
            pool: pool.clone(),
            access_tokens: AccessTokens::new(jwt_secret.expose(), config.access_token_ttl()),
            relay_wake: Arc::new(Notify::new()),
            idempotency_ttl_seconds: config.idempotency_key_ttl_seconds,
            fingerprint_key: commands::FingerprintKey::derive(jwt_secret.expose()),
            refresh_token_ttl: Duration::from_secs(config.refresh_token_ttl_seconds),
            aggregates: Arc::default(),
            group_commit: GroupCommit::start(pool.clone(), config.append_commit_workers),
            keys: Arc::new(SealingKeys::new(pool.clone())),
            images,
            login_limits: LoginLimits {
                max_failures_per_account: config.login_max_failures,
                max_failures_per_client: config.login_max_failures_per_client,
                window: Duration::from_secs(config.login_failure_window_seconds),
            },
        };
        Ok(Application {
            config,
            listener,
            pool,
            health,
            services,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// Serves until `shutdown`; initialisation (migrations, topic) and the
    /// relay run beside the server and retry until their dependencies answer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application {
            config,
            listener,
            pool,
            health,
            services,
        } = self;
        let database_options =
            PgConnectOptions::from_str(&config.database_url).map_err(std::io::Error::other)?;
        database::report_pool_usage(pool.clone(), "command-service", shutdown.clone());
        let background = tokio::spawn(run_background(
            config.clone(),
            database_options,
            pool.clone(),
            health.clone(),
            services.relay_wake.clone(),
            shutdown.clone(),
        ));
        let state = ApiState {
            services,
            service_token_digest: Arc::new(http::digest(
                config
                    .command_api_token
                    .as_ref()
                    .map(Secret::expose)
                    .unwrap_or_default(),
            )),
        };
        let served = chronicle_platform::http::serve(
            listener,
            http::router(state, &health),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        // Let the relay finish its batch and save its cursor.
        let _ = background.await;
        pool.close().await;
        tracing::info!("command-service stopped");
        served
    }
}

async fn run_background(
    config: Config,
    database_options: PgConnectOptions,
    pool: PgPool,
    health: Health,
    relay_wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    if !initialise(&config, &shutdown).await {
        return;
    }
    health.mark_started();
    tracing::info!("command-service started");
    let pool_for_status = pool.clone();
    let purge = tokio::spawn(purge_expired(
        pool,
        Duration::from_secs(config.login_failure_window_seconds),
        shutdown.clone(),
    ));
    if config.relay_enabled {
        let status = tokio::spawn(crate::outbox::status::run(
            pool_for_status,
            shutdown.clone(),
        ));
        let relay = Relay::new(
            RelaySettings {
                database: database_options,
                brokers: config.kafka_brokers.clone(),
                topic: config.kafka_topic.clone(),
                batch_size: config.relay_batch_size,
            },
            relay_wake,
        );
        relay.run(shutdown.clone()).await;
        let _ = status.await;
    }
    let _ = purge.await;
}

/// Migrations and the topic, retried until both succeed or shutdown.
async fn initialise(config: &Config, shutdown: &CancellationToken) -> bool {
    retry::until_ok("initialisation", shutdown, Backoff::standard(), || async {
        database::migrate(&config.database_url)
            .await
            .map_err(|error| error.to_string())?;
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

/// Forgets expired idempotency keys and old login failures, now and then.
async fn purge_expired(pool: PgPool, login_window: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match commands::purge_expired_idempotency_keys(&pool).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "could not purge idempotency keys"),
        }
        if let Err(error) = login_limit::purge(&pool, login_window).await {
            tracing::warn!(%error, "could not purge login failures");
        }
    }
}
