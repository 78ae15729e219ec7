//! The consistency token: an opaque handle on one write that a query can wait for.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::events::StreamType;

/// "The projections include version `version` of stream `stream_id`." Every
/// projection records the last version it applied per stream, so waiting on a
/// token is one indexed read, whichever partition or node applied the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub stream_type: StreamType,
    pub stream_id: Uuid,
    pub version: i32,
}

const PREFIX: &str = "c1";

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = format!(
            "{PREFIX}:{}:{}:{}",
            self.stream_type.as_str(),
            self.stream_id,
            self.version
        );
        formatter.write_str(&URL_SAFE_NO_PAD.encode(raw))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the consistency token is malformed")]
pub struct MalformedToken;

impl FromStr for ConsistencyToken {
    type Err = MalformedToken;

    fn from_str(encoded: &str) -> Result<Self, Self::Err> {
        let raw = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| MalformedToken)?;
        let raw = String::from_utf8(raw).map_err(|_| MalformedToken)?;
        let mut parts = raw.split(':');
        let (Some(PREFIX), Some(stream_type), Some(stream_id), Some(version), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(MalformedToken);
        };
        Ok(ConsistencyToken {
            stream_type: StreamType::parse(stream_type).ok_or(MalformedToken)?,
            stream_id: stream_id.parse().map_err(|_| MalformedToken)?,
            version: version
                .parse()
                .ok()
                .filter(|version| *version > 0)
                .ok_or(MalformedToken)?,
        })
    }
}

impl Serialize for ConsistencyToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConsistencyToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        encoded.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_token_survives_its_text_form(id in any::<u128>(), version in 1..i32::MAX) {
            let token = ConsistencyToken {
                stream_type: StreamType::Post,
                stream_id: Uuid::from_u128(id),
                version,
            };
            prop_assert_eq!(token.to_string().parse::<ConsistencyToken>(), Ok(token));
        }

        #[test]
        fn arbitrary_text_is_refused_or_parsed_never_a_panic(text in ".{0,80}") {
            let _ = text.parse::<ConsistencyToken>();
        }
    }
}
