//! The post view (`posts`): one row per post with its author's handle and
//! name, tags, excerpt and comment count; and the counts posts drive.

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::PostEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{HandlerError, counts, expect_one};
use crate::markdown::excerpt;

pub async fn apply(
    connection: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &PostEvent,
) -> Result<(), HandlerError> {
    let id = recorded.stream_id;
    let at = recorded.recorded_at;
    let version = recorded.version;
    match event {
        PostEvent::Created(created) => {
            sqlx::query!(
                r#"INSERT INTO posts (id, slug, title, body, excerpt, status, tags, author_id, author_handle,
                                      author_display_name, author_active, comment_count, created_at,
                                      updated_at, version)
                   VALUES ($1, $2, $3, $4, $5, 'DRAFT', $6, $7, $8,
                           COALESCE((SELECT display_name FROM users WHERE id = $7), $8),
                           COALESCE((SELECT active FROM users WHERE id = $7), TRUE),
                           (SELECT count(*) FROM comments WHERE post_id = $1 AND NOT deleted)::int,
                           $9, $9, $10)
                   ON CONFLICT (id) DO UPDATE
                     SET slug = EXCLUDED.slug, title = EXCLUDED.title, body = EXCLUDED.body,
                         excerpt = EXCLUDED.excerpt, tags = EXCLUDED.tags, author_id = EXCLUDED.author_id,
                         author_handle = EXCLUDED.author_handle, created_at = EXCLUDED.created_at,
                         version = EXCLUDED.version"#,
                id,
                created.slug,
                created.title,
                created.body,
                excerpt(&created.body),
                &created.tags,
                created.author_id,
                created.author_handle,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
        }
        PostEvent::Edited(edited) => {
            let previous_tags = sqlx::query_scalar!("SELECT tags FROM posts WHERE id = $1", id)
                .fetch_optional(&mut *connection)
                .await?;
            let updated = sqlx::query!(
                r#"UPDATE posts SET title = $2, body = $3, excerpt = $4, tags = $5, updated_at = $6, version = $7
                   WHERE id = $1"#,
                id,
                edited.title,
                edited.body,
                excerpt(&edited.body),
                &edited.tags,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            expect_one(updated.rows_affected(), "post", recorded)?;
            let mut touched = previous_tags.unwrap_or_default();
            touched.extend(edited.tags.iter().cloned());
            counts::tags(connection, &touched).await?;
        }
        PostEvent::Published(_) => {
            let row = sqlx::query!(
                r#"UPDATE posts SET status = 'PUBLISHED', published_at = COALESCE(published_at, $2),
                                    updated_at = $2, version = $3
                   WHERE id = $1 RETURNING author_id, tags"#,
                id,
                at,
                version
            )
            .fetch_optional(&mut *connection)
            .await?;
            refresh_after_visibility_change(
                connection,
                recorded,
                row.map(|row| (row.author_id, row.tags)),
            )
            .await?;
        }
        PostEvent::Unpublished(_) => {
            let row = sqlx::query!(
                r#"UPDATE posts SET status = 'DRAFT', updated_at = $2, version = $3
                   WHERE id = $1 RETURNING author_id, tags"#,
                id,
                at,
                version
            )
            .fetch_optional(&mut *connection)
            .await?;
            refresh_after_visibility_change(
                connection,
                recorded,
                row.map(|row| (row.author_id, row.tags)),
            )
            .await?;
        }
        PostEvent::Deleted(_) => {
            let row = sqlx::query!(
                r#"UPDATE posts SET deleted = TRUE, updated_at = $2, version = $3
                   WHERE id = $1 RETURNING author_id, tags"#,
                id,
                at,
                version
            )
            .fetch_optional(&mut *connection)
            .await?;
            refresh_after_visibility_change(
                connection,
                recorded,
                row.map(|row| (row.author_id, row.tags)),
            )
            .await?;
        }
    }
    Ok(())
}

/// A post appearing or disappearing changes its author's and its tags' counts.
async fn refresh_after_visibility_change(
    connection: &mut PgConnection,
    recorded: &RecordedEvent,
    row: Option<(Uuid, Vec<String>)>,
) -> Result<(), HandlerError> {
    let Some((author_id, tags)) = row else {
        return expect_one(0, "post", recorded);
    };
    counts::user_post_count(connection, author_id).await?;
    counts::tags(connection, &tags).await?;
    Ok(())
}
