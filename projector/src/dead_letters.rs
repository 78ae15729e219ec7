//! Events the read models could not take, set aside so the projector goes on;
//! and their redrive, once a fix can take them.

use chronicle_schema::bus::Envelope;
use chronicle_schema::events::StoredEventRow;
use chronicle_schema::privacy::Keyring;
use chronicle_schema::{RecordedEvent, StreamType};
use sqlx::PgPool;
use uuid::Uuid;

use crate::apply::{self, Incoming};
use crate::read_models::{PROJECTION, SWAP_LOCK_KEY};

/// Where a message sits on Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KafkaPosition {
    pub partition: i32,
    pub offset: i64,
}

/// One event set aside, with what is known of it.
#[derive(Clone, Debug)]
pub struct Letter {
    pub event_id: Option<Uuid>,
    pub stream_id: Option<Uuid>,
    pub stream_type: Option<StreamType>,
    pub version: Option<i32>,
    pub position: Option<i64>,
    pub event_type: Option<String>,
    pub at: Option<KafkaPosition>,
    pub error: String,
}

impl Letter {
    /// An event its row refused.
    pub fn event(event: &RecordedEvent, error: String) -> Letter {
        Letter {
            event_id: Some(event.event_id),
            stream_id: Some(event.stream_id),
            stream_type: Some(event.stream_type),
            version: Some(event.version),
            position: Some(event.position),
            event_type: Some(event.event.event_type().to_owned()),
            at: None,
            error,
        }
    }

    /// A message whose headers name the event but whose payload this build
    /// cannot read (an event type or schema version it does not know).
    pub fn envelope(envelope: &Envelope, at: Option<KafkaPosition>, error: String) -> Letter {
        Letter {
            event_id: Some(envelope.event_id),
            stream_id: Some(envelope.stream_id),
            stream_type: Some(envelope.stream_type),
            version: Some(envelope.version),
            position: Some(envelope.position),
            event_type: Some(envelope.event_type.clone()),
            at,
            error,
        }
    }

    /// A stored event this build cannot read (met while filling a hole).
    pub fn stored(row: &StoredEventRow, at: Option<KafkaPosition>, error: String) -> Letter {
        Letter {
            event_id: Some(row.event_id),
            stream_id: Some(row.stream_id),
            stream_type: StreamType::parse(&row.stream_type),
            version: Some(row.version),
            position: Some(row.position),
            event_type: Some(row.event_type.clone()),
            at,
            error,
        }
    }

    /// A message that says nothing readable about itself.
    pub fn unreadable(at: Option<KafkaPosition>, error: String) -> Letter {
        Letter {
            event_id: None,
            stream_id: None,
            stream_type: None,
            version: None,
            position: None,
            event_type: None,
            at,
            error,
        }
    }
}

/// Records a letter once: the same event, or the same unreadable message,
/// redelivered is the same letter.
pub async fn record(
    connection: &mut sqlx::PgConnection,
    projection: &str,
    letter: &Letter,
) -> Result<(), sqlx::Error> {
    let inserted = match letter.event_id {
        Some(event_id) => sqlx::query!(
            r#"INSERT INTO projector.dead_letters
                   (projection, event_id, stream_id, version, position, event_type,
                    kafka_partition, kafka_offset, error)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (projection, event_id) WHERE event_id IS NOT NULL
               DO UPDATE SET error = EXCLUDED.error, failed_at = now(), redriven_at = NULL
               WHERE projector.dead_letters.redriven_at IS NOT NULL"#,
            projection,
            event_id,
            letter.stream_id,
            letter.version,
            letter.position,
            letter.event_type,
            letter.at.map(|at| at.partition),
            letter.at.map(|at| at.offset),
            letter.error
        )
        .execute(&mut *connection)
        .await?
        .rows_affected(),
        None => sqlx::query!(
            r#"INSERT INTO projector.dead_letters (projection, kafka_partition, kafka_offset, error)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (projection, kafka_partition, kafka_offset) WHERE event_id IS NULL
               DO NOTHING"#,
            projection,
            letter.at.map(|at| at.partition),
            letter.at.map(|at| at.offset),
            letter.error
        )
        .execute(&mut *connection)
        .await?
        .rows_affected(),
    };
    if inserted > 0 {
        metrics::counter!("chronicle_dead_letters_total", "projection" => projection.to_owned())
            .increment(1);
        tracing::error!(projection, event_id = ?letter.event_id, stream_id = ?letter.stream_id,
            version = ?letter.version, partition = ?letter.at.map(|at| at.partition),
            offset = ?letter.at.map(|at| at.offset), error = %letter.error,
            "event set aside as a dead letter");
    }
    Ok(())
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RedriveReport {
    pub redriven: u64,
    pub still_failing: u64,
    /// Messages that never decoded: nothing in the store to re-apply.
    pub skipped: u64,
}

/// Re-applies the read models' open dead letters (after a fix). Each stream
/// with one is folded again from its first event in the event store, under
/// the same locks and in the same transaction shape as a live batch, so its
/// rows end in the stream's current state whatever the live consumer applies
/// meanwhile, and its applied version never goes back.
pub async fn redrive(pool: &PgPool) -> Result<RedriveReport, apply::ApplyError> {
    let open = sqlx::query!(
        r#"SELECT id, stream_id FROM projector.dead_letters
           WHERE projection = $1 AND redriven_at IS NULL ORDER BY id"#,
        PROJECTION
    )
    .fetch_all(pool)
    .await?;
    let mut report = RedriveReport::default();
    let mut streams: Vec<Uuid> = Vec::new();
    for letter in &open {
        match letter.stream_id {
            Some(stream_id) if !streams.contains(&stream_id) => streams.push(stream_id),
            Some(_) => {}
            None => report.skipped += 1,
        }
    }
    for stream_id in streams {
        let mut transaction = pool.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock_shared($1)", SWAP_LOCK_KEY)
            .execute(&mut *transaction)
            .await?;
        let rows = sqlx::query_as!(
            StoredEventRow,
            r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                      schema_version, payload, command_id, correlation_id, causation_id,
                      actor_id, metadata, recorded_at
               FROM event_store.events WHERE stream_id = $1 ORDER BY version"#,
            stream_id
        )
        .fetch_all(&mut *transaction)
        .await?;
        let mut failure = None;
        let mut events = Vec::with_capacity(rows.len());
        let keys =
            Keyring::for_payloads(&mut *transaction, rows.iter().map(|row| &row.payload)).await?;
        for row in rows {
            match RecordedEvent::open(row, &keys) {
                Ok(event) => events.push(Incoming::Event(event)),
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        let outcome = match failure {
            Some(_) => None,
            None => Some(apply::refold(&mut transaction, &events).await?),
        };
        match (failure, outcome) {
            (None, Some(outcome)) if outcome.dead_lettered == 0 => {
                sqlx::query!(
                    "UPDATE projector.dead_letters SET redriven_at = now()
                     WHERE projection = $1 AND stream_id = $2 AND redriven_at IS NULL",
                    PROJECTION,
                    stream_id
                )
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                report.redriven += 1;
            }
            (failure, _) => {
                transaction.rollback().await?;
                let error = failure.unwrap_or_else(|| "still refused by the read models".into());
                sqlx::query!(
                    "UPDATE projector.dead_letters SET error = $3, failed_at = now()
                     WHERE projection = $1 AND stream_id = $2 AND redriven_at IS NULL",
                    PROJECTION,
                    stream_id,
                    error
                )
                .execute(pool)
                .await?;
                report.still_failing += 1;
            }
        }
    }
    Ok(report)
}
