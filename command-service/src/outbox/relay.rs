//! Publishing committed events to Kafka, none lost, none phantom, in order.
//!
//! The events table is the outbox. Positions come from a sequence, and
//! sequences commit out of order: reading `position > last` could pass over an
//! event whose transaction commits late, and lose it. So the relay reads only
//! rows whose transaction id is older than every transaction still running
//! (`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`): all of those
//! have finished, so no earlier row can still appear. It reads them in
//! (transaction_id, position) order and keeps that pair as its cursor.
//!
//! Per-stream order holds because an append is its transaction's first write
//! (a transaction id is assigned at the first write): the transaction that
//! appends version n+1 read version n committed, so it got its id after
//! version n's transaction did.
//!
//! The relay waits only for transactions that append (`fence`), not for
//! every transaction on the server.
//!
//! One relay is active at a time: it holds a lease, renewed every few seconds
//! (`lease`); others stand by and take over when a leader goes silent.
//! Delivery is at-least-once (a crash between publishing and saving the
//! cursor republishes, as does a leader that wakes after losing its lease);
//! the idempotent producer keeps retries from reordering a partition, and
//! consumers skip versions they have. The relay publishes what is stored,
//! without needing to understand it: consumers decide what they can read.
//!
//! Reading and acknowledging overlap: the next batch is read and sent while
//! Kafka acknowledges the last ones (the idempotent producer keeps them in
//! order), and the cursor moves past a batch only once every batch up to it
//! is acknowledged. A failure restarts from the cursor: duplicates, no loss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use chronicle_platform::retry::{self, Backoff};
use chronicle_platform::trace_context;
use chronicle_schema::bus;
use chronicle_schema::events::{StoreCursor, StoredEventRow, fence, read_committed};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::lease::{self, Lease};

const RELAY_NAME: &str = lease::RELAY;
/// When idle, look for newly safe events this often (another instance's
/// commits, or an old transaction ending, wake no one here).
const IDLE_POLL: Duration = Duration::from_millis(50);
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// Batches sent but not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Clone, Debug)]
pub struct RelaySettings {
    pub database: PgConnectOptions,
    pub brokers: String,
    pub topic: String,
    pub batch_size: i64,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the relay's lease was lost (this instance was silent too long); standing by")]
    LeaseLost,
}

pub struct Relay {
    settings: RelaySettings,
    wake: Arc<Notify>,
    /// This instance, as the lease's holder.
    instance: Uuid,
}

impl Relay {
    pub fn new(settings: RelaySettings, wake: Arc<Notify>) -> Relay {
        Relay {
            settings,
            wake,
            instance: Uuid::now_v7(),
        }
    }

    /// Runs until `shutdown`: stands by, leads while it holds the lock, and
    /// starts over (with backoff) after any database or Kafka failure.
    pub async fn run(self, shutdown: CancellationToken) {
        retry::until_ok(
            "the outbox relay",
            &shutdown,
            Backoff::standard(),
            || async {
                self.lead(&shutdown).await.inspect_err(|_| {
                    metrics::gauge!("chronicle_relay_active").set(0.0);
                    metrics::counter!("chronicle_relay_failures_total").increment(1);
                })
            },
        )
        .await;
        metrics::gauge!("chronicle_relay_active").set(0.0);
        tracing::info!("outbox relay stopped");
    }

    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        // The relay writes only its lease and cursor, whose loss in a crash
        // of the server or a failover costs republishing (duplicates), never
        // an event. Not waiting for their WAL flush keeps the relay's fsyncs
        // out of the appends' way: they shared one WAL writer.
        let mut connection = self
            .settings
            .database
            .clone()
            .options([("synchronous_commit", "off")])
            .connect()
            .await?;
        let mut lease = loop {
            if let Some(lease) = Lease::acquire(&mut connection, self.instance).await? {
                break lease;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(STANDBY_POLL) => {}
            }
        };
        tracing::info!(instance = %self.instance, "outbox relay is active");
        metrics::gauge!("chronicle_relay_active").set(1.0);
        let producer = producer(&self.settings.brokers)?;
        // How far has been read and sent; the saved cursor trails it by the
        // batches not yet acknowledged.
        let mut sent_up_to = load_cursor(&mut connection).await?;
        let mut in_flight = VecDeque::new();

