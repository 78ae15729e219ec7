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
