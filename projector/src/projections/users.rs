//! The user profile read model (`users`), and the author names copied into posts.

use chronicle_schema::RecordedEvent;
use chronicle_schema::events::UserEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{HandlerError, counts, expect_one};

pub async fn apply(
    connection: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &UserEvent,
) -> Result<(), HandlerError> {
    let id = recorded.stream_id;
    let at = recorded.recorded_at;
    let version = recorded.version;
    match event {
        UserEvent::Registered(registered) => {
            // Counts from whatever of theirs is already projected (other
            // partitions may have been faster).
            sqlx::query!(
                r#"INSERT INTO users (id, handle, display_name, email, role, active, post_count, comment_count,
                                      joined_at, updated_at, version)
                   VALUES ($1, $2, $3, $4, $5, TRUE,
                           (SELECT count(*) FROM posts WHERE author_id = $1 AND status = 'PUBLISHED' AND NOT deleted)::int,
                           (SELECT count(*) FROM comments WHERE author_id = $1 AND NOT deleted)::int,
                           $6, $6, $7)
                   ON CONFLICT (id) DO UPDATE
                     SET handle = EXCLUDED.handle, display_name = EXCLUDED.display_name,
                         email = EXCLUDED.email, role = EXCLUDED.role, joined_at = EXCLUDED.joined_at,
                         updated_at = EXCLUDED.updated_at, version = EXCLUDED.version"#,
                id,
                registered.handle,
                registered.display_name,
                registered.email,
                registered.role.as_str(),
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            rename_in_posts(connection, id, &registered.display_name).await?;
        }
        UserEvent::ProfileUpdated(profile) => {
            let updated = sqlx::query!(
                r#"UPDATE users SET display_name = $2, bio = $3, updated_at = $4, version = $5
                   WHERE id = $1"#,
                id,
                profile.display_name,
                profile.bio,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            expect_one(updated.rows_affected(), "user", recorded)?;
            rename_in_posts(connection, id, &profile.display_name).await?;
        }
        UserEvent::RoleChanged(changed) => {
            let updated = sqlx::query!(
                "UPDATE users SET role = $2, updated_at = $3, version = $4 WHERE id = $1",
                id,
                changed.role.as_str(),
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            expect_one(updated.rows_affected(), "user", recorded)?;
        }
        UserEvent::Deactivated(_) => {
            let updated = sqlx::query!(
                "UPDATE users SET active = FALSE, updated_at = $2, version = $3 WHERE id = $1",
                id,
                at,
                version
            )
            .execute(&mut *connection)
            .await?;
            expect_one(updated.rows_affected(), "user", recorded)?;
            // Their posts disappear from public view, and from the counts.
            let tags: Vec<String> = sqlx::query_scalar!(
                r#"WITH hidden AS (
                     UPDATE posts SET author_active = FALSE WHERE author_id = $1 RETURNING tags
                   )
                   SELECT DISTINCT UNNEST(tags) AS "tag!" FROM hidden"#,
                id
            )
            .fetch_all(&mut *connection)
            .await?;
            counts::user_post_count(connection, id).await?;
            counts::tags(connection, &tags).await?;
        }
    }
    Ok(())
}

/// A rename reaches every post view of theirs.
async fn rename_in_posts(
    connection: &mut PgConnection,
    user_id: Uuid,
    display_name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE posts SET author_display_name = $2 WHERE author_id = $1 AND author_display_name <> $2",
        user_id,
        display_name
    )
    .execute(connection)
    .await?;
    Ok(())
}
