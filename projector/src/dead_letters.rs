//! Events a handler could not apply, set aside so the projector goes on.

use chronicle_schema::RecordedEvent;
use sqlx::PgConnection;

/// Where an undecodable message sits on Kafka.
#[derive(Clone, Copy, Debug)]
pub struct KafkaPosition {
    pub partition: i32,
    pub offset: i64,
}

pub async fn record_event(
    connection: &mut PgConnection,
    projection: &str,
    event: &RecordedEvent,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO projector.dead_letters
               (projection, event_id, stream_id, version, position, event_type, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (projection, event_id) WHERE event_id IS NOT NULL
           DO UPDATE SET error = EXCLUDED.error, failed_at = now(), redriven_at = NULL"#,
        projection,
        event.event_id,
        event.stream_id,
        event.version,
        event.position,
        event.event.event_type(),
        error
    )
    .execute(connection)
    .await?;
    metrics::counter!("chronicle_dead_letters_total", "projection" => projection.to_owned())
        .increment(1);
    tracing::error!(projection, event_id = %event.event_id, stream_id = %event.stream_id,
        version = event.version, error, "event set aside as a dead letter");
    Ok(())
}

pub async fn record_undecodable(
    connection: &mut PgConnection,
    projection: &str,
    at: KafkaPosition,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO projector.dead_letters (projection, kafka_partition, kafka_offset, error)
           VALUES ($1, $2, $3, $4)"#,
        projection,
        at.partition,
        at.offset,
        error
    )
    .execute(connection)
    .await?;
    metrics::counter!("chronicle_dead_letters_total", "projection" => projection.to_owned())
        .increment(1);
    tracing::error!(
        projection,
        partition = at.partition,
        offset = at.offset,
        error,
        "undecodable message set aside as a dead letter"
    );
    Ok(())
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RedriveReport {
    pub redriven: u64,
    pub still_failing: u64,
    /// Messages that never decoded: nothing in the store to re-apply.
    pub skipped: u64,
}

/// Re-applies the read models' open dead letters (after a fix). A stream is
/// re-applied from the dead letter's version to its latest, in order, so the
/// later events that were applied meanwhile are applied again after it and
/// the rows end in the stream's current state.
pub async fn redrive(pool: &sqlx::PgPool) -> Result<RedriveReport, sqlx::Error> {
    let open = sqlx::query!(
        r#"SELECT id, stream_id, version FROM projector.dead_letters
           WHERE projection = $1 AND redriven_at IS NULL ORDER BY id"#,
        crate::read_models::PROJECTION
    )
    .fetch_all(pool)
    .await?;
    let mut report = RedriveReport::default();
    for letter in open {
        let (Some(stream_id), Some(version)) = (letter.stream_id, letter.version) else {
            report.skipped += 1;
            continue;
        };
        let mut transaction = pool.begin().await?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock_shared($1)",
            crate::read_models::SWAP_LOCK_KEY
        )
        .execute(&mut *transaction)
        .await?;
        let rows = sqlx::query_as!(
            chronicle_schema::events::StoredEventRow,
            r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                      schema_version, payload, command_id, correlation_id, causation_id,
                      actor_id, metadata, recorded_at
               FROM event_store.events WHERE stream_id = $1 AND version >= $2 ORDER BY version"#,
            stream_id,
            version
        )
        .fetch_all(&mut *transaction)
        .await?;
        let mut failure = None;
        for row in rows {
            let outcome = match RecordedEvent::try_from(row) {
                Ok(event) => crate::projections::apply(&mut transaction, &event)
                    .await
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = outcome {
                failure = Some(error);
                break;
            }
        }
        match failure {
            None => {
                sqlx::query!(
                    "UPDATE projector.dead_letters SET redriven_at = now() WHERE id = $1",
                    letter.id
                )
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                report.redriven += 1;
            }
            Some(error) => {
                transaction.rollback().await?;
                sqlx::query!(
                    "UPDATE projector.dead_letters SET error = $2, failed_at = now() WHERE id = $1",
                    letter.id,
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