        loop {
            if shutdown.is_cancelled() {
                acknowledged(&mut connection, &mut in_flight, &lease, Wait::All).await?;
                let _ = lease.release(&mut connection).await;
                return Ok(());
            }
            if !lease.keep(&mut connection).await? || !lease.valid() {
                return Err(RelayError::LeaseLost);
            }
            let wait = if in_flight.len() >= MAX_IN_FLIGHT {
                Wait::Oldest
            } else {
                Wait::Ready
            };
            acknowledged(&mut connection, &mut in_flight, &lease, wait).await?;
            let horizon = fence::horizon(&mut connection).await?;
            let batch = read_committed(
                &mut connection,
                &sent_up_to,
                &horizon,
                self.settings.batch_size,
            )
            .await?;
            let Some((last, _)) = batch.last() else {
                if let Some(oldest) = in_flight.front_mut() {
                    // Nothing new to read: wait for Kafka to acknowledge the
                    // oldest batch (settled at the top of the loop), but read
                    // again at once when a commit wakes the relay, rather
                    // than keep that commit waiting for the acknowledgements.
                    tokio::select! {
                        acknowledged = oldest.wait() => acknowledged?,
                        () = self.wake.notified() => {}
                        () = shutdown.cancelled() => {}
                    }
                    continue;
                }
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            let next = last.clone();
            let events: Vec<StoredEventRow> = batch.into_iter().map(|(_, row)| row).collect();
            in_flight.push_back(Sent {
                deliveries: send(&producer, &self.settings.topic, &events)?,
                events: events.len(),
                cursor: next.clone(),
            });
            sent_up_to = next;
        }
    }
}

/// A batch handed to the producer, and the cursor just past it.
struct Sent {
    /// Deliveries not yet known to be acknowledged, in order.
    deliveries: VecDeque<(DeliveryFuture, tracing::Span)>,
    events: usize,
    cursor: StoreCursor,
}

impl Sent {
    /// Whether every delivery is acknowledged, without waiting.
    fn done(&mut self) -> Result<bool, RelayError> {
        while let Some((delivery, _span)) = self.deliveries.front_mut() {
            let Some(outcome) = delivery.now_or_never() else {
                return Ok(false);
            };
            delivered(outcome)?;
            self.deliveries.pop_front();
        }
        Ok(true)
    }

    /// Waits until every delivery is acknowledged. Cancel-safe: a delivery
    /// leaves the queue only once its acknowledgement is in hand, so a wait
    /// given up never counts an unacknowledged one as done.
    async fn wait(&mut self) -> Result<(), RelayError> {
        while let Some((delivery, _span)) = self.deliveries.front_mut() {
            let outcome = delivery.await;
            self.deliveries.pop_front();
            delivered(outcome)?;
        }
        Ok(())
    }
}

fn delivered(
    outcome: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<(), RelayError> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(RelayError::Kafka(error)),
        Err(_) => Err(RelayError::Kafka(rdkafka::error::KafkaError::Canceled)),
    }
}

enum Wait {
    /// Settle only batches already acknowledged.
    Ready,
    /// Wait for the oldest batch, then settle what else is ready.
    Oldest,
    /// Wait for every batch.
    All,
}

