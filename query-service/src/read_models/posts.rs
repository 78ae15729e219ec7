use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PostRow {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub excerpt: String,
    pub status: String,
    pub deleted: bool,
    pub author_active: bool,
    pub tags: Vec<String>,
    pub author_id: Uuid,
    pub author_handle: String,
    pub author_display_name: String,
    pub comment_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub version: i32,
}

impl PostRow {
    /// What everyone may see: published, not deleted, by an active author.
    pub fn is_public(&self) -> bool {
        self.status == "PUBLISHED" && !self.deleted && self.author_active
    }
}

pub async fn by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"SELECT id, slug, title, body, excerpt, status, deleted, author_active, tags, author_id, author_handle,
                  author_display_name, comment_count, created_at, updated_at, published_at, version
           FROM posts WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await
}

pub async fn by_slug(pool: &PgPool, slug: &str) -> Result<Option<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"SELECT id, slug, title, body, excerpt, status, deleted, author_active, tags, author_id, author_handle,
                  author_display_name, comment_count, created_at, updated_at, published_at, version
           FROM posts WHERE slug = lower($1)"#,
        slug
    )
    .fetch_optional(pool)
    .await
}
