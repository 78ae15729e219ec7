//! A fresh database per test, cloned from a template that is migrated once
//! per schema version (crates.io's test-db approach), dropped afterwards.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chronicle_schema::migrations::{MIGRATOR, READ_MODEL_DDL};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

const LOCAL_URL: &str = "postgres://chronicle:chronicle@127.0.0.1:5432/chronicle";
const TEMPLATE_LOCK: i64 = 0x5445_5354_5450_4c54; // "TESTTPLT"
/// Databases of crashed runs older than this are dropped.
const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| LOCAL_URL.to_owned())
}

fn options_for(database: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&server_url())
        .expect("DATABASE_URL is a valid Postgres URL")
        .database(database)
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let template = ensure_template().await;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "chronicle_t_{created}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = admin_connection().await;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#
            )))
            .await
            .expect("create the test database from the template");
        let _ = admin.close().await;
        let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        TestDatabase {
            name,
            url: url.to_string(),
        }
    }

    /// A pool on this database with the services' search path.
    pub fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(20)
            .connect_lazy_with(options_for(&self.name).options([("search_path", "read")]))
    }

    pub async fn drop_now(name: &str) {
        let mut admin = admin_connection().await;
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .await;
        let _ = admin.close().await;
    }
}

async fn admin_connection() -> PgConnection {
    let url = server_url();
    let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a valid Postgres URL");
    options.connect().await.unwrap_or_else(|error| {
        panic!(
            "cannot connect to Postgres at DATABASE_URL ({error}); run the tests with ./dev test"
        )
    })
}

/// The template's name changes whenever a migration or the read-model DDL does.
fn template_name() -> String {
    let mut hasher = Sha256::new();
    for migration in MIGRATOR.iter() {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(&*migration.checksum);
    }
    hasher.update(READ_MODEL_DDL.as_bytes());
    let digest: String = hasher
        .finalize()
        .iter()
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("chronicle_tpl_{digest}")
}

async fn ensure_template() -> String {
    let template = template_name();
    let mut admin = admin_connection().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .expect("take the template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .expect("look for the template");
    if !exists {
        drop_stale_databases(&mut admin).await;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{template}""#
            )))
            .await
            .expect("create the template database");
        let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{template}"));
        chronicle_platform::database::migrate(url.as_str())
            .await
            .expect("migrate the template");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options_for(&template).options([("search_path", "read")]))
            .await
            .expect("connect to the template");
        projector::read_models::ensure(&pool)
            .await
            .expect("create the read models in the template");
        pool.close().await;
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .expect("release the template lock");
    let _ = admin.close().await;
    template
}

/// Old templates and databases left by crashed runs.
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'chronicle_t\\_%' OR datname LIKE 'chronicle_tpl\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for name in names {
        let created = name
            .strip_prefix("chronicle_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok());
        let stale = match created {
            Some(created) => now.saturating_sub(created) > STALE_AFTER.as_secs(),
            None => true, // an older template: this run makes the current one
        };
        if stale {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .await;
        }
    }
}

/// Makes a database look restarted to its clients: their sessions are
/// terminated and new ones refused, until `end` (as while Postgres is down).
pub async fn begin_outage(name: &str) {
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
    )))
    .execute(&mut admin)
    .await
    .expect("refuse connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(name)
        .execute(&mut admin)
        .await
        .expect("terminate the sessions");
    let _ = admin.close().await;
}

pub async fn end_outage(name: &str) {
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
    )))
    .execute(&mut admin)
    .await
    .expect("allow connections");
    let _ = admin.close().await;
}
