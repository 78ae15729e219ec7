//! The read models folded in memory, for a rebuild.
//!
//! The live path applies events with SQL handlers (`projections`), a few
//! statements each; a rebuild of millions of events cannot afford that, so it
//! folds the store here and writes the result in bulk. The two must agree
//! exactly: the same rules, the same poison, the same derived counts.
//! `tests/tests/rebuild.rs` compares digests of both over real workloads.

use std::collections::{BTreeMap, HashMap};

use chronicle_schema::events::{CommentEvent, PostEvent, UserEvent};
use chronicle_schema::{DomainEvent, RecordedEvent};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::markdown::excerpt;

#[derive(Clone, Debug, PartialEq)]
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
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PostRow {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub excerpt: String,
    pub status: &'static str,
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

#[derive(Clone, Debug, PartialEq)]
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

/// An event the live handlers would refuse too, with their reason.
#[derive(Clone, Debug)]
pub struct Poison {
    pub event: RecordedEvent,
    pub error: String,
}

#[derive(Default)]
pub struct ReadModel {
    pub users: HashMap<Uuid, UserRow>,
    pub posts: HashMap<Uuid, PostRow>,
    pub comments: HashMap<Uuid, CommentRow>,
    /// Stream -> (version, position) of the last event handled.
    pub versions: HashMap<Uuid, (i32, i64)>,
    pub tags: BTreeMap<String, i32>,
    pub poison: Vec<Poison>,
}

impl ReadModel {
    /// Applies one event; versions already handled are skipped, as live.
    pub fn apply(&mut self, event: &RecordedEvent) {
        let handled = self
            .versions
            .get(&event.stream_id)
            .map_or(0, |(version, _)| *version);
        if event.version <= handled {
            return;
        }
        if let Err(error) = self.apply_event(event) {
            self.poison.push(Poison {
                event: event.clone(),
                error,
            });
        }
        self.versions
            .insert(event.stream_id, (event.version, event.position));
    }

    fn apply_event(&mut self, recorded: &RecordedEvent) -> Result<(), String> {
        let id = recorded.stream_id;
        let at = recorded.recorded_at;
        let version = recorded.version;
        let missing = |what: &str| {
            format!(
                "{} for {what} {id} which the read model does not have",
                recorded.event.event_type()
            )
        };
        match &recorded.event {
            DomainEvent::User(event) => match event {
                UserEvent::Registered(registered) => {
                    let existing = self.users.remove(&id);
                    self.users.insert(
                        id,
                        UserRow {
                            id,
                            handle: registered.handle.clone(),
                            display_name: registered.display_name.clone(),
                            bio: existing.as_ref().and_then(|user| user.bio.clone()),
                            email: registered.email.clone(),
                            role: registered.role.as_str().to_owned(),
                            active: existing.as_ref().is_none_or(|user| user.active),
                            post_count: 0,
                            comment_count: 0,
                            joined_at: at,
                            updated_at: at,
                            version,
                        },
                    );
                }
                UserEvent::ProfileUpdated(profile) => {
                    let user = self.users.get_mut(&id).ok_or_else(|| missing("user"))?;
                    user.display_name.clone_from(&profile.display_name);
                    user.bio.clone_from(&profile.bio);
                    user.updated_at = at;
                    user.version = version;
                }
                UserEvent::RoleChanged(changed) => {
                    let user = self.users.get_mut(&id).ok_or_else(|| missing("user"))?;
                    user.role = changed.role.as_str().to_owned();
                    user.updated_at = at;
                    user.version = version;
                }
                UserEvent::Deactivated(_) => {
                    let user = self.users.get_mut(&id).ok_or_else(|| missing("user"))?;
                    user.active = false;
                    user.updated_at = at;
                    user.version = version;
                }
            },
            DomainEvent::Post(event) => match event {
                PostEvent::Created(created) => {
                    let existing = self.posts.remove(&id);
                    self.posts.insert(
                        id,
                        PostRow {
                            id,
                            slug: created.slug.clone(),
                            title: created.title.clone(),
                            body: created.body.clone(),
                            excerpt: excerpt(&created.body),
                            status: existing.as_ref().map_or("DRAFT", |post| post.status),
                            deleted: existing.as_ref().is_some_and(|post| post.deleted),
                            author_active: true,
                            tags: created.tags.clone(),
                            author_id: created.author_id,
                            author_handle: created.author_handle.clone(),
                            author_display_name: String::new(),
                            comment_count: 0,
                            created_at: at,
                            updated_at: existing.as_ref().map_or(at, |post| post.updated_at),
                            published_at: existing.and_then(|post| post.published_at),
                            version,
                        },
                    );
                }
                PostEvent::Edited(edited) => {
                    let post = self.posts.get_mut(&id).ok_or_else(|| missing("post"))?;
                    post.title.clone_from(&edited.title);
                    post.body.clone_from(&edited.body);
                    post.excerpt = excerpt(&edited.body);
                    post.tags.clone_from(&edited.tags);
                    post.updated_at = at;
                    post.version = version;
                }
                PostEvent::Published(_) => {
                    let post = self.posts.get_mut(&id).ok_or_else(|| missing("post"))?;
                    post.status = "PUBLISHED";
                    post.published_at.get_or_insert(at);
                    post.updated_at = at;
                    post.version = version;
                }
                PostEvent::Unpublished(_) => {
                    let post = self.posts.get_mut(&id).ok_or_else(|| missing("post"))?;
                    post.status = "DRAFT";
                    post.updated_at = at;
                    post.version = version;
                }
                PostEvent::Deleted(_) => {
                    let post = self.posts.get_mut(&id).ok_or_else(|| missing("post"))?;
                    post.deleted = true;
                    post.updated_at = at;
                    post.version = version;
                }
            },
            DomainEvent::Comment(event) => match event {
                CommentEvent::Added(added) => {
                    let existing = self.comments.remove(&id);
                    self.comments.insert(
                        id,
                        CommentRow {
                            id,
                            post_id: added.post_id,
                            author_id: added.author_id,
                            parent_id: added.parent_id,
                            body: added.body.clone(),
                            deleted: existing.as_ref().is_some_and(|comment| comment.deleted),
                            reply_count: 0,
                            created_at: at,
                            edited_at: existing.and_then(|comment| comment.edited_at),
                            version,
                        },
                    );
                }
                CommentEvent::Edited(edited) => {
                    let comment = self
                        .comments
                        .get_mut(&id)
                        .ok_or_else(|| missing("comment"))?;
                    comment.body.clone_from(&edited.body);
                    comment.edited_at = Some(at);
                    comment.version = version;
                }
                CommentEvent::Deleted(_) => {
                    let comment = self
                        .comments
                        .get_mut(&id)
                        .ok_or_else(|| missing("comment"))?;
                    comment.deleted = true;
                    comment.body.clear();
                    comment.version = version;
                }
            },
        }
        Ok(())
    }

    /// Computes what the live handlers keep recomputed: counts, tags, and the
    /// author names copied into posts.
    pub fn finish(&mut self) {
        for post in self.posts.values_mut() {
            post.author_active = self
                .users
                .get(&post.author_id)
                .is_none_or(|user| user.active);
        }
        let mut posts_by_author: HashMap<Uuid, i32> = HashMap::new();
        self.tags.clear();
        for post in self.posts.values() {
            if post.status == "PUBLISHED" && !post.deleted && post.author_active {
                *posts_by_author.entry(post.author_id).or_default() += 1;
                for tag in dedup(&post.tags) {
                    *self.tags.entry(tag.clone()).or_default() += 1;
                }
            }
        }
        let mut comments_by_author: HashMap<Uuid, i32> = HashMap::new();
        let mut comments_by_post: HashMap<Uuid, i32> = HashMap::new();
        let mut replies_by_parent: HashMap<Uuid, i32> = HashMap::new();
        for comment in self.comments.values().filter(|comment| !comment.deleted) {
            *comments_by_author.entry(comment.author_id).or_default() += 1;
            *comments_by_post.entry(comment.post_id).or_default() += 1;
            if let Some(parent_id) = comment.parent_id {
                *replies_by_parent.entry(parent_id).or_default() += 1;
            }
        }
        for user in self.users.values_mut() {
            user.post_count = posts_by_author.get(&user.id).copied().unwrap_or(0);
            user.comment_count = comments_by_author.get(&user.id).copied().unwrap_or(0);
        }
        for post in self.posts.values_mut() {
            post.comment_count = comments_by_post.get(&post.id).copied().unwrap_or(0);
            post.author_display_name = self.users.get(&post.author_id).map_or_else(
                || post.author_handle.clone(),
                |user| user.display_name.clone(),
            );
        }
        for comment in self.comments.values_mut() {
            comment.reply_count = replies_by_parent.get(&comment.id).copied().unwrap_or(0);
        }
    }
}

fn dedup(tags: &[String]) -> Vec<&String> {
    let mut seen: Vec<&String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !seen.contains(&tag) {
            seen.push(tag);
        }
    }
    seen
}
