//! User rows, as the read model defines them (`chronicle_schema::read_models::users`).

use chronicle_schema::Role;
use sqlx::PgPool;
use uuid::Uuid;

pub use chronicle_schema::read_models::users::{UserRow, by_ids};

pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    Ok(by_ids(pool, &[id]).await?.pop())
}

pub async fn by_handle(pool: &PgPool, handle: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, handle, display_name, bio, email, role AS "role: Role", active, post_count,
                  comment_count, joined_at, updated_at, version
           FROM users WHERE handle = lower($1)"#,
        handle
    )
    .fetch_optional(pool)
    .await
}
