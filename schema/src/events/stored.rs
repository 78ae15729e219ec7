//! The row shape of `event_store.events`, shared by every reader of the store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DecodeError, DomainEvent, EventMetadata, RecordedEvent, StreamType};

/// One row of `event_store.events` as selected by readers (columns in this order).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEventRow {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: String,
    pub version: i32,
    pub event_type: String,
    pub schema_version: i16,
    pub payload: serde_json::Value,
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor_id: Option<Uuid>,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl TryFrom<StoredEventRow> for RecordedEvent {
    type Error = DecodeError;

    fn try_from(row: StoredEventRow) -> Result<Self, Self::Error> {
        let stream_type = StreamType::parse(&row.stream_type)
            .ok_or_else(|| DecodeError::UnknownType(format!("stream type {}", row.stream_type)))?;
        let traceparent = row
            .metadata
            .get("traceparent")
            .and_then(|value| value.as_str())
            .map(str::to_owned);
        Ok(RecordedEvent {
            position: row.position,
            event_id: row.event_id,
            stream_id: row.stream_id,
            stream_type,
            version: row.version,
            event: DomainEvent::decode(&row.event_type, row.schema_version, row.payload)?,
            metadata: EventMetadata {
                command_id: row.command_id,
                correlation_id: row.correlation_id,
                causation_id: row.causation_id,
                actor_id: row.actor_id,
                traceparent,
            },
            recorded_at: row.recorded_at,
        })
    }
}
