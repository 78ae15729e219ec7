//! Batched loading: every `author`, `post` or `parent` field resolved in one
//! request is gathered into one `WHERE id = ANY(...)` query per type.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::dataloader::{DataLoader, Loader};
use sqlx::PgPool;
use uuid::Uuid;

use crate::read_models::cache::RowCache;
use crate::read_models::comments::{self, CommentRow};
use crate::read_models::posts::{self, PostRow};
use crate::read_models::users::{self, UserRow};

pub struct Rows {
    pool: PgPool,
    cache: RowCache,
    /// The request's statement count: each batch is one statement.
    statements: Arc<AtomicUsize>,
}

/// Errors are shared between every field that waited on the batch.
pub type LoadError = Arc<sqlx::Error>;

impl Loader<Uuid> for Rows {
    type Value = UserRow;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, UserRow>, LoadError> {
        let mut found = self.cache.users(ids);
        let missing = not_in(ids, &found);
        if !missing.is_empty() {
            let taken = self.cache.generation();
            self.statements.fetch_add(1, Ordering::Relaxed);
            let rows = users::by_ids(&self.pool, &missing)
                .await
                .map_err(Arc::new)?;
            self.cache.keep_users(taken, &rows);
            found.extend(rows.into_iter().map(|row| (row.id, row)));
        }
        Ok(found)
    }
}

/// Keys are typed, so one loader serves users, posts and comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostId(pub Uuid);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommentId(pub Uuid);

impl Loader<PostId> for Rows {
    type Value = PostRow;
    type Error = LoadError;

    async fn load(&self, ids: &[PostId]) -> Result<HashMap<PostId, PostRow>, LoadError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut found = self.cache.posts(&ids);
        let missing = not_in(&ids, &found);
        if !missing.is_empty() {
            let taken = self.cache.generation();
            self.statements.fetch_add(1, Ordering::Relaxed);
            let rows = posts::by_ids(&self.pool, &missing)
                .await
                .map_err(Arc::new)?;
            self.cache.keep_posts(taken, &rows);
            found.extend(rows.into_iter().map(|row| (row.id, row)));
        }
        Ok(found
            .into_iter()
            .map(|(id, row)| (PostId(id), row))
            .collect())
    }
}

impl Loader<CommentId> for Rows {
    type Value = CommentRow;
    type Error = LoadError;

    async fn load(&self, ids: &[CommentId]) -> Result<HashMap<CommentId, CommentRow>, LoadError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let rows = comments::by_ids(&self.pool, &ids).await.map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|row| (CommentId(row.id), row))
            .collect())
    }
}

fn not_in<V>(ids: &[Uuid], found: &HashMap<Uuid, V>) -> Vec<Uuid> {
    ids.iter()
        .filter(|id| !found.contains_key(id))
        .copied()
        .collect()
}

/// A fresh loader per request; rows outlive it only in the shared [`RowCache`].
pub fn per_request(
    pool: PgPool,
    cache: RowCache,
    statements: Arc<AtomicUsize>,
) -> DataLoader<Rows> {
    DataLoader::new(
        Rows {
            pool,
            cache,
            statements,
        },
        tokio::spawn,
    )
}
