//! A fresh topic per test, and reading a whole topic back.

use std::time::Duration;

use chronicle_schema::privacy::Keyring;
use chronicle_schema::{RecordedEvent, bus};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub struct TestTopic {
    pub name: String,
}

impl TestTopic {
    pub async fn create(partitions: i32) -> TestTopic {
        TestTopic::create_on(&brokers(), partitions).await
    }

    pub async fn create_on(brokers: &str, partitions: i32) -> TestTopic {
        let name = format!("chronicle-t-{}", uuid::Uuid::new_v4().simple());
        chronicle_platform::kafka::ensure_topic(brokers, &name, partitions)
            .await
            .unwrap_or_else(|error| {
                panic!("cannot create a Kafka topic ({error}); run the tests with ./dev test")
            });
        TestTopic { name }
    }
}

/// One message as a consumer outside Chronicle sees it.
#[derive(Clone, Debug)]
pub struct BusMessage {
    pub event: RecordedEvent,
    pub key: String,
    pub partition: i32,
    pub headers: Vec<(String, String)>,
}

impl BusMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One message as it is on the topic, whether or not it can be decoded.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub key: String,
    pub partition: i32,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl RawMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    /// The event, as a consumer without anyone's key reads it (personal
    /// values blank).
    pub fn decode(&self) -> Result<RecordedEvent, bus::BusDecodeError> {
        self.decode_with(&Keyring::none())
    }

    /// The event, its personal values opened with `keys`.
    pub fn decode_with(&self, keys: &Keyring) -> Result<RecordedEvent, bus::BusDecodeError> {
        bus::decode(
            |name| self.header(name).map(str::as_bytes),
            &self.payload,
            keys,
        )
    }
}

/// Messages of the topic in per-partition order, until `expected` arrived or
/// `timeout` passed.
pub async fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<BusMessage> {
    read_raw_topic(topic, expected, timeout)
        .await
        .into_iter()
        .map(|message| BusMessage {
            event: message.decode().expect("a decodable event"),
            key: message.key,
            partition: message.partition,
            headers: message.headers,
        })
        .collect()
}

/// The topic's messages as they are, undecoded.
pub async fn read_raw_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<RawMessage> {
    let consumer: StreamConsumer = chronicle_platform::kafka::consumer_config(&brokers())
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a test consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    while messages.len() < expected {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => message.expect("read from Kafka"),
            Err(_) => break,
        };
        let headers: Vec<(String, String)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        let value = header
                            .value
                            .map(|value| String::from_utf8_lossy(value).into_owned());
                        (header.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        messages.push(RawMessage {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            partition: message.partition(),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    messages
}

/// Publishes one event straight to the topic, as the relay would.
pub async fn publish(topic: &str, event: &RecordedEvent) {
    let row = chronicle_schema::events::StoredEventRow {
        position: event.position,
        event_id: event.event_id,
        stream_id: event.stream_id,
        stream_type: event.stream_type.as_str().to_owned(),
        version: event.version,
        event_type: event.event.event_type().to_owned(),
        schema_version: event.event.schema_version(),
        payload: event.event.to_payload(),
        command_id: event.metadata.command_id,
        correlation_id: event.metadata.correlation_id,
        causation_id: event.metadata.causation_id,
        actor_id: event.metadata.actor_id,
        metadata: serde_json::json!({}),
        recorded_at: event.recorded_at,
    };
    publish_row(topic, &row).await;
}

/// Publishes one stored event straight to the topic, as the relay would.
pub async fn publish_row(topic: &str, row: &chronicle_schema::events::StoredEventRow) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let producer: FutureProducer = chronicle_platform::kafka::client_config(&brokers())
        .create()
        .expect("a test producer");
    let message = bus::Message::from_row(row);
    let headers =
        message
            .headers
            .into_iter()
            .fold(OwnedHeaders::new(), |headers, (name, value)| {
                headers.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                })
            });
    let (key, value) = (message.key, message.value);
    producer
        .send(
            FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("publish to the test topic");
}
