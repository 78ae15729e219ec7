//! How an event travels on Kafka: the CloudEvents Kafka protocol binding in
//! binary mode. The message value is the event payload (JSON), the key is the
//! stream id (so one stream stays in one partition, in order), and every
//! attribute is a header, so any consumer can read the bus without Chronicle.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::events::{DecodeError, DomainEvent, EventMetadata, RecordedEvent, StreamType};

pub const CE_SPECVERSION: &str = "ce_specversion";
pub const CE_ID: &str = "ce_id";
pub const CE_TYPE: &str = "ce_type";
pub const CE_SOURCE: &str = "ce_source";
pub const CE_SUBJECT: &str = "ce_subject";
pub const CE_TIME: &str = "ce_time";
pub const CONTENT_TYPE: &str = "content-type";
// CloudEvents extension attributes (lower-case alphanumerics, per the spec).
pub const CE_SCHEMA_VERSION: &str = "ce_schemaversion";
pub const CE_STREAM_TYPE: &str = "ce_streamtype";
pub const CE_STREAM_VERSION: &str = "ce_streamversion";
pub const CE_POSITION: &str = "ce_position";
pub const CE_COMMAND_ID: &str = "ce_commandid";
pub const CE_CORRELATION_ID: &str = "ce_correlationid";
pub const CE_CAUSATION_ID: &str = "ce_causationid";
pub const CE_ACTOR_ID: &str = "ce_actorid";
/// W3C trace context, so a trace continues from the command to the projector.
pub const TRACEPARENT: &str = "traceparent";

pub const SOURCE: &str = "/chronicle/command-service";
const TYPE_PREFIX: &str = "dev.chronicle.";

/// The message key: the stream id.
pub fn key(event: &RecordedEvent) -> String {
    event.stream_id.to_string()
}

/// The message value: the event payload, at its current schema version.
pub fn value(event: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(&event.event.to_payload()).expect("payloads always serialize")
}

