//! Derived numbers, always recomputed from current rows (never incremented),
//! so applying an event twice or out of cross-stream order cannot skew them.

use sqlx::PgConnection;
use uuid::Uuid;

pub async fn user_post_count(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users SET post_count = (
             SELECT count(*) FROM posts
             WHERE author_id = $1 AND status = 'PUBLISHED' AND NOT deleted AND author_active
           ) WHERE id = $1"#,
        user_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn user_comment_count(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users SET comment_count = (
             SELECT count(*) FROM comments WHERE author_id = $1 AND NOT deleted
           ) WHERE id = $1"#,
        user_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Comments and replies that are not deleted.
pub async fn post_comment_count(
    connection: &mut PgConnection,
    post_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE posts SET comment_count = (
             SELECT count(*) FROM comments WHERE post_id = $1 AND NOT deleted
           ) WHERE id = $1"#,
        post_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn reply_count(
    connection: &mut PgConnection,
    comment_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE comments SET reply_count = (
             SELECT count(*) FROM comments WHERE parent_id = $1 AND NOT deleted
           ) WHERE id = $1"#,
        comment_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Visible posts per tag; a tag no visible post carries disappears.
pub async fn tags(connection: &mut PgConnection, names: &[String]) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"WITH counted AS (
             SELECT tag.name, (
               SELECT count(*) FROM posts
               WHERE tags @> ARRAY[tag.name] AND status = 'PUBLISHED' AND NOT deleted AND author_active
             )::int AS post_count
             FROM (SELECT DISTINCT name FROM UNNEST($1::text[]) AS names(name)) AS tag
           ), upserted AS (
             INSERT INTO tags (name, post_count)
             SELECT name, post_count FROM counted WHERE post_count > 0
             ON CONFLICT (name) DO UPDATE SET post_count = EXCLUDED.post_count
           )
           DELETE FROM tags WHERE name IN (SELECT name FROM counted WHERE post_count = 0)"#,
        names
    )
    .execute(connection)
    .await?;
    Ok(())
}
