//! Event handlers, one module per read model's source stream. Every handler
//! writes current state (never increments), so applying an event twice, or
//! events of different streams in any order, converges on the same rows.

mod comments;
mod counts;
mod posts;
mod users;

use chronicle_schema::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event contradicts the read model (e.g. an edit of an unknown post).
    #[error("{0}")]
    Inconsistent(String),
}

impl HandlerError {
    /// A poison event fails for what it is and would fail again; it is set
    /// aside. Only failures known to pass (a lost connection, a shutdown, a
    /// deadlock) are retried, so a handler bug never stalls a partition.
    pub fn is_poison(&self) -> bool {
        match self {
            HandlerError::Inconsistent(_) => true,
            HandlerError::Database(sqlx::Error::Database(error)) => !error
                .code()
                .is_some_and(|code| chronicle_platform::database::is_transient_sqlstate(&code)),
            HandlerError::Database(_) => false,
        }
    }
}

/// Applies one event to every read model it touches.
pub async fn apply(
    connection: &mut PgConnection,
    recorded: &RecordedEvent,
) -> Result<(), HandlerError> {
    match &recorded.event {
        DomainEvent::User(event) => users::apply(connection, recorded, event).await,
        DomainEvent::Post(event) => posts::apply(connection, recorded, event).await,
        DomainEvent::Comment(event) => comments::apply(connection, recorded, event).await,
    }
}

/// Fails unless exactly one row of the entity was there to update.
fn expect_one(rows: u64, what: &str, recorded: &RecordedEvent) -> Result<(), HandlerError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(HandlerError::Inconsistent(format!(
            "{} for {what} {} which the read model does not have",
            recorded.event.event_type(),
            recorded.stream_id
        )))
    }
}
