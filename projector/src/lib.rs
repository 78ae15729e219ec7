//! Chronicle's projector.
//!
//! It consumes the event bus (`consumer`) and applies each batch of events to
//! the read models in one Postgres transaction (`apply`), skipping versions it
//! has applied, filling any hole from the event store, and setting aside
//! events the read models cannot take (`dead_letters`); `locks` keeps derived
//! columns right with any number of instances. The read models themselves
//! (rows, folds, SQL) are `chronicle_schema::read_models`; their DDL and
//! generations are managed by `read_models`.

pub mod admin;
pub mod apply;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letters;
pub mod locks;
pub mod read_models;
pub mod rebuild;
pub mod search;
pub mod startup;
pub mod status;

pub use config::Config;
pub use startup::Application;