/// Takes acknowledged batches off the front of `in_flight` and saves the
/// cursor past the last of them (in order: never past an unacknowledged one).
async fn acknowledged(
    connection: &mut PgConnection,
    in_flight: &mut VecDeque<Sent>,
    lease: &Lease,
    wait: Wait,
) -> Result<(), RelayError> {
    let mut settled: Option<StoreCursor> = None;
    let mut published = 0;
    let mut must_wait = !matches!(wait, Wait::Ready);
    while let Some(batch) = in_flight.front_mut() {
        if must_wait {
            batch.wait().await?;
        } else if !batch.done()? {
            break;
        }
        let batch = in_flight.pop_front().expect("just looked at it");
        published += batch.events;
        settled = Some(batch.cursor);
        must_wait = matches!(wait, Wait::All);
    }
    if let Some(cursor) = settled {
        if !save_cursor(connection, &cursor, published, lease).await? {
            return Err(RelayError::LeaseLost);
        }
        metrics::counter!("chronicle_relay_published_total").increment(published as u64);
    }
    Ok(())
}

async fn load_cursor(connection: &mut PgConnection) -> Result<StoreCursor, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT transaction_id::text AS "transaction_id!", position
           FROM event_store.relay_cursor WHERE relay = $1"#,
        RELAY_NAME
    )
    .fetch_optional(connection)
    .await?;
    Ok(row.map_or_else(StoreCursor::start, |row| StoreCursor {
        transaction_id: row.transaction_id,
        position: row.position,
    }))
}

/// Saves the cursor, only while this relay holds the lease (a leader that
/// lost it must not move the cursor its successor moves); false if not.
async fn save_cursor(
    connection: &mut PgConnection,
    cursor: &StoreCursor,
    published: usize,
    lease: &Lease,
) -> Result<bool, sqlx::Error> {
    let saved = sqlx::query!(
        r#"INSERT INTO event_store.relay_cursor (relay, transaction_id, position, published_total, updated_at)
           SELECT $1, $2::text::xid8, $3, $4, now()
           WHERE EXISTS (SELECT 1 FROM event_store.relay_lease WHERE relay = $1 AND holder = $5)
           ON CONFLICT (relay) DO UPDATE
             SET transaction_id = EXCLUDED.transaction_id,
                 position = EXCLUDED.position,
                 published_total = event_store.relay_cursor.published_total + EXCLUDED.published_total,
                 updated_at = now()"#,
        RELAY_NAME,
        cursor.transaction_id,
        cursor.position,
        published as i64,
        lease.holder
    )
    .execute(connection)
    .await?;
    Ok(saved.rows_affected() == 1)
}

fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    chronicle_platform::kafka::client_config(brokers)
        // Idempotence: broker-side de-duplication of retries, and no
        // reordering within a partition with several requests in flight.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Hands every event to the producer, in order; their acknowledgements are
/// awaited by [`acknowledged`].
fn send(
    producer: &FutureProducer,
    topic: &str,
    events: &[StoredEventRow],
) -> Result<VecDeque<(DeliveryFuture, tracing::Span)>, RelayError> {
    let mut deliveries = VecDeque::with_capacity(events.len());
    for event in events {
        let bus::Message {
            key,
            value,
            headers,
        } = bus::Message::from_row(event);
        // A span per event, continuing its command's trace, open until Kafka
        // acknowledges it; the message carries it on to the projector.
        let span = tracing::info_span!("relay.publish", stream_id = %event.stream_id, version = event.version);
        let stored_traceparent = event
            .metadata
            .get("traceparent")
            .and_then(|value| value.as_str());
        trace_context::continue_from(&span, stored_traceparent);
        let traceparent = trace_context::traceparent_of(&span);
        let headers = headers
            .into_iter()
            .map(|(name, value)| match (name, &traceparent) {
                (bus::TRACEPARENT, Some(traceparent)) => (name, traceparent.clone()),
                _ => (name, value),
            })
            .fold(OwnedHeaders::new(), |headers, (name, value)| {
                headers.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                })
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| RelayError::Kafka(error))?;
        deliveries.push_back((delivery, span));
    }
    Ok(deliveries)
}
