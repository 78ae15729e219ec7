//! Consuming the event bus in batches.
//!
//! Offsets are committed to Kafka only after the batch's transaction commits;
//! a crash in between redelivers the batch, and the per-stream versions make
//! the second application a no-op. Kafka's offsets are a hint, Postgres has
//! the truth.

use chronicle_platform::retry::{self, Backoff};
use chronicle_schema::bus::{self, Envelope};
use chronicle_schema::privacy::Keyring;
use futures::{FutureExt, TryFutureExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, Incoming};
use crate::dead_letters::{KafkaPosition, Letter};
use crate::rebuild::Projection;
use crate::status::Failures;

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub batch_size: usize,
    pub instance_id: Option<String>,
}

pub async fn run(
    settings: ConsumerSettings,
    pool: PgPool,
    failures: Failures,
    shutdown: CancellationToken,
) {
    retry::until_ok(
        "the event consumer",
        &shutdown,
        Backoff::standard(),
        || async {
            consume(&settings, &pool, &failures, &shutdown)
                .await
                .inspect_err(|_| failures.record(Projection::ReadModels))
        },
    )
    .await;
    tracing::info!("event consumer stopped");
}

fn create_consumer(
    settings: &ConsumerSettings,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let mut config =
        chronicle_platform::kafka::group_consumer_config(&settings.brokers, &settings.group);
    if let Some(instance) = &settings.instance_id {
        config.set("group.instance.id", instance);
    }
    config.create()
}

async fn consume(
    settings: &ConsumerSettings,
    pool: &PgPool,
    failures: &Failures,
    shutdown: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer = create_consumer(settings)?;
    consumer.subscribe(&[settings.topic.as_str()])?;
    tracing::info!(topic = %settings.topic, group = %settings.group, "consuming events");
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = consumer.recv() => message?.detach(),
        };
        let messages = fill_batch(&consumer, first, settings.batch_size)?;
        let parsed: Vec<Parsed> = messages.iter().map(parse).collect();
        // Infrastructure failures retry the same batch; shutdown abandons it
        // uncommitted (it is redelivered to whoever consumes next).
        let applied = retry::until_ok("applying a batch", shutdown, Backoff::standard(), || {
            async {
                let batch = open(pool, &parsed).await?;
                apply::apply_batch(pool, &batch).await
            }
            .inspect_err(|_| {
                failures.record(Projection::ReadModels);
                metrics::counter!("chronicle_projector_batch_failures_total").increment(1);
            })
        })
        .await;
        let Some(outcome) = applied else {
            return Ok(());
        };
        tracing::debug!(?outcome, "batch applied");
        chronicle_platform::kafka::commit_past(&consumer, &settings.topic, &messages)?;
    }
}

/// Takes, after `first`, whatever else has already arrived, up to `batch_size`.
///
/// No waiting for more: batches grow by themselves under load (what arrives
/// while one batch is applied forms the next), and an event that arrives
/// alone is applied at once.
///
/// `recv()` is cancellation safe, so a poll that finds nothing loses nothing.
pub(crate) fn fill_batch(
    consumer: &StreamConsumer,
    first: OwnedMessage,
    batch_size: usize,
) -> Result<Vec<OwnedMessage>, rdkafka::error::KafkaError> {
    let mut messages = vec![first];
    while messages.len() < batch_size {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(error)) => return Err(error),
            None => break,
        }
    }
    Ok(messages)
}

/// A message read as far as it can be without keys.
enum Parsed {
    Message(Box<Envelope>, serde_json::Value, Option<KafkaPosition>),
    Unreadable(Box<Letter>),
}

/// The batch's events, their personal values opened with the keys of the
/// people they name (loaded now: an erased person's values read as erased).
async fn open(pool: &PgPool, parsed: &[Parsed]) -> Result<Vec<Incoming>, apply::ApplyError> {
    let payloads = parsed.iter().filter_map(|parsed| match parsed {
        Parsed::Message(_, payload, _) => Some(payload),
        Parsed::Unreadable(_) => None,
    });
    let keys = Keyring::for_payloads(pool, payloads).await?;
    Ok(parsed
        .iter()
        .map(|parsed| match parsed {
            Parsed::Unreadable(letter) => Incoming::Unreadable(letter.clone()),
            Parsed::Message(envelope, payload, at) => {
                match (**envelope).clone().open_value(payload.clone(), &keys) {
                    Ok(event) => Incoming::Event(event),
                    Err(error) => Incoming::Unreadable(Box::new(Letter::envelope(
                        envelope,
                        *at,
                        error.to_string(),
                    ))),
                }
            }
        })
        .collect())
}

fn parse(message: &OwnedMessage) -> Parsed {
    let headers = message.headers();
    let header = |name: &str| {
        headers.and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == name)
                .and_then(|header| header.value)
        })
    };
    let at = Some(KafkaPosition {
        partition: message.partition(),
        offset: message.offset(),
    });
    let envelope = match bus::decode_envelope(header) {
        Ok(envelope) => envelope,
        Err(error) => {
            return Parsed::Unreadable(Box::new(Letter::unreadable(at, error.to_string())));
        }
    };
    match serde_json::from_slice(message.payload().unwrap_or_default()) {
        Ok(payload) => Parsed::Message(Box::new(envelope), payload, at),
        Err(error) => Parsed::Unreadable(Box::new(Letter::envelope(
            &envelope,
            at,
            bus::BusDecodeError::Payload(error).to_string(),
        ))),
    }
}
