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
}
