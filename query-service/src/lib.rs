//! Chronicle's public API.
//!
//! Queries read the read models (`read_models`) and never the event store.
//! Mutations map their input to a typed command, hand it with the caller's
//! token to the command-service (`command_client`), and read the result back
//! once the projections include it (`consistency`).

pub mod client;
pub mod command_client;
pub mod config;
pub mod consistency;
pub mod error;
pub mod export;
pub mod freshness;
pub mod graphql;
pub mod rate_limit;
pub mod read_models;
pub mod rest;
pub mod search;
pub mod sessions;
pub mod startup;

pub use config::Config;
pub use startup::Application;
