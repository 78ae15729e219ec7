use std::net::SocketAddr;

/// The projector's command line: `serve` (the default) runs the service.
#[derive(Debug, clap::Parser)]
#[command(name = "projector", version, about = "Chronicle's projector")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Consume the event bus into the read models (the default).
    Serve,
    /// Apply migrations and create the read models if they do not exist.
    InitReadModels,
    /// Rebuild projections from the event store beside the live ones, then
    /// swap them in (the running projector does the work; this shows progress).
    Replay {
        #[arg(long, value_enum, default_value = "all")]
        projection: ReplayTarget,
        /// Build beside the live projection but do not make it live.
        #[arg(long)]
        no_swap: bool,
        /// The running projector.
        #[arg(long, env = "PROJECTOR_URL", default_value = "http://127.0.0.1:8082")]
        url: String,
    },
    /// Re-apply the dead letters (after a fix).
    Redrive {
        #[arg(long, env = "PROJECTOR_URL", default_value = "http://127.0.0.1:8082")]
        url: String,
    },
}

/// What an instance projects. Read models scale with the topic's
/// partitions (instances share them); a search index is per host (each
/// instance reads every partition into its own directory). `search` is the
/// sidecar beside each query-service replica, `read-models` the instances
/// that share the partitions, `all` both (one machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum Role {
    All,
    ReadModels,
    Search,
}

impl Role {
    pub fn read_models(self) -> bool {
        self != Role::Search
    }

    pub fn search(self) -> bool {
        self != Role::ReadModels
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ReplayTarget {
    All,
    ReadModels,
    Search,
}

/// projector configuration, from the environment (or flags). The defaults
/// match what `./dev up` runs locally.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Address of the health and metrics endpoints.
    #[arg(
        long,
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:8082",
        global = true
    )]
    pub http_addr: SocketAddr,

    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://chronicle:chronicle@127.0.0.1:5432/chronicle",
        global = true
    )]
    pub database_url: String,

    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 8,
        global = true
    )]
    pub database_max_connections: u32,

    #[arg(
        long,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub kafka_brokers: String,

    #[arg(
        long,
        env = "KAFKA_TOPIC",
        default_value = "chronicle.events",
        global = true
    )]
    pub kafka_topic: String,

    /// Partitions of the topic when this service creates it.
    #[arg(
        long,
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 6,
        global = true
    )]
    pub kafka_topic_partitions: i32,

    /// Consumer group of the read-model projector; instances in one group share the partitions.
    #[arg(
        long,
        env = "PROJECTOR_GROUP",
        default_value = "chronicle-projector",
        global = true
    )]
    pub consumer_group: String,

    /// Most events applied in one transaction.
    #[arg(
        long,
        env = "PROJECTOR_BATCH_SIZE",
        default_value_t = 500,
        global = true
    )]
    pub batch_size: usize,

    /// A stable identity of this instance in its consumer group (Kafka static
    /// membership): a restart takes its partitions back at once instead of
    /// after the session timeout. Unique per instance; unset for dynamic membership.
    #[arg(long, env = "PROJECTOR_INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,

    /// What this instance projects: all, read-models, or search (see [`Role`]).
    #[arg(
        long,
        env = "PROJECTOR_ROLE",
        value_enum,
        default_value = "all",
        global = true
    )]
    pub role: Role,

    /// Directory of the search index (shared with query-service on this machine).
    #[arg(
        long,
        env = "SEARCH_INDEX_DIR",
        default_value = "data/search-index",
        global = true
    )]
    pub search_index_dir: std::path::PathBuf,

    /// Longest delay between a post change and its search index commit.
    #[arg(
        long,
        env = "SEARCH_COMMIT_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub search_commit_interval_ms: u64,

    /// The internal service credential: required by the admin API
    /// (`projector replay`, `projector redrive`), sent by the CLI.
    #[arg(long, env = "COMMAND_API_TOKEN", hide_env_values = true, global = true)]
    pub service_token: Option<chronicle_schema::commands::Secret>,
}
