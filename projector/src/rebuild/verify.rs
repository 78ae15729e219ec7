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
    // One statement: the unsettled streams and the rows derived from them
    // are found once, not once per table.
    let comparisons: Vec<String> = TABLES
        .iter()
        .map(|(table, columns, key)| {
            let excluded = match *table {
                "users" => "excluded_users",
                "posts" => "excluded_posts",
                "comments" => "excluded_comments",
                "tags" => "excluded_tags",
                _ => "unsettled",
            };
            // Rows compared as records on their native keys: no text
            // rendering, no hashing (an md5 of each row's text took most of
            // the 17 s this check took at 1.1M events).
            let compared = |side: &str| {
                columns
                    .split(", ")
                    .map(|column| format!("{side}.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "(SELECT '{table}' AS table_name, {key}::text AS key
                  FROM {next}.{table} n FULL JOIN read.{table} o USING ({key})
                  WHERE ROW({new}) IS DISTINCT FROM ROW({old})
                    -- An anti-join (hashed), not NOT IN: that turns quadratic
                    -- once the excluded set outgrows work_mem.
                    AND NOT EXISTS (SELECT 1 FROM {excluded} x WHERE x.id = {key})
                  LIMIT 5)",
                new = compared("n"),
                old = compared("o"),
            )
        })
        .collect();
    let query = format!(
        "WITH {unsettled} {comparisons}",
        unsettled = unsettled(next),
        comparisons = comparisons.join(" UNION ALL ")
    );
    let differing: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .fetch_all(&mut *snapshot)
        .await?;
    let mismatches: Vec<String> = TABLES
        .iter()
        .filter_map(|(table, _, _)| {
            let keys: Vec<&str> = differing
                .iter()
                .filter(|(name, _)| name == table)
                .map(|(_, key)| key.as_str())
                .collect();
            (!keys.is_empty()).then(|| format!("{table} {keys:?}"))
        })
        .collect();
    snapshot.rollback().await?;
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(RebuildError::Mismatch(mismatches.join("; ")))
    }
}
