//! Before a swap: the rebuilt read models against the live ones, every
//! column of every row (`digest::TABLES`), where both stand at the same point.
//!
//! The live projector moves on while this runs, so the two differ where they
//! have applied different versions of a stream. Those streams are unsettled;
//! so is every row derived from one (its author's counts, its post's comment
//! count, its tags, the posts copying its author). Everything else must be
//! equal, or the swap is refused with the rows that differ. It reads in one
//! snapshot, shared by two connections, and writes nothing: it holds no
//! transaction id, and no lock that live batches take.

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
         all_users AS (
           SELECT id, handle FROM {next}.users UNION ALL SELECT id, handle FROM read.users
         ),
         all_posts AS (
           SELECT id, author_id, tags, slug FROM {next}.posts
           UNION ALL SELECT id, author_id, tags, slug FROM read.posts
         ),
         all_comments AS (
           SELECT id, post_id, author_id, parent_id FROM {next}.comments
           UNION ALL SELECT id, post_id, author_id, parent_id FROM read.comments
         ),
         excluded_users AS (
           SELECT id FROM unsettled
           UNION SELECT p.author_id FROM all_posts p JOIN unsettled u ON u.id = p.id
           UNION SELECT c.author_id FROM all_comments c JOIN unsettled u ON u.id = c.id
           -- A handle an unsettled user holds on either side: the row that
           -- gave it up (`users::release_handles`) changed with no version.
           UNION SELECT a.id FROM all_users a
                 JOIN all_users t ON t.handle = a.handle JOIN unsettled u ON u.id = t.id
         ),
         excluded_posts AS (
           SELECT id FROM unsettled
           UNION SELECT p.id FROM all_posts p JOIN unsettled u ON u.id = p.author_id
           UNION SELECT c.post_id FROM all_comments c JOIN unsettled u ON u.id = c.id
           -- Likewise a slug (`posts::release_slugs`).
           UNION SELECT a.id FROM all_posts a
                 JOIN all_posts t ON t.slug = a.slug JOIN unsettled u ON u.id = t.id
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

/// Tables compared on each of the two connections, about half the work
/// each (at 1.1M events: posts ~1.0 s, comments ~0.7 s, stream versions
/// ~0.5 s, users and tags little).
const SPLIT: [&[&str]; 2] = [
    &["posts", "users", "tags"],
    &["comments", "stream_versions"],
];

/// Refuses the swap when a settled row differs. The comparison runs on two
/// connections at once, in one snapshot (exported by the first, imported by
/// the second): each is one core's work.
pub async fn against_live(
    first: &mut PgConnection,
    second: &mut PgConnection,
    next: &str,
) -> Result<(), RebuildError> {
    debug_assert!(next.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    // A lock wait fails the check rather than hanging: the two transactions
    // hold their table locks until both statements end, so a DDL request
    // queued between them (another replica's rebuild or swap) would wait on
    // one while the other waits on it, and Postgres cannot see that cycle.
    const SETTINGS: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                            SET LOCAL lock_timeout = '10s'";
    let mut one = first.begin().await?;
    sqlx::raw_sql(SETTINGS).execute(&mut *one).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *one)
        .await?;
    // Checked, as it cannot be a parameter of SET TRANSACTION SNAPSHOT.
    if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(RebuildError::Snapshot(snapshot));
    }
    let mut two = second.begin().await?;
    sqlx::raw_sql(SETTINGS).execute(&mut *two).await?;
    // Before any query of the transaction, as Postgres requires.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET TRANSACTION SNAPSHOT '{snapshot}'"
    )))
    .execute(&mut *two)
    .await?;
    let (mine, theirs) = tokio::join!(
        differing(&mut one, next, SPLIT[0]),
        differing(&mut two, next, SPLIT[1])
    );
    let differing: Vec<(String, String)> = mine?.into_iter().chain(theirs?).collect();
    one.rollback().await?;
    two.rollback().await?;
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
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(RebuildError::Mismatch(mismatches.join("; ")))
    }
}

/// Up to five keys per table of `tables` whose settled rows differ.
async fn differing(
    connection: &mut PgConnection,
    next: &str,
    tables: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    // One statement per connection: the unsettled streams and the rows
    // derived from them are found once for its tables, not once per table.
    let comparisons: Vec<String> = TABLES
        .iter()
        .filter(|(table, _, _)| tables.contains(table))
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
                    -- once the excluded set outgrows work_mem. The key is
                    -- qualified: a bare `id` inside the subquery is x.id,
                    -- and the test would exclude every row.
                    AND NOT EXISTS (SELECT 1 FROM {excluded} x
                                    WHERE x.id = COALESCE(n.{key}, o.{key}))
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
    sqlx::query_as(sqlx::AssertSqlSafe(query))
        .fetch_all(connection)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_compared_on_exactly_one_connection() {
        for (table, _, _) in TABLES {
            let on = SPLIT.iter().filter(|tables| tables.contains(table)).count();
            assert_eq!(on, 1, "{table} is compared on {on} connections");
        }
    }
}
