use std::net::SocketAddr;

/// image-worker configuration, from the environment (or flags). The
/// defaults match what `./dev up` runs locally.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "image-worker", version, about = "Chronicle's image worker")]
pub struct Config {
    /// Address of health and metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8084")]
    pub http_addr: SocketAddr,

    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    #[arg(long, env = "KAFKA_TOPIC", default_value = "chronicle.events")]
    pub kafka_topic: String,

    /// Instances in one group share the topic's partitions.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "chronicle-images")]
    pub consumer_group: String,

    /// Where originals are read and renditions written (the command-service's
    /// and query-service's store).
    #[arg(long, env = "OBJECT_STORE_URL", default_value = "data/objects")]
    pub object_store_url: String,

    #[arg(
        long,
        env = "COMMAND_SERVICE_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub command_service_url: String,

    /// Credential presented to the command-service (X-Service-Token).
    #[arg(long, env = "COMMAND_API_TOKEN", hide_env_values = true)]
    pub command_api_token: String,

    /// Images processed at once (each on a blocking thread).
    #[arg(long, env = "IMAGE_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
}
