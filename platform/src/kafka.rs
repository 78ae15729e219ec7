//! Kafka clients configured the way Chronicle needs them.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

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

/// How long the broker holds a fetch that finds nothing new. It answers as
/// soon as a byte arrives (`fetch.min.bytes` is 1), so this bounds only how
/// often an idle consumer asks again, not its latency. At 10 ms, three idle
/// consumers kept a sixth of a core busy in the broker, taken from the
/// appends and the replay beside it on a small machine.
pub const FETCH_WAIT_MAX_MS: u32 = 100;

/// Settings of every consumer: `client_config`, a long-poll fetch, and no
/// end-of-partition events.
pub fn consumer_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
        .set("enable.partition.eof", "false");
    config
}

/// A consumer in `group` that commits only what its caller says is done
/// (`commit_past`), from the earliest offset when the group is new.
pub fn group_consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = consumer_config(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    config
}

/// Commits, per partition, the offset after the last of `messages`: they
/// are done, and a restart resumes after them.
pub fn commit_past<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    messages: &[OwnedMessage],
) -> Result<(), rdkafka::error::KafkaError> {
    let mut next_offsets: HashMap<i32, i64> = HashMap::new();
    for message in messages {
        let next = next_offsets.entry(message.partition()).or_insert(0);
        *next = (*next).max(message.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in next_offsets {
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&offsets, CommitMode::Async)
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

/// Exports a consumer group's lag every few seconds, as
/// `chronicle_kafka_consumer_lag{group, partition}`: the partition's high
/// watermark minus the group's committed offset. Runs on a thread of its own
/// (the calls block) with a client that only reads offsets.
pub fn report_consumer_lag(
    brokers: String,
    topic: String,
    group: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    std::thread::spawn(move || {
        let client: Result<BaseConsumer, _> =
            client_config(&brokers).set("group.id", &group).create();
        let Ok(client) = client else { return };
        while !shutdown.is_cancelled() {
            if let Err(error) = report_lag_once(&client, &topic, &group) {
                tracing::debug!(%error, "could not measure consumer lag");
            }
            for _ in 0..50 {
                if shutdown.is_cancelled() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
}

fn report_lag_once(
    client: &BaseConsumer,
    topic: &str,
    group: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(2);
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    for partition in metadata
        .topics()
        .iter()
        .flat_map(|topic| topic.partitions())
    {
        partitions.add_partition(topic, partition.id());
    }
    let committed = client.committed_offsets(partitions, timeout)?;
    let mut total = 0;
    for element in committed.elements() {
        let (_, high) = client.fetch_watermarks(topic, element.partition(), timeout)?;
        let committed = match element.offset() {
            rdkafka::Offset::Offset(offset) => offset,
            _ => 0,
        };
        let lag = (high - committed).max(0);
        total += lag;
        metrics::gauge!("chronicle_kafka_consumer_lag", "group" => group.to_owned(), "partition" => element.partition().to_string())
            .set(lag as f64);
    }
    metrics::gauge!("chronicle_kafka_consumer_lag_total", "group" => group.to_owned())
        .set(total as f64);
    Ok(())
}
