//! What the projector announces after each committed batch, on the Postgres
//! channel `chronicle_projected`: query-service wakes consistency-token waiters
//! and feeds subscriptions from it, instead of polling.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const CHANNEL: &str = "chronicle_projected";

/// Postgres refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD_BYTES: usize = 7_500;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Projected {
    /// Which projection applied these: "read_models" or "search".
    #[serde(rename = "p")]
    pub projection: String,
    #[serde(rename = "e")]
    pub events: Vec<AppliedEvent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedEvent {
    #[serde(rename = "t")]
    pub event_type: String,
    #[serde(rename = "s")]
    pub stream_id: Uuid,
    #[serde(rename = "v")]
    pub version: i32,
}

impl Projected {
    /// Splits the announcement into payloads Postgres accepts.
    pub fn into_payloads(self) -> Vec<String> {
        let mut payloads = Vec::new();
        let mut chunk = Projected {
            projection: self.projection.clone(),
            events: Vec::new(),
        };
        // An applied event serialises to well under 120 bytes.
        let per_chunk = MAX_PAYLOAD_BYTES / 120;
        for event in self.events {
            chunk.events.push(event);
            if chunk.events.len() == per_chunk {
                payloads.push(serde_json::to_string(&chunk).expect("plain data serialises"));
                chunk.events.clear();
            }
        }
        if !chunk.events.is_empty() || payloads.is_empty() {
            payloads.push(serde_json::to_string(&chunk).expect("plain data serialises"));
        }
        payloads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_announcements_split_into_payloads_postgres_accepts() {
        let events = (0..1000)
            .map(|version| AppliedEvent {
                event_type: "CommentAdded".into(),
                stream_id: Uuid::now_v7(),
                version,
            })
            .collect();
        let payloads = Projected {
            projection: "read_models".into(),
            events,
        }
        .into_payloads();
        assert!(payloads.len() > 1);
        let mut total = 0;
        for payload in payloads {
            assert!(payload.len() < MAX_PAYLOAD_BYTES, "{}", payload.len());
            total += serde_json::from_str::<Projected>(&payload)
                .unwrap()
                .events
                .len();
        }
        assert_eq!(total, 1000);
    }
}
