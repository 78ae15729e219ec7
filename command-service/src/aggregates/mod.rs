//! Aggregates: pure decision logic. A command method takes the current state
//! and answers the events to append, or a rejection; `apply` evolves the state
//! from an event. No I/O here, so every rule is unit-tested given/when/then.

pub mod comment;
pub mod post;
pub mod user;

use chronicle_schema::{DomainEvent, Role, StreamType};
use uuid::Uuid;

use crate::validation::FieldErrors;

pub use comment::Comment;
pub use post::Post;
pub use user::User;

/// A type whose state is rebuilt from the events of one stream.
pub trait Aggregate: Sized {
    const STREAM_TYPE: StreamType;
    type Event: Into<DomainEvent> + Clone;

    fn new(id: Uuid) -> Self;
    fn apply(&mut self, event: &Self::Event);
    /// The aggregate's own events out of any domain event (others are `None`).
    fn own_event(event: DomainEvent) -> Option<Self::Event>;
    /// Whether any event has created the aggregate yet.
    fn exists(&self) -> bool;
}

/// The signed-in user a command acts for, as the event store knows them now
/// (not as their token claims: a role change or deactivation applies at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub id: Uuid,
    pub role: Role,
    pub handle: String,
}

/// Why an aggregate refused a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("invalid input")]
    Invalid(FieldErrors),
}

impl Rejection {
    pub fn invalid(field: &str, message: &str) -> Rejection {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        Rejection::Invalid(errors)
    }
}

/// What a command decided: the events to append (possibly none: a no-op).
pub type Decision<E> = Result<Vec<E>, Rejection>;
