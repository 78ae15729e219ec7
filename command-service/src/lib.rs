//! Chronicle's write side.
//!
//! A command arrives at the internal command API (`http`), the caller's token
//! is verified (`auth`), the aggregate is loaded from its stream
//! (`event_store`), decides (`aggregates`, pure), and its events are appended
//! with optimistic concurrency in one transaction with everything else the
//! command writes (`commands`). The outbox relay (`outbox`) publishes what is
//! committed to Kafka, in a safe order.

pub mod aggregates;
pub mod auth;
pub mod commands;
pub mod config;
pub mod error;
pub mod event_store;
pub mod http;
pub mod operator;
pub mod outbox;
pub mod privacy;
pub mod startup;
pub mod validation;

pub use config::Config;
pub use startup::Application;
