//! Building and running the query-service.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use chronicle_platform::access_token::AccessTokens;
use chronicle_platform::database::{self, PoolSettings};
use chronicle_platform::health::Health;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::client::{self, TrustedProxies};
use crate::command_client::CommandClient;
use crate::config::Config;
use crate::consistency::Consistency;
use crate::freshness::Freshness;
use crate::graphql::{self, Services};
use crate::rate_limit::{self, RateLimits};
use crate::read_models::cache::RowCache;
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
    #[error(transparent)]
    WeakSecret(#[from] chronicle_platform::secrets::WeakSecret),
}

pub struct Application {
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    pool: PgPool,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        chronicle_platform::secrets::check("JWT_SECRET", config.jwt_secret.expose())?;
        chronicle_platform::secrets::check("COMMAND_API_TOKEN", config.command_api_token.expose())?;
        let pool = database::connect(
            &config.database_url,
            &PoolSettings {
                max_connections: config.database_max_connections,
                ..PoolSettings::default()
            },
        )?;
        let bind = |address| async move {
            chronicle_platform::http::bind(address)
                .await
                .map_err(|source| StartupError::Bind { address, source })
        };
        let listener = bind(config.http_addr).await?;
        let metrics_listener = bind(config.metrics_addr).await?;
        Ok(Application {
            config,
            listener,
            metrics_listener,
            pool,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// The port of the metrics listener (apart from the public API).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application {
            config,
            listener,
            metrics_listener,
            pool,
        } = self;
        let metrics = tokio::spawn(chronicle_platform::http::serve(
            metrics_listener,
            chronicle_platform::metrics::router(),
            shutdown.clone(),
        ));
        let commands = CommandClient::new(
            &config.command_service_url,
            config.command_api_token.expose(),
            std::time::Duration::from_millis(config.command_timeout_ms),
        );
        let rows = RowCache::new(config.read_cache_rows);
        // Per-minute counts every replica shares: requests' and uploads'.
        let shared_limits = crate::rate_limit::SharedWindows::start(pool.clone(), shutdown.clone());
        let services = Services {
            pool: pool.clone(),
            commands: commands.clone(),
            consistency: Consistency::start(
                pool.clone(),
                SearchIndex::new(IndexLayout::new(&config.search_index_dir)),
                rows.clone(),
                config.consistency_timeout(),
                shutdown.clone(),
            ),
            access_tokens: AccessTokens::new(config.jwt_secret.expose(), config.access_token_ttl()),
            freshness: Freshness::start(pool.clone(), shutdown.clone()),
            rows,
            sessions: crate::sessions::Sessions::new(pool.clone()),
            upload_limit: crate::rate_limit::UploadLimit::new(
                config.rate_limit_uploads_per_minute,
                shared_limits.clone(),
            ),
            images: chronicle_platform::object_storage::open(&config.object_store_url)
                .map_err(std::io::Error::other)?,
        };
        database::report_pool_usage(pool.clone(), "query-service", shutdown.clone());
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
        let limits = RateLimits::new(
            config.rate_limit_client_per_minute,
            config.rate_limit_user_per_minute,
            services.access_tokens.clone(),
            shared_limits,
            shutdown.clone(),
        );
        let schema = graphql::build_schema(
            services.clone(),
            graphql::Limits {
                max_depth: config.max_query_depth,
                max_complexity: config.max_query_complexity,
                introspection: config.introspection_enabled,
            },
        );
        // The public API: rate-limited, CORS-checked, bounded in time.
        let public = Router::new()
            .merge(crate::rest::router(services.clone()))
            .merge(graphql::router(
                schema,
                services,
                config.graphiql_enabled,
                config.max_request_bytes,
                limits.clone(),
            ))
            .layer(axum::middleware::from_fn_with_state(
                limits,
                rate_limit::limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                TrustedProxies::new(config.trusted_proxies.clone()),
                client::identify,
            ))
            .layer(cors(&config.cors_allowed_origins))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(config.request_timeout_ms),
            ));
        let router = Router::new().merge(public).merge(health.router());
        let served = chronicle_platform::http::serve(
            listener,
            chronicle_platform::http::with_standard_layers(router),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        let _ = metrics.await;
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

/// Browsers may call the API from these origins only.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-consistency-token"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}
