//! GraphQL object types, each over a read-model row.

mod user;

pub use user::User;
