//! The Postgres pool every service uses, and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid DATABASE_URL: {0}")]
    InvalidUrl(sqlx::Error),
    #[error("could not connect to Postgres: {0}")]
    Connect(sqlx::Error),
    #[error("could not run migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before failing fast.
    pub acquire_timeout: Duration,
    /// Schemas searched for unqualified names (read models are unqualified).
    pub search_path: &'static str,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            search_path: "read",
        }
    }
}

/// Connects lazily: a service starts (and reports not-ready) while Postgres is
/// down, and recovers by itself once it is back.
pub fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, DatabaseError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DatabaseError::InvalidUrl)?
        // An abandoned transaction must not hold the outbox relay back forever:
        // the relay waits for every older transaction to end.
        .options([
            ("idle_in_transaction_session_timeout", "30s"),
            ("search_path", settings.search_path),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // Drop connections a restarted Postgres has closed before handing them out.
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// Runs the migrations on a connection of their own: sqlx keeps its
/// `_sqlx_migrations` table in the first schema of the search path, which for
/// the pools is "read" (and does not exist before the first migration).
pub async fn migrate(url: &str) -> Result<(), DatabaseError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DatabaseError::InvalidUrl)?
        .options([("search_path", "public")]);
    let mut connection = options.connect().await.map_err(DatabaseError::Connect)?;
    chronicle_schema::migrations::MIGRATOR
        .run_direct(None, &mut connection, false)
        .await?;
    let _ = connection.close().await;
    Ok(())
}

/// A dependency check for `/health/ready`.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(|_| ())
        .map_err(|error| format!("postgres: {error}"))
}
