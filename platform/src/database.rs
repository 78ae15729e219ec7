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
            // No statement of a request may hang it; a rebuild uses its own connection.
            ("statement_timeout", "30s"),
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

/// Exports the pool's usage every few seconds as
/// `chronicle_db_pool_connections{pool, state}` (in_use, idle, max).
pub fn report_pool_usage(
    pool: PgPool,
    name: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let (size, idle) = (pool.size(), pool.num_idle() as u32);
            for (state, value) in [
                ("in_use", size.saturating_sub(idle)),
                ("idle", idle),
                ("max", pool.options().get_max_connections()),
            ] {
                metrics::gauge!("chronicle_db_pool_connections", "pool" => name, "state" => state)
                    .set(f64::from(value));
            }
        }
    });
}

/// Whether an error says the database cannot serve right now (rather than
/// that the statement is wrong): a lost or refused connection, a shutdown or
/// restart, exhausted resources, a lock or prerequisite not available. Such
/// errors are `UNAVAILABLE` to clients and retried by background work.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// SQLSTATE classes that describe the moment, not the statement: connection
/// exceptions (08), transaction rollbacks such as deadlocks (40), insufficient
/// resources (53), object not in prerequisite state, e.g. "not accepting
/// connections" or a lock timeout (55), operator intervention such as a
/// shutdown (57), system errors (58).
pub fn is_transient_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "55", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_bad_statements_are_not() {
        for code in ["08006", "57P01", "57P03", "55000", "53300", "40P01"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "22001", "42P01", "42601"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
