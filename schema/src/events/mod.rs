//! Events: what happened, in the past tense, as stored in the event store and
//! published on Kafka. Each event type has an explicit schema version; an older
//! stored payload is upcast to the current shape when read (see `upcast`).

mod comment;
pub mod fence;
mod post;
mod stored;
mod upcast;
mod user;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use comment::{CommentAdded, CommentDeleted, CommentEdited, CommentErased, CommentEvent};
pub use post::{
    PostCreated, PostDeleted, PostEdited, PostErased, PostEvent, PostImageAdded,
    PostImageProcessed, PostImageRejected, PostPublished, PostUnpublished,
};
pub use stored::{StoreCursor, StoredEventRow, read_committed, visible_horizon};

/// Lag (events not yet published or projected) is counted along an index up
/// to this many; more reads as this many. Counted to the end, a consumer far
/// behind (a new projector, a fresh search index) had Postgres scan the
/// whole store every second.
pub const LAG_COUNT_LIMIT: i64 = 10_000;
pub use user::{
    UserDeactivated, UserErased, UserEvent, UserProfileUpdated, UserRegistered, UserRoleChanged,
};

/// The kind of aggregate a stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    User,
    Post,
    Comment,
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::User => "user",
            StreamType::Post => "post",
            StreamType::Comment => "comment",
        }
    }

    pub fn parse(value: &str) -> Option<StreamType> {
        match value {
            "user" => Some(StreamType::User),
            "post" => Some(StreamType::Post),
            "comment" => Some(StreamType::Comment),
            _ => None,
        }
    }
}

/// Any event of the domain.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    User(UserEvent),
    Post(PostEvent),
    Comment(CommentEvent),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("{event_type} has schema version {found}, newer than this build knows ({known})")]
    FutureVersion {
        event_type: String,
        found: i16,
        known: i16,
    },
    #[error("{event_type} v{schema_version} payload does not match its schema: {source}")]
    Payload {
        event_type: String,
        schema_version: i16,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Sealed(#[from] crate::privacy::SealError),
}

/// Defines, per aggregate, the mapping between event variants, their stored
/// type names and their current schema versions, so the names are written once.
macro_rules! event_enum {
    ($enum_name:ident { $($variant:ident($payload:ident) = $name:literal, version $version:literal),+ $(,)? }) => {
        #[derive(Clone, Debug, PartialEq)]
        pub enum $enum_name {
            $($variant($payload)),+
        }

        impl $enum_name {
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name),+
                }
            }

            pub fn schema_version(&self) -> i16 {
                match self {
                    $(Self::$variant(_) => $version),+
                }
            }

            pub fn to_payload(&self) -> serde_json::Value {
                let value = match self {
                    $(Self::$variant(event) => serde_json::to_value(event)),+
                };
                value.expect("event payloads are plain data and always serialize")
            }

            /// Whether `event_type` is one of this aggregate's.
            pub(crate) fn handles(event_type: &str) -> bool {
                matches!(event_type, $($name)|+)
            }

            /// Decodes a payload already upcast to the current schema version,
            /// of a type this aggregate `handles`.
            pub(crate) fn from_current(
                event_type: &str,
                schema_version: i16,
                payload: serde_json::Value,
            ) -> Result<Self, $crate::events::DecodeError> {
                match event_type {
                    $($name => {
                        if schema_version > $version {
                            Err($crate::events::DecodeError::FutureVersion {
                                event_type: event_type.to_owned(),
                                found: schema_version,
                                known: $version,
                            })
                        } else {
                            serde_json::from_value(payload).map(Self::$variant).map_err(|source| {
                                $crate::events::DecodeError::Payload {
                                    event_type: event_type.to_owned(),
                                    schema_version,
                                    source,
                                }
                            })
                        }
                    })+
                    _ => Err($crate::events::DecodeError::UnknownType(event_type.to_owned())),
                }
            }
        }

        $(impl From<$payload> for $enum_name {
            fn from(event: $payload) -> Self {
                Self::$variant(event)
            }
        }

        impl From<$payload> for $crate::events::DomainEvent {
            fn from(event: $payload) -> Self {
                $enum_name::$variant(event).into()
            }
        })+
    };
}
pub(crate) use event_enum;

impl From<UserEvent> for DomainEvent {
    fn from(event: UserEvent) -> Self {
        DomainEvent::User(event)
    }
}

impl From<PostEvent> for DomainEvent {
    fn from(event: PostEvent) -> Self {
        DomainEvent::Post(event)
    }
}

impl From<CommentEvent> for DomainEvent {
    fn from(event: CommentEvent) -> Self {
        DomainEvent::Comment(event)
    }
}

impl DomainEvent {
    pub fn stream_type(&self) -> StreamType {
        match self {
            DomainEvent::User(_) => StreamType::User,
            DomainEvent::Post(_) => StreamType::Post,
            DomainEvent::Comment(_) => StreamType::Comment,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::User(event) => event.event_type(),
            DomainEvent::Post(event) => event.event_type(),
            DomainEvent::Comment(event) => event.event_type(),
        }
    }

    pub fn schema_version(&self) -> i16 {
        match self {
            DomainEvent::User(event) => event.schema_version(),
            DomainEvent::Post(event) => event.schema_version(),
            DomainEvent::Comment(event) => event.schema_version(),
        }
    }

    pub fn to_payload(&self) -> serde_json::Value {
        match self {
            DomainEvent::User(event) => event.to_payload(),
            DomainEvent::Post(event) => event.to_payload(),
            DomainEvent::Comment(event) => event.to_payload(),
        }
    }

    /// Reads a stored payload with its personal values opened by `keys`
    /// (blanks, and `Opened::Erased`, where their subject was erased).
    pub fn open(
        event_type: &str,
        schema_version: i16,
        mut payload: serde_json::Value,
        keys: &crate::privacy::Keyring,
    ) -> Result<(DomainEvent, crate::privacy::Opened), DecodeError> {
        let opened = crate::privacy::open(event_type, &mut payload, keys)?;
        Ok((
            DomainEvent::decode(event_type, schema_version, payload)?,
            opened,
        ))
    }

    /// Reads a plain stored event of any schema version as the current type.
    pub fn decode(
        event_type: &str,
        schema_version: i16,
        payload: serde_json::Value,
    ) -> Result<DomainEvent, DecodeError> {
        let (schema_version, payload) = upcast::to_current(event_type, schema_version, payload)?;
        // The type picks the aggregate first: a payload is moved into its
        // event, never copied (a post's body is most of a replay's bytes).
        if UserEvent::handles(event_type) {
            UserEvent::from_current(event_type, schema_version, payload).map(DomainEvent::User)
        } else if PostEvent::handles(event_type) {
            PostEvent::from_current(event_type, schema_version, payload).map(DomainEvent::Post)
        } else if CommentEvent::handles(event_type) {
            CommentEvent::from_current(event_type, schema_version, payload)
                .map(DomainEvent::Comment)
        } else {
            Err(DecodeError::UnknownType(event_type.to_owned()))
        }
    }
}

/// Who and what caused an event; stored beside it, published as Kafka headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor_id: Option<Uuid>,
    /// W3C trace context of the command that caused the event, when traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event as the event store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
    pub event: DomainEvent,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    /// Its personal values did not open: their subject was erased, and they
    /// read as blanks. Every read model forgets what such an event says.
    pub erased: bool,
}
