use std::net::SocketAddr;
use std::time::Duration;

use chronicle_schema::Role;
use chronicle_schema::commands::Secret;

/// command-service configuration, from the environment (or flags). The
/// defaults match what `./dev up` runs locally.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "command-service",
    version,
    about = "Chronicle's write side",
    subcommand_negates_reqs = true
)]
pub struct Config {
    /// An operator action to run instead of the service.
    #[command(subcommand)]
    pub operation: Option<Operation>,

    /// Address of the internal command API.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,

    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://chronicle:chronicle@127.0.0.1:5432/chronicle"
    )]
    pub database_url: String,

    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    #[arg(long, env = "KAFKA_TOPIC", default_value = "chronicle.events")]
    pub kafka_topic: String,

    /// Partitions of the topic when this service creates it.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub kafka_topic_partitions: i32,

    /// Secret that signs access tokens (HS256); shared with query-service.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, required = true)]
    pub jwt_secret: Option<Secret>,

    /// Credential query-service presents on every command (X-Service-Token).
    #[arg(
        long,
        env = "COMMAND_API_TOKEN",
        hide_env_values = true,
        required = true
    )]
    pub command_api_token: Option<Secret>,

    #[arg(long, env = "ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    pub access_token_ttl_seconds: u64,

    #[arg(long, env = "REFRESH_TOKEN_TTL_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_seconds: u64,

    /// How long an Idempotency-Key remembers its first outcome.
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL_SECONDS", default_value_t = 24 * 3600)]
    pub idempotency_key_ttl_seconds: u64,

    /// Where images' originals are stored: a directory (or `file://` URL),
    /// or `s3://bucket/prefix` in a build with the `s3` feature. The image
    /// worker and query-service use the same store.
    #[arg(long, env = "OBJECT_STORE_URL", default_value = "data/objects")]
    pub object_store_url: String,

    /// Run the outbox relay in this process (one instance holds the lock; others stand by).
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,

    /// Largest number of events the relay reads and publishes at once.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub relay_batch_size: i64,

    /// How many group commits may be in flight at once (appends that arrive
    /// meanwhile wait, and share the next one). Two, since a batch's
    /// independent commands are one set: fewer, larger batches went further
    /// than more, smaller ones (BENCHMARKS.md: 2 against 4 and 8).
    #[arg(long, env = "APPEND_COMMIT_WORKERS", default_value_t = 2)]
    pub append_commit_workers: usize,

    /// Failed logins per account, or per client, before RATE_LIMITED.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: i64,

    /// Failed logins from one client (across accounts) before RATE_LIMITED.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_CLIENT", default_value_t = 20)]
    pub login_max_failures_per_client: i64,

    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECONDS", default_value_t = 900)]
    pub login_failure_window_seconds: u64,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Operation {
    /// Give a user a role (USER, MODERATOR, ADMIN), e.g. to make the first admin.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(&value.to_uppercase())
        .ok_or_else(|| format!("{value} is not USER, MODERATOR or ADMIN"))
}

impl Config {
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_seconds)
    }
}
