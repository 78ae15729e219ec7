//! SQL migrations (event store, auth, projector bookkeeping) and the read-model
//! DDL, which the projector applies per generation rather than as a migration.

use sqlx::migrate::Migrator;

/// Every service runs these at start; sqlx serialises concurrent runs with an
/// advisory lock, so the services may start in any order.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The read models, unqualified: run with `search_path` set to the schema being built.
pub const READ_MODEL_DDL: &str = include_str!("../read_models.sql");
