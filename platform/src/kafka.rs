//! Kafka clients configured the way Chronicle needs them.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("could not create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Settings shared by every client: where the brokers are, and bounded timeouts
/// so a stopped broker surfaces as an error instead of a hang.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "4");
    config
}

/// Creates the topic if it does not exist yet (a second start is harmless).
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        // Events are kept in Postgres for ever; Kafka keeps a week for consumers.
        .set("retention.ms", "604800000");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new_topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Deletes a topic (tests use one topic each).
pub async fn delete_topic(brokers: &str, topic: &str) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin.delete_topics(&[topic], &options).await?;
    Ok(())
}

/// A dependency check for `/health/ready`: the broker answers a metadata request.
pub async fn ping(brokers: String, topic: String) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&brokers)
            .create()
            .map_err(|error| format!("kafka: {error}"))?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(2))
            .map_err(|error| format!("kafka: {error}"))?;
        match metadata.topics().first().and_then(|topic| topic.error()) {
            None => Ok(()),
            Some(error) => Err(format!("kafka topic {topic}: {error:?}")),
        }
    })
    .await
    .map_err(|error| format!("kafka check panicked: {error}"))?
}
