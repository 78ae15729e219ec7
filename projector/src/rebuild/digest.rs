//! Digests of a read-model schema, table by table: a rebuild is verified
//! against the live read models, and tests compare replay with live.

use std::collections::BTreeMap;

use sqlx::PgConnection;

/// Every column that means something (not `applied_at`, when a row was written).
pub const TABLES: &[(&str, &str, &str)] = &[
    (
        "stream_versions",
        "stream_id, version, position",
        "stream_id",
    ),
    (
        "users",
        "id, handle, display_name, bio, email, role, active, post_count, comment_count, joined_at, updated_at, version",
        "id",
    ),
    (
        "posts",
        "id, slug, title, body, excerpt, status, deleted, author_active, tags, author_id, author_handle, \
         author_display_name, comment_count, created_at, updated_at, published_at, version, images",
        "id",
    ),
    (
        "comments",
        "id, post_id, author_id, parent_id, body, deleted, reply_count, created_at, edited_at, version",
        "id",
    ),
    ("tags", "name, post_count", "name"),
];

/// md5 over every row of every table of `schema`, in key order.
pub async fn read_models(
    connection: &mut PgConnection,
    schema: &str,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let mut digests = BTreeMap::new();
    for (table, columns, key) in TABLES {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT md5(coalesce(string_agg(row_text, E'\\n' ORDER BY sort_key), '')) \
             FROM (SELECT {key}::text AS sort_key, ROW({columns})::text AS row_text FROM {schema}.{table}) rows"
        )))
        .fetch_one(&mut *connection)
        .await?;
        digests.insert((*table).to_owned(), digest);
    }
    Ok(digests)
}
