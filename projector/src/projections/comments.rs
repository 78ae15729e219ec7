//! Comment threads (`comments`), and the counts comments drive.

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::CommentEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{HandlerError, counts, expect_one};

pub async fn apply(
    connection: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &CommentEvent,
) -> Result<(), HandlerError> {
    let id = recorded.stream_id;
    let at = recorded.recorded_at;
    let version = recorded.version;
    match event {
        CommentEvent::Added(added) => {
            sqlx::query!(
                r#"INSERT INTO comments (id, post_id, author_id, parent_id, body, reply_count, created_at, version)
                   VALUES ($1, $2, $3, $4, $5,
                           (SELECT count(*) FROM comments WHERE parent_id = $1 AND NOT deleted)::int, $6, $7)
                   ON CONFLICT (id) DO UPDATE
                     SET post_id = EXCLUDED.post_id, author_id = EXCLUDED.author_id,
                         parent_id = EXCLUDED.parent_id, body = EXCLUDED.body,
                         created_at = EXCLUDED.created_at, version = EXCLUDED.version"#,
                id,
                added.post_id,
                added.author_id,
                added.parent_id,
                added.body,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            refresh(connection, added.post_id, added.author_id, added.parent_id).await?;
        }
        CommentEvent::Edited(edited) => {
            let updated = sqlx::query!(
                "UPDATE comments SET body = $2, edited_at = $3, version = $4 WHERE id = $1",
                id,
                edited.body,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            expect_one(updated.rows_affected(), "comment", recorded)?;
        }
        CommentEvent::Deleted(_) => {
            let Some(row) = sqlx::query!(
                r#"UPDATE comments SET deleted = TRUE, body = '', version = $2
                   WHERE id = $1 RETURNING post_id, author_id, parent_id"#,
                id,
                version
            )
            .fetch_optional(&mut *connection)
            .await?
            else {
                return expect_one(0, "comment", recorded);
            };
            refresh(connection, row.post_id, row.author_id, row.parent_id).await?;
        }
    }
    Ok(())
}

async fn refresh(
    connection: &mut PgConnection,
    post_id: Uuid,
    author_id: Uuid,
    parent_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    counts::post_comment_count(connection, post_id).await?;
    counts::user_comment_count(connection, author_id).await?;
    if let Some(parent_id) = parent_id {
        counts::reply_count(connection, parent_id).await?;
    }
    Ok(())
}
