//! `tags`: how many public posts carry each tag; a tag no public post
//! carries is not listed.

use sqlx::PgConnection;

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TagRow {
    pub name: String,
    pub post_count: i32,
}

/// Recounts these tags from the public posts that carry them.
pub async fn recount(connection: &mut PgConnection, names: &[String]) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"WITH counted AS (
             SELECT tag.name,
                    (SELECT count(*) FROM posts WHERE tags @> ARRAY[tag.name] AND public)::int AS post_count
             FROM (SELECT DISTINCT name FROM UNNEST($1::text[]) AS names(name)) AS tag
           ), upserted AS (
             INSERT INTO tags (name, post_count)
             SELECT name, post_count FROM counted WHERE post_count > 0
             ON CONFLICT (name) DO UPDATE SET post_count = EXCLUDED.post_count
               WHERE tags.post_count <> EXCLUDED.post_count
           )
           DELETE FROM tags WHERE name IN (SELECT name FROM counted WHERE post_count = 0)"#,
        names
    )
    .execute(connection)
    .await?;
    Ok(())
}
