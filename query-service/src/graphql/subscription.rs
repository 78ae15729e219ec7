//! Subscriptions over WebSocket (graphql-transport-ws), fed by what the
//! projector announces it applied: an event reaches subscribers once the read
//! models include it, and nothing polls.

use std::collections::VecDeque;

use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use chronicle_schema::projected::Projected;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::query::parse_id;
use super::services;
use super::types::{Comment, Post};
use crate::error::ApiError;
use crate::read_models::{comments, posts};

/// The read models' projection name in announcements.
const READ_MODELS: &str = "read_models";

pub struct Subscription;

/// Rows for each announcement that concerns a subscriber, in order.
fn follow<T, Load, Loading>(services: super::Services, load: Load) -> impl Stream<Item = T>
where
    T: Send + 'static,
    Load: Fn(super::Services, Projected) -> Loading + Send + Sync + 'static,
    Loading: Future<Output = Vec<T>> + Send,
{
    let announcements = services.consistency.subscribe();
    futures::stream::unfold(
        (announcements, VecDeque::new(), services, load),
        |(mut announcements, mut pending, services, load)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (announcements, pending, services, load)));
                }
                match announcements.recv().await {
                    Ok(projected) if projected.projection == READ_MODELS => {
                        pending.extend(load(services.clone(), projected).await);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "a subscriber fell behind; announcements were skipped"
                        );
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

fn applied(projected: &Projected, event_type: &str) -> Vec<Uuid> {
    projected
        .events
        .iter()
        .filter(|event| event.event_type == event_type)
        .map(|event| event.stream_id)
        .collect()
}

#[SubscriptionObject]
impl Subscription {
    /// Posts as they are published (optionally only those with `tag`).
    async fn post_published(
        &self,
        context: &Context<'_>,
        tag: Option<String>,
    ) -> impl Stream<Item = Post> {
        let tag = tag.map(|tag| tag.trim().to_lowercase());
        follow(services(context).clone(), move |services, projected| {
            let tag = tag.clone();
            async move {
                let ids = applied(&projected, "PostPublished");
                if ids.is_empty() {
                    return Vec::new();
                }
                match posts::by_ids(&services.pool, &ids).await {
                    Ok(rows) => rows
                        .into_iter()
                        .filter(|post| post.is_public())
                        .filter(|post| tag.as_ref().is_none_or(|tag| post.tags.contains(tag)))
                        .map(Post)
                        .collect(),
                    Err(error) => {
                        tracing::warn!(%error, "could not load published posts for subscribers");
                        Vec::new()
                    }
                }
            }
        })
    }

    /// Comments and replies as they are added to a post.
    async fn comment_added(
        &self,
        context: &Context<'_>,
        post_id: ID,
    ) -> Result<impl Stream<Item = Comment>, ApiError> {
        let post_id = parse_id("postId", &post_id)?;
        Ok(follow(
            services(context).clone(),
            move |services, projected| async move {
                let ids = applied(&projected, "CommentAdded");
                if ids.is_empty() {
                    return Vec::new();
                }
                let Ok(rows) = comments::by_ids(&services.pool, &ids).await else {
                    return Vec::new();
                };
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|comment| comment.post_id == post_id)
                    .collect();
                if rows.is_empty() {
                    return Vec::new();
                }
                // Only while the post is public.
                match posts::by_ids(&services.pool, &[post_id]).await {
                    Ok(post) if post.first().is_some_and(posts::PostRow::is_public) => {
                        rows.into_iter().map(Comment).collect()
                    }
                    _ => Vec::new(),
                }
            },
        ))
    }
}
