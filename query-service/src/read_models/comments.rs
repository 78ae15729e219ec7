use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CommentRow {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub body: String,
    pub deleted: bool,
    pub reply_count: i32,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub version: i32,
}

pub async fn by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<CommentRow>, sqlx::Error> {
    sqlx::query_as!(
        CommentRow,
        r#"SELECT id, post_id, author_id, parent_id, body, deleted, reply_count, created_at, edited_at, version
           FROM comments WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await
}
