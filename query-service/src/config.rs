use std::net::SocketAddr;
use std::time::Duration;

use chronicle_schema::commands::Secret;

/// query-service configuration, from the environment (or flags). The defaults
/// match what `./dev up` runs locally.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "query-service",
    version,
    about = "Chronicle's public GraphQL API"
)]
pub struct Config {
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Where `/metrics` is served: apart from the public API, for the scraper only.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9180")]
    pub metrics_addr: SocketAddr,

    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://chronicle:chronicle@127.0.0.1:5432/chronicle"
    )]
    pub database_url: String,

    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// Posts (and as many users) kept in memory for the hottest reads; 0 turns it off.
    #[arg(long, env = "READ_CACHE_ROWS", default_value_t = 10_000)]
    pub read_cache_rows: usize,

    /// Base URL of the command-service's internal command API.
    #[arg(
        long,
        env = "COMMAND_SERVICE_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub command_service_url: String,

    /// Where images' renditions are read from: the command-service's and the
    /// image worker's store (a directory, or `s3://` with the `s3` feature).
    #[arg(long, env = "OBJECT_STORE_URL", default_value = "data/objects")]
    pub object_store_url: String,

    /// Credential presented to the command-service (X-Service-Token).
    #[arg(long, env = "COMMAND_API_TOKEN", hide_env_values = true)]
    pub command_api_token: Secret,

    /// Verifies access tokens; the same secret as the command-service's.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Secret,

    /// Longest wait for a consistency token (X-Consistency-Token, mutation read-back).
    #[arg(long, env = "CONSISTENCY_TIMEOUT_MS", default_value_t = 5000)]
    pub consistency_timeout_ms: u64,

    /// Timeout of each call to the command-service.
    #[arg(long, env = "COMMAND_TIMEOUT_MS", default_value_t = 10_000)]
    pub command_timeout_ms: u64,

    /// Serve GraphiQL on GET /graphql for browsers.
    #[arg(long, env = "GRAPHIQL_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphiql_enabled: bool,

    #[arg(long, env = "INTROSPECTION_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection_enabled: bool,

    /// Directory of the search index the projector writes (on this machine).
    #[arg(long, env = "SEARCH_INDEX_DIR", default_value = "data/search-index")]
    pub search_index_dir: std::path::PathBuf,

    /// Deepest selection a query may nest (introspection needs about 12).
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = 15)]
    pub max_query_depth: usize,

    /// Largest cost of a query: a field counts 1, a list its page size times
    /// what each item costs (see `graphql/cost.rs`); refused before it runs.
    #[arg(long, env = "MAX_QUERY_COMPLEXITY", default_value_t = 10_000)]
    pub max_query_complexity: usize,

    /// Requests per minute from one client address (token bucket; bursts up to the same).
    #[arg(long, env = "RATE_LIMIT_CLIENT_PER_MINUTE", default_value_t = std::num::NonZeroU32::new(600).expect("not zero"))]
    pub rate_limit_client_per_minute: std::num::NonZeroU32,

    /// Requests per minute from one signed-in user, wherever they come from.
    #[arg(long, env = "RATE_LIMIT_USER_PER_MINUTE", default_value_t = std::num::NonZeroU32::new(1200).expect("not zero"))]
    pub rate_limit_user_per_minute: std::num::NonZeroU32,

    /// Image uploads per minute from one signed-in user (each is up to
    /// 10 MiB and decoded whole), on top of the request limits.
    #[arg(long, env = "RATE_LIMIT_UPLOADS_PER_MINUTE", default_value_t = std::num::NonZeroU32::new(30).expect("not zero"))]
    pub rate_limit_uploads_per_minute: std::num::NonZeroU32,

    /// Proxies in front of this service (CIDRs, comma-separated): behind them,
    /// the client is the right-most X-Forwarded-For address none of them has.
    /// Empty: X-Forwarded-For is ignored and the client is the TCP peer.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Browser origins allowed to call the API (comma-separated; `*` for any).
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000,http://127.0.0.1:3000"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Longest a request may take before it is answered 408.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Largest request body; larger ones are refused (413) before parsing.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
}

impl Config {
    /// Tokens are only verified here; this value is not used to issue any.
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(900)
    }

    pub fn consistency_timeout(&self) -> Duration {
        Duration::from_millis(self.consistency_timeout_ms)
    }
}
