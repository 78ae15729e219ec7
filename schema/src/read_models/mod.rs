//! The read models, each written once: its row, its status values, its
//! columns, the pure fold of its stream's events into the row, and its SQL.
//! The projector's live path and its rebuild drive the same folds, and
//! query-service reads the same rows.
//!
//! A row's own columns come from its stream alone (`fold`). Its derived
//! columns come from other rows: counts, and the author's name and standing
//! copied onto posts. Their rules are stated once per module, in Rust for the
//! rebuild (which counts in memory as it streams the store) and in SQL for the
//! live path (which recounts the rows a batch touched); a property test runs
//! random histories through both and compares every column.

pub mod comments;
pub mod posts;
pub mod tags;
pub mod users;

/// Why an event cannot be folded into its row: it contradicts its stream
/// (an edit of a post that was never created). Such an event is set aside as
/// a dead letter and its stream moves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type} for {what} {id} which the read model does not have")]
pub struct FoldError {
    pub event_type: &'static str,
    pub what: &'static str,
    pub id: uuid::Uuid,
}

/// What an erased row holds in place of a unique value (a handle, a slug):
/// its own id, after a `~` no handle or slug can start with. The SQL of
/// `users::release_handles` and `posts::release_slugs` spells the same.
pub fn erased_placeholder(id: uuid::Uuid) -> String {
    format!("~{}", id.simple())
}

/// Rows of a table in the order of their keys, for one statement.
pub(crate) fn column<T, V>(rows: &[&T], value: impl Fn(&T) -> V) -> Vec<V> {
    rows.iter().map(|row| value(row)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::DateTime;
    use uuid::Uuid;

    use crate::{DomainEvent, EventMetadata, RecordedEvent};

    /// `event` as version `version` of stream `id`, a second per version apart.
    pub fn recorded(id: Uuid, version: i32, event: DomainEvent) -> RecordedEvent {
        RecordedEvent {
            position: i64::from(version),
            event_id: Uuid::now_v7(),
            stream_id: id,
            stream_type: event.stream_type(),
            version,
            event,
            metadata: EventMetadata {
                command_id: Uuid::nil(),
                correlation_id: Uuid::nil(),
                causation_id: Uuid::nil(),
                actor_id: None,
                traceparent: None,
            },
            recorded_at: DateTime::from_timestamp(1_700_000_000 + i64::from(version), 0)
                .expect("a valid time"),
            erased: false,
        }
    }
}
