//! How an event travels on Kafka: the CloudEvents Kafka protocol binding in
//! binary mode. The message value is the event payload (JSON), the key is the
//! stream id (so one stream stays in one partition, in order), and every
//! attribute is a header, so any consumer can read the bus without Chronicle.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::events::{
    DecodeError, DomainEvent, EventMetadata, RecordedEvent, StoredEventRow, StreamType,
};
use crate::privacy::{Keyring, Opened};

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

/// One message for the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The stream id: one stream stays in one partition, in order.
    pub key: String,
    /// The payload as stored, at the schema version it was written with.
    pub value: Vec<u8>,
    /// In a stable order.
    pub headers: Vec<(&'static str, String)>,
}

impl Message {
    /// The message for a stored event, read from its columns alone: the relay
    /// publishes what is stored without needing to understand it (an event of
    /// a newer schema, written by a newer instance mid-deploy, passes too);
    /// consumers upcast or set aside what they cannot read.
    pub fn from_row(row: &StoredEventRow) -> Message {
        let traceparent = row
            .metadata
            .get("traceparent")
            .and_then(|value| value.as_str())
            .map(str::to_owned);
        let mut headers = vec![
            (CE_SPECVERSION, "1.0".to_owned()),
            (CE_ID, row.event_id.to_string()),
            (CE_TYPE, format!("{TYPE_PREFIX}{}", row.event_type)),
            (CE_SOURCE, SOURCE.to_owned()),
            (CE_SUBJECT, row.stream_id.to_string()),
            (
                CE_TIME,
                row.recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            (CONTENT_TYPE, "application/json".to_owned()),
            (CE_SCHEMA_VERSION, row.schema_version.to_string()),
            (CE_STREAM_TYPE, row.stream_type.clone()),
            (CE_STREAM_VERSION, row.version.to_string()),
            (CE_POSITION, row.position.to_string()),
            (CE_COMMAND_ID, row.command_id.to_string()),
            (CE_CORRELATION_ID, row.correlation_id.to_string()),
            (CE_CAUSATION_ID, row.causation_id.to_string()),
        ];
        if let Some(actor_id) = row.actor_id {
            headers.push((CE_ACTOR_ID, actor_id.to_string()));
        }
        if let Some(traceparent) = traceparent {
            headers.push((TRACEPARENT, traceparent));
        }
        Message {
            key: row.stream_id.to_string(),
            value: serde_json::to_vec(&row.payload).expect("stored JSON always serializes"),
            headers,
        }
    }
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

/// Which event a message carries, from its headers alone: enough to set it
/// aside and move its stream on even when this build cannot read its payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
    pub position: i64,
    pub event_type: String,
    pub schema_version: i16,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// Reads a message's headers; `header` looks a header up by name.
pub fn decode_envelope<'a>(
    header: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Envelope, BusDecodeError> {
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
    let actor_id = match header(CE_ACTOR_ID) {
        Some(_) => Some(uuid(CE_ACTOR_ID)?),
        None => None,
    };
    let traceparent = match header(TRACEPARENT) {
        Some(_) => Some(text(TRACEPARENT)?.to_owned()),
        None => None,
    };
    Ok(Envelope {
        event_id: uuid(CE_ID)?,
        stream_id: uuid(CE_SUBJECT)?,
        stream_type,
        version: parse(CE_STREAM_VERSION, text(CE_STREAM_VERSION)?)?,
        position: parse(CE_POSITION, text(CE_POSITION)?)?,
        event_type: event_type.to_owned(),
        schema_version: parse(CE_SCHEMA_VERSION, text(CE_SCHEMA_VERSION)?)?,
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

impl Envelope {
    /// The event, if this build can read its payload (upcast to the current
    /// schema version), its personal values opened with `keys`.
    pub fn open(self, payload: &[u8], keys: &Keyring) -> Result<RecordedEvent, BusDecodeError> {
        let payload = serde_json::from_slice(payload).map_err(BusDecodeError::Payload)?;
        self.open_value(payload, keys)
    }

    /// As `open`, for a payload already parsed (to find whose keys it needs:
    /// `privacy::subjects`).
    pub fn open_value(
        self,
        payload: serde_json::Value,
        keys: &Keyring,
    ) -> Result<RecordedEvent, BusDecodeError> {
        let (event, opened) =
            DomainEvent::open(&self.event_type, self.schema_version, payload, keys)?;
        Ok(RecordedEvent {
            position: self.position,
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_type: self.stream_type,
            version: self.version,
            event,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
            erased: opened == Opened::Erased,
        })
    }
}

/// Rebuilds the recorded event from a message; `header` looks a header up by name.
pub fn decode<'a>(
    header: impl Fn(&str) -> Option<&'a [u8]>,
    payload: &[u8],
    keys: &Keyring,
) -> Result<RecordedEvent, BusDecodeError> {
    decode_envelope(header)?.open(payload, keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> StoredEventRow {
        StoredEventRow {
            position: 42,
            event_id: Uuid::now_v7(),
            stream_id: Uuid::now_v7(),
            stream_type: "user".into(),
            version: 1,
            event_type: "UserRegistered".into(),
            schema_version: 1,
            payload: json!({"email": "ada@example.com", "handle": "ada", "displayName": "Ada", "role": "USER"}),
            command_id: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            actor_id: None,
            metadata: json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
            // Microsecond precision, as Postgres stores it.
            recorded_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
        }
    }

    fn lookup<'a>(message: &'a Message, name: &str) -> Option<&'a [u8]> {
        message
            .headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.as_bytes())
    }

    #[test]
    fn an_event_survives_the_bus() {
        let row = sample();
        let message = Message::from_row(&row);
        let keys = Keyring::none();
        let decoded = decode(|name| lookup(&message, name), &message.value, &keys).unwrap();
        assert_eq!(decoded, RecordedEvent::open(row, &keys).unwrap());
    }

    #[test]
    fn the_headers_follow_the_cloudevents_binary_mode() {
        let row = sample();
        let message = Message::from_row(&row);
        let get =
            |name: &str| lookup(&message, name).map(|value| std::str::from_utf8(value).unwrap());
        assert_eq!(get("ce_specversion"), Some("1.0"));
        assert_eq!(get("ce_type"), Some("dev.chronicle.UserRegistered"));
        assert_eq!(get("ce_subject"), Some(row.stream_id.to_string().as_str()));
        assert_eq!(message.key, row.stream_id.to_string());
    }

    #[test]
    fn an_event_this_build_cannot_read_still_names_its_stream() {
        let mut row = sample();
        row.schema_version = 9;
        let message = Message::from_row(&row);
        let envelope = decode_envelope(|name| lookup(&message, name)).unwrap();
        assert_eq!((envelope.stream_id, envelope.version), (row.stream_id, 1));
        assert!(matches!(
            envelope.open(&message.value, &Keyring::none()),
            Err(BusDecodeError::Event(DecodeError::FutureVersion { .. }))
        ));
    }

    #[test]
    fn a_message_without_its_headers_is_refused() {
        let error = decode(|_| None, b"{}", &Keyring::none()).unwrap_err();
        assert!(matches!(error, BusDecodeError::MissingHeader(_)));
    }
}
