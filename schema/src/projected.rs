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
    /// The read-model rows the batch wrote, so in-memory copies are dropped
    /// per row; `None` when any row may have changed (a rebuild's swap, or an
    /// announcement from a projector that does not say).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Touched>,
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

/// Rows written by one batch: derived ones included (a comment recounts its
/// post, a rename rewrites every post of the author).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Touched {
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub posts: Vec<Uuid>,
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Uuid>,
    /// Every post of these authors.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<Uuid>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.posts.is_empty() && self.users.is_empty() && self.authors.is_empty()
    }

    fn len(&self) -> usize {
        self.posts.len() + self.users.len() + self.authors.len()
    }

    fn list(&mut self, list: List) -> &mut Vec<Uuid> {
        match list {
            List::Posts => &mut self.posts,
            List::Users => &mut self.users,
            List::Authors => &mut self.authors,
        }
    }
}

#[derive(Clone, Copy)]
enum List {
    Posts,
    Users,
    Authors,
}

impl Projected {
    /// Splits the announcement into payloads Postgres accepts.
    pub fn into_payloads(self) -> Vec<String> {
        // Generous sizes of one serialised entry.
        const EVENT_BYTES: usize = 120;
        const ID_BYTES: usize = 40;
        let per_payload = MAX_PAYLOAD_BYTES - 100;
        let empty = |rows: &Option<Touched>| Projected {
            projection: self.projection.clone(),
            events: Vec::new(),
            rows: rows.as_ref().map(|_| Touched::default()),
        };
        let size = |chunk: &Projected| {
            chunk.events.len() * EVENT_BYTES
                + chunk.rows.as_ref().map_or(0, Touched::len) * ID_BYTES
        };
        let mut payloads = Vec::new();
        let mut chunk = empty(&self.rows);
        let flush = |chunk: &mut Projected, payloads: &mut Vec<String>, force: bool| {
            if force || size(chunk) + EVENT_BYTES > per_payload {
                payloads.push(serde_json::to_string(&*chunk).expect("plain data serialises"));
                *chunk = empty(&self.rows);
            }
        };
        // Rows first: a listener drops them from its cache before it hands
        // the events on (a subscriber resolving a post must not meet the
        // row as it was before the batch).
        if let Some(rows) = &self.rows {
            let lists = [
                (List::Posts, &rows.posts),
                (List::Users, &rows.users),
                (List::Authors, &rows.authors),
            ];
            for (list, ids) in lists {
                for id in ids {
                    let part = chunk.rows.as_mut().expect("rows are announced");
                    part.list(list).push(*id);
                    flush(&mut chunk, &mut payloads, false);
                }
            }
        }
        for event in self.events.iter().cloned() {
            chunk.events.push(event);
            flush(&mut chunk, &mut payloads, false);
        }
        let pending =
            !chunk.events.is_empty() || chunk.rows.as_ref().is_some_and(|rows| !rows.is_empty());
        if pending || payloads.is_empty() {
            flush(&mut chunk, &mut payloads, true);
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
        let rows = Touched {
            posts: (0..300).map(|_| Uuid::now_v7()).collect(),
            users: (0..300).map(|_| Uuid::now_v7()).collect(),
            authors: vec![Uuid::now_v7()],
        };
        let payloads = Projected {
            projection: "read_models".into(),
            events,
            rows: Some(rows.clone()),
        }
        .into_payloads();
        assert!(payloads.len() > 1);
        let mut total = 0;
        let mut reassembled = Touched::default();
        for payload in payloads {
            assert!(payload.len() < MAX_PAYLOAD_BYTES, "{}", payload.len());
            let projected = serde_json::from_str::<Projected>(&payload).unwrap();
            let part = projected.rows.expect("every part says which rows");
            // Every row is named before any event is handed on.
            assert!(
                total == 0 || part.is_empty(),
                "rows named after events were announced"
            );
            total += projected.events.len();
            reassembled.posts.extend(part.posts);
            reassembled.users.extend(part.users);
            reassembled.authors.extend(part.authors);
        }
        assert_eq!(total, 1000);
        assert_eq!(reassembled, rows);
    }

    #[test]
    fn an_announcement_that_names_no_rows_means_any_row_may_have_changed() {
        let payloads = Projected {
            projection: "read_models".into(),
            events: Vec::new(),
            rows: None,
        }
        .into_payloads();
        assert_eq!(payloads.len(), 1);
        let projected = serde_json::from_str::<Projected>(&payloads[0]).unwrap();
        assert_eq!(projected.rows, None);
        // As an older projector announced.
        let old: Projected = serde_json::from_str(r#"{"p":"read_models","e":[]}"#).unwrap();
        assert_eq!(old.rows, None);
    }
}