/// The message headers, in a stable order.
pub fn headers(event: &RecordedEvent) -> Vec<(&'static str, String)> {
    let metadata = &event.metadata;
    let mut headers = vec![
        (CE_SPECVERSION, "1.0".to_owned()),
        (CE_ID, event.event_id.to_string()),
        (
            CE_TYPE,
            format!("{TYPE_PREFIX}{}", event.event.event_type()),
        ),
        (CE_SOURCE, SOURCE.to_owned()),
        (CE_SUBJECT, event.stream_id.to_string()),
        (
            CE_TIME,
            event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        (CONTENT_TYPE, "application/json".to_owned()),
        (CE_SCHEMA_VERSION, event.event.schema_version().to_string()),
        (CE_STREAM_TYPE, event.stream_type.as_str().to_owned()),
        (CE_STREAM_VERSION, event.version.to_string()),
        (CE_POSITION, event.position.to_string()),
        (CE_COMMAND_ID, metadata.command_id.to_string()),
        (CE_CORRELATION_ID, metadata.correlation_id.to_string()),
        (CE_CAUSATION_ID, metadata.causation_id.to_string()),
    ];
    if let Some(actor_id) = metadata.actor_id {
        headers.push((CE_ACTOR_ID, actor_id.to_string()));
    }
    if let Some(traceparent) = &metadata.traceparent {
        headers.push((TRACEPARENT, traceparent.clone()));
    }
    headers
}

#[derive(Debug, thiserror::Error)]
pub enum BusDecodeError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {header} is malformed: {value}")]
    MalformedHeader { header: &'static str, value: String },
    #[error("payload is not JSON: {0}")]
    Payload(serde_json::Error),
    #[error(transparent)]
    Event(#[from] DecodeError),
}

/// Rebuilds the recorded event from a message; `header` looks a header up by name.
pub fn decode<'a>(
    header: impl Fn(&str) -> Option<&'a [u8]>,
    payload: &[u8],
) -> Result<RecordedEvent, BusDecodeError> {
    let text = |name: &'static str| -> Result<&'a str, BusDecodeError> {
        let bytes = header(name).ok_or(BusDecodeError::MissingHeader(name))?;
        std::str::from_utf8(bytes).map_err(|_| BusDecodeError::MalformedHeader {
            header: name,
            value: String::from_utf8_lossy(bytes).into_owned(),
        })
    };
    fn parse<T: std::str::FromStr>(header: &'static str, value: &str) -> Result<T, BusDecodeError> {
        value.parse().map_err(|_| BusDecodeError::MalformedHeader {
            header,
            value: value.to_owned(),
        })
    }
    let uuid = |name: &'static str| -> Result<Uuid, BusDecodeError> { parse(name, text(name)?) };

    let ce_type = text(CE_TYPE)?;
    let event_type =
        ce_type
            .strip_prefix(TYPE_PREFIX)
            .ok_or_else(|| BusDecodeError::MalformedHeader {
                header: CE_TYPE,
                value: ce_type.to_owned(),
            })?;
    let schema_version: i16 = parse(CE_SCHEMA_VERSION, text(CE_SCHEMA_VERSION)?)?;
    let stream_type_text = text(CE_STREAM_TYPE)?;
    let stream_type =
        StreamType::parse(stream_type_text).ok_or_else(|| BusDecodeError::MalformedHeader {
            header: CE_STREAM_TYPE,
            value: stream_type_text.to_owned(),
        })?;
    let recorded_at: DateTime<Utc> = DateTime::parse_from_rfc3339(text(CE_TIME)?)
        .map_err(|_| BusDecodeError::MalformedHeader {
            header: CE_TIME,
            value: text(CE_TIME).unwrap_or_default().to_owned(),
        })?
        .with_timezone(&Utc);
    let payload = serde_json::from_slice(payload).map_err(BusDecodeError::Payload)?;
    let actor_id = match header(CE_ACTOR_ID) {
        Some(_) => Some(uuid(CE_ACTOR_ID)?),
        None => None,
    };
    let traceparent = match header(TRACEPARENT) {
        Some(_) => Some(text(TRACEPARENT)?.to_owned()),
        None => None,
    };

    Ok(RecordedEvent {
        position: parse(CE_POSITION, text(CE_POSITION)?)?,
        event_id: uuid(CE_ID)?,
        stream_id: uuid(CE_SUBJECT)?,
        stream_type,
        version: parse(CE_STREAM_VERSION, text(CE_STREAM_VERSION)?)?,
        event: DomainEvent::decode(event_type, schema_version, payload)?,
        metadata: EventMetadata {
            command_id: uuid(CE_COMMAND_ID)?,
            correlation_id: uuid(CE_CORRELATION_ID)?,
            causation_id: uuid(CE_CAUSATION_ID)?,
            actor_id,
            traceparent,
        },
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{UserEvent, UserRegistered};
    use crate::role::Role;

    fn sample() -> RecordedEvent {
        RecordedEvent {
            position: 42,
            event_id: Uuid::now_v7(),
            stream_id: Uuid::now_v7(),
            stream_type: StreamType::User,
            version: 1,
            event: DomainEvent::User(UserEvent::Registered(UserRegistered {
                email: "ada@example.com".into(),
                handle: "ada".into(),
                display_name: "Ada".into(),
                role: Role::User,
            })),
            metadata: EventMetadata {
                command_id: Uuid::now_v7(),
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                actor_id: None,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            },
            // Microsecond precision, as Postgres stores it.
            recorded_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn an_event_survives_the_bus() {
        let event = sample();
        let headers = headers(&event);
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| value.as_bytes())
        };
        let decoded = decode(lookup, &value(&event)).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn the_headers_follow_the_cloudevents_binary_mode() {
        let event = sample();
        let headers = headers(&event);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(h, _)| *h == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ce_specversion"), Some("1.0"));
        assert_eq!(get("ce_type"), Some("dev.chronicle.UserRegistered"));
        assert_eq!(
            get("ce_subject"),
            Some(event.stream_id.to_string().as_str())
        );
        assert_eq!(key(&event), event.stream_id.to_string());
    }

    #[test]
    fn a_message_without_its_headers_is_refused() {
        let error = decode(|_| None, b"{}").unwrap_err();
        assert!(matches!(error, BusDecodeError::MissingHeader(_)));
    }
}
