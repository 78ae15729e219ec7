//! Before a swap: the rebuilt read models against the live ones, every
//! column of every row (`digest::TABLES`), where both stand at the same point.
//!
//! The live projector moves on while this runs, so the two differ where they
//! have applied different versions of a stream. Those streams are unsettled;
//! so is every row derived from one (its author's counts, its post's comment
//! count, its tags, the posts copying its author). Everything else must be
//! equal, or the swap is refused with the rows that differ. It reads in one
//! snapshot and writes nothing: it holds no transaction id and no lock.

use sqlx::{Connection, PgConnection};

use super::RebuildError;
use super::digest::TABLES;

/// Streams whose applied versions differ, and the rows derived from them,
/// per table: a CTE for each comparison.
fn unsettled(next: &str) -> String {
    format!(
        "unsettled AS (
           SELECT stream_id AS id FROM {next}.stream_versions n
           FULL JOIN read.stream_versions o USING (stream_id)
           WHERE n.version IS DISTINCT FROM o.version
         ),
         all_posts AS (
           SELECT id, author_id, tags FROM {next}.posts UNION ALL SELECT id, author_id, tags FROM read.posts
         ),
         all_comments AS (
           SELECT id, post_id, author_id, parent_id FROM {next}.comments
           UNION ALL SELECT id, post_id, author_id, parent_id FROM read.comments
         ),
         excluded_users AS (
           SELECT id FROM unsettled
           UNION SELECT p.author_id FROM all_posts p JOIN unsettled u ON u.id = p.id
           UNION SELECT c.author_id FROM all_comments c JOIN unsettled u ON u.id = c.id
         ),
         excluded_posts AS (
           SELECT id FROM unsettled
           UNION SELECT p.id FROM all_posts p JOIN unsettled u ON u.id = p.author_id
           UNION SELECT c.post_id FROM all_comments c JOIN unsettled u ON u.id = c.id
         ),
         excluded_comments AS (
           SELECT id FROM unsettled
           UNION SELECT c.parent_id FROM all_comments c JOIN unsettled u ON u.id = c.id
           WHERE c.parent_id IS NOT NULL
         ),
         excluded_tags AS (
           SELECT UNNEST(p.tags) AS id FROM all_posts p JOIN unsettled u ON u.id = p.id
           UNION SELECT UNNEST(p.tags) FROM all_posts p JOIN unsettled u ON u.id = p.author_id
         )"
    )
}

/// Refuses the swap when a settled row differs.
pub async fn against_live(connection: &mut PgConnection, next: &str) -> Result<(), RebuildError> {
    debug_assert!(next.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let mut snapshot = connection.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let mut mismatches = Vec::new();
    for (table, columns, key) in TABLES {
        let excluded = match *table {
            "users" => "excluded_users",
            "posts" => "excluded_posts",
            "comments" => "excluded_comments",
            "tags" => "excluded_tags",
            _ => "unsettled",
        };
        let query = format!(
            "WITH {unsettled},
             n AS (SELECT {key}::text AS key, md5(ROW({columns})::text) AS digest FROM {next}.{table}),
             o AS (SELECT {key}::text AS key, md5(ROW({columns})::text) AS digest FROM read.{table})
             SELECT key FROM n FULL JOIN o USING (key)
             WHERE n.digest IS DISTINCT FROM o.digest
               -- An anti-join (hashed), not NOT IN: that turns quadratic once
               -- the excluded set outgrows work_mem.
               AND NOT EXISTS (SELECT 1 FROM {excluded} x WHERE x.id::text = key)
             LIMIT 5",
            unsettled = unsettled(next)
        );
        let keys: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .fetch_all(&mut *snapshot)
            .await?;
        if !keys.is_empty() {
            mismatches.push(format!("{table} {keys:?}"));
        }
    }
    snapshot.rollback().await?;
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(RebuildError::Mismatch(mismatches.join("; ")))
    }
}
