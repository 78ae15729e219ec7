use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub bio: Option<String>,
    pub email: String,
    pub role: String,
    pub active: bool,
    pub post_count: i32,
    pub comment_count: i32,
    pub joined_at: DateTime<Utc>,
    pub version: i32,
}

pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, handle, display_name, bio, email, role, active, post_count, comment_count,
                  joined_at, version
           FROM users WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

pub async fn by_handle(pool: &PgPool, handle: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, handle, display_name, bio, email, role, active, post_count, comment_count,
                  joined_at, version
           FROM users WHERE handle = lower($1)"#,
        handle
    )
    .fetch_optional(pool)
    .await
}

pub async fn by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, handle, display_name, bio, email, role, active, post_count, comment_count,
                  joined_at, version
           FROM users WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await
}
