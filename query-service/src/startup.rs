//! Building and running the query-service.

use axum::Router;
use chronicle_platform::access_token::AccessTokens;
use chronicle_platform::database::{self, PoolSettings};
use chronicle_platform::health::Health;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::command_client::CommandClient;
use crate::config::Config;
use crate::consistency::Consistency;
use crate::freshness::Freshness;
use crate::graphql::{self, Services};
use crate::search::SearchIndex;
use chronicle_schema::search_schema::IndexLayout;

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
        Ok(Application {
            config,
            listener,
            pool,
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
        } = self;
        let commands = CommandClient::new(
            &config.command_service_url,
            config.command_api_token.expose(),
            std::time::Duration::from_millis(config.command_timeout_ms),
        );
        let services = Services {
            pool: pool.clone(),
            commands: commands.clone(),
            consistency: Consistency::start(
                pool.clone(),
                SearchIndex::new(IndexLayout::new(&config.search_index_dir)),
                config.consistency_timeout(),
                shutdown.clone(),
            ),
            access_tokens: AccessTokens::new(config.jwt_secret.expose(), config.access_token_ttl()),
            freshness: Freshness::start(pool.clone(), shutdown.clone()),
        };
        let health = {
            let pool = pool.clone();
            Health::new()
                .with_check("postgres", move || {
                    let pool = pool.clone();
                    async move { read_models_ready(&pool).await }
                })
                .with_check("command-service", move || {
                    let commands = commands.clone();
                    async move { commands.ping().await }
                })
        };
        // Nothing to initialise: the projector owns the read models' schema.
        health.mark_started();
        let schema = graphql::build_schema(
            services.clone(),
            graphql::Limits {
                max_depth: config.max_query_depth,
                max_complexity: config.max_query_complexity,
                introspection: config.introspection_enabled,
            },
        );
        let router = Router::new()
            .merge(crate::rest::router(services.clone()))
            .merge(graphql::router(
                schema,
                services,
                config.graphiql_enabled,
                config.max_request_bytes,
            ))
            .merge(health.router())
            .merge(chronicle_platform::metrics::router());
        let served = chronicle_platform::http::serve(
            listener,
            chronicle_platform::http::with_standard_layers(router),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        pool.close().await;
        tracing::info!("query-service stopped");
        served
    }
}

/// Postgres answers and the projector has created the read models.
async fn read_models_ready(pool: &PgPool) -> Result<(), String> {
    sqlx::query_scalar!("SELECT to_regclass('read.users') IS NOT NULL AS \"exists!\"")
        .fetch_one(pool)
        .await
        .map_err(|error| format!("postgres: {error}"))?
        .then_some(())
        .ok_or_else(|| "the read models do not exist yet (is the projector running?)".to_owned())
}
