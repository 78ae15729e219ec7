//! The "read" schema: created from `schema/read_models.sql`, one generation at
//! a time. A generation records the hash of the DDL it was built with, so a
//! changed DDL is detected at start instead of failing queries later.

use chronicle_schema::migrations::READ_MODEL_DDL;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub const PROJECTION: &str = "read_models";
/// Held shared by every live batch and exclusively by a rebuild's swap.
pub const SWAP_LOCK_KEY: i64 = 0x5357_4150_5245_4144; // "SWAPREAD"
/// Serialises read-model bootstrap between projector instances.
const BOOTSTRAP_LOCK_KEY: i64 = 0x5245_4144_4d4f_444c; // "READMODL"

#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "the read models were built with another DDL (hash {built}, this build has {current}); \
         rebuild them with `projector replay`"
    )]
    Stale { built: String, current: String },
}

pub fn ddl_hash() -> String {
    Sha256::digest(READ_MODEL_DDL.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Creates the live read models if there are none; checks their DDL if there are.
pub async fn ensure(pool: &PgPool) -> Result<(), ReadModelError> {
    let mut transaction = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", BOOTSTRAP_LOCK_KEY)
        .execute(&mut *transaction)
        .await?;
    let built = sqlx::query_scalar!(
        "SELECT ddl_hash FROM projector.generations WHERE projection = $1",
        PROJECTION
    )
    .fetch_optional(&mut *transaction)
    .await?;
    let current = ddl_hash();
    match built {
        Some(built) if built == current => return Ok(()),
        Some(built) => return Err(ReadModelError::Stale { built, current }),
        None => {}
    }
    create_schema(&mut transaction, "read", &[READ_MODEL_DDL.to_owned()]).await?;
    sqlx::query!(
        "INSERT INTO projector.generations (projection, generation, ddl_hash) VALUES ($1, 1, $2)",
        PROJECTION,
        current
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    tracing::info!(ddl_hash = %ddl_hash(), "created the read models");
    Ok(())
}

/// The read-model DDL as its statements: the tables, and the secondary
/// indexes a rebuild creates after loading (bulk loads are faster without).
pub struct Ddl {
    pub tables: Vec<String>,
    pub indexes: Vec<String>,
}

impl Ddl {
    pub fn split() -> Ddl {
        let mut ddl = Ddl {
            tables: Vec::new(),
            indexes: Vec::new(),
        };
        for statement in without_comments().split(';') {
            let code = statement.trim();
            if code.is_empty() {
                continue;
            }
            let upper = code.to_uppercase();
            if upper.starts_with("CREATE INDEX") || upper.starts_with("CREATE UNIQUE INDEX") {
                ddl.indexes.push(code.to_owned());
            } else {
                ddl.tables.push(code.to_owned());
            }
        }
        ddl
    }
}

/// The DDL without its `--` comments (which may hold a `;`).
fn without_comments() -> String {
    READ_MODEL_DDL
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates `schema` (replacing any leftover of an earlier attempt) and runs
/// `statements` in it. The caller's search path is left as it was.
pub(crate) async fn create_schema(
    connection: &mut sqlx::PgConnection,
    schema: &str,
    statements: &[String],
) -> Result<(), sqlx::Error> {
    // Identifiers cannot be bound as parameters; `schema` is one of ours, never input.
    debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let previous: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&mut *connection)
        .await?;
    let statements = statements.join(";\n");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema}; {statements}"
    )))
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(previous)
        .execute(connection)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_splits_into_tables_then_indexes_and_loses_nothing() {
        let ddl = Ddl::split();
        assert!(
            ddl.tables
                .iter()
                .any(|statement| statement.starts_with("CREATE TABLE posts"))
        );
        assert!(
            ddl.indexes
                .iter()
                .all(|statement| statement.starts_with("CREATE INDEX"))
        );
        let statements = without_comments().matches(';').count();
        assert_eq!(ddl.tables.len() + ddl.indexes.len(), statements);
    }
}
