//! The locks that keep derived columns right with any number of projectors.
//!
//! A derived column (a count, an author's name copied onto posts) is
//! recomputed from other rows. Two batches on different instances that
//! recompute the same one from rows the other has not committed would each
//! miss the other's change (write skew). So every batch, before it reads
//! anything, takes a transaction-scoped advisory lock for:
//!
//! - each stream it applies (its own rows and its version; a lock holds for a
//!   row that does not exist yet, unlike `FOR UPDATE`);
//! - each user whose counts, or whose copies on posts, it recomputes: a post's
//!   author, a comment's author;
//! - each post whose comment count it recomputes, each comment whose reply
//!   count it recomputes;
//! - then each tag it recounts.
//!
//! Every writer of a derived value holds its lock, so they run one after the
//! other and each recounts from committed rows. Locks are taken in one global
//! order (users, posts, comments by key, then tags by key), all but the tags
//! in one statement, so two batches never wait on each other in a cycle. What
//! a lock is needed for is known before locking: a post's author and a
//! comment's post, author and parent never change (from the batch's own
//! creation events, the read model, or the event store). The tags to lock are
//! read after the other locks are held, when no one else can change them.

use std::collections::{BTreeSet, HashMap};

use chronicle_schema::events::{CommentEvent, PostEvent};
use chronicle_schema::{DomainEvent, RecordedEvent, StreamType};
use sqlx::PgConnection;
use uuid::Uuid;

/// Lock classes, in the order they are taken (the top byte of a key).
const USER: i64 = 1;
const POST: i64 = 2;
const COMMENT: i64 = 3;
const TAG: i64 = 4;

/// A key in the class's range: ordered by class first.
fn key(class: i64, hash: u64) -> i64 {
    (class << 56) | (hash & 0x00FF_FFFF_FFFF_FFFF) as i64
}

fn uuid_key(class: i64, id: Uuid) -> i64 {
    let (high, low) = id.as_u64_pair();
    key(class, high ^ low.rotate_left(17))
}

/// FNV-1a: stable across processes and releases, as a shared lock key must be.
fn text_key(class: i64, text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    key(class, hash)
}

/// What never changes about a post or a comment, as far as locks need it.
#[derive(Debug, Default)]
pub struct Facts {
    post_authors: HashMap<Uuid, Uuid>,
    /// Comment -> (post, author, parent).
    comments: HashMap<Uuid, (Uuid, Uuid, Option<Uuid>)>,
}

impl Facts {
    /// The authors of the batch's posts and the post, author and parent of
    /// its comments: from its own creation events, else the read model,
    /// else the streams' first events in the event store.
    pub async fn discover(
        connection: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<Facts, sqlx::Error> {
        let mut facts = Facts::default();
        let mut posts = BTreeSet::new();
        let mut comments = BTreeSet::new();
        for event in events {
            match &event.event {
                DomainEvent::Post(PostEvent::Created(created)) => {
                    facts
                        .post_authors
                        .insert(event.stream_id, created.author_id);
                }
                DomainEvent::Comment(CommentEvent::Added(added)) => {
                    facts.comments.insert(
                        event.stream_id,
                        (added.post_id, added.author_id, added.parent_id),
                    );
                }
                DomainEvent::Post(_) => {
                    posts.insert(event.stream_id);
                }
                DomainEvent::Comment(_) => {
                    comments.insert(event.stream_id);
                }
                DomainEvent::User(_) => {}
            }
        }
        posts.retain(|id| !facts.post_authors.contains_key(id));
        comments.retain(|id| !facts.comments.contains_key(id));
        if posts.is_empty() && comments.is_empty() {
            return Ok(facts);
        }
        let posts: Vec<Uuid> = posts.into_iter().collect();
        let comments: Vec<Uuid> = comments.into_iter().collect();
        for row in sqlx::query!("SELECT id, author_id FROM posts WHERE id = ANY($1)", &posts)
            .fetch_all(&mut *connection)
            .await?
        {
            facts.post_authors.insert(row.id, row.author_id);
        }
        for row in sqlx::query!(
            "SELECT id, post_id, author_id, parent_id FROM comments WHERE id = ANY($1)",
            &comments
        )
        .fetch_all(&mut *connection)
        .await?
        {
            facts
                .comments
                .insert(row.id, (row.post_id, row.author_id, row.parent_id));
        }
        let unknown: Vec<Uuid> = posts
            .iter()
            .filter(|id| !facts.post_authors.contains_key(id))
            .chain(
                comments
                    .iter()
                    .filter(|id| !facts.comments.contains_key(id)),
            )
            .copied()
            .collect();
        if unknown.is_empty() {
            return Ok(facts);
        }
        // Not projected yet (a hole, or a dead-lettered creation): the store knows.
        for row in sqlx::query!(
            r#"SELECT stream_id, payload FROM event_store.events
               WHERE stream_id = ANY($1) AND version = 1"#,
            &unknown
        )
        .fetch_all(&mut *connection)
        .await?
        {
            let field = |name: &str| {
                row.payload
                    .get(name)
                    .and_then(|value| value.as_str())
                    .and_then(|value| value.parse::<Uuid>().ok())
            };
            if let (Some(post), Some(author)) = (field("postId"), field("authorId")) {
                facts
                    .comments
                    .insert(row.stream_id, (post, author, field("parentId")));
            } else if let Some(author) = field("authorId") {
                facts.post_authors.insert(row.stream_id, author);
            }
        }
        Ok(facts)
    }

    /// Every key a batch on these streams must hold, but the tags, sorted.
    pub fn keys(&self, streams: &[(Uuid, StreamType)]) -> Vec<i64> {
        let mut keys = BTreeSet::new();
        for (id, stream_type) in streams {
            match stream_type {
                StreamType::User => {
                    keys.insert(uuid_key(USER, *id));
                }
                StreamType::Post => {
                    keys.insert(uuid_key(POST, *id));
                    if let Some(author) = self.post_authors.get(id) {
                        keys.insert(uuid_key(USER, *author));
                    }
                }
                StreamType::Comment => {
                    keys.insert(uuid_key(COMMENT, *id));
                    if let Some((post, author, parent)) = self.comments.get(id) {
                        keys.insert(uuid_key(POST, *post));
                        keys.insert(uuid_key(USER, *author));
                        if let Some(parent) = parent {
                            keys.insert(uuid_key(COMMENT, *parent));
                        }
                    }
                }
            }
        }
        keys.into_iter().collect()
    }
}

/// Takes the keys' locks for this transaction, in their order.
pub async fn lock(connection: &mut PgConnection, keys: &[i64]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    debug_assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    sqlx::query!(
        r#"SELECT count(pg_advisory_xact_lock(key)) AS "locked!"
           FROM (SELECT key FROM UNNEST($1::int8[]) AS keys(key) ORDER BY key) ordered"#,
        keys
    )
    .fetch_one(connection)
    .await?;
    Ok(())
}

/// Takes the tags' locks, after every other lock of the batch.
pub async fn lock_tags(connection: &mut PgConnection, names: &[String]) -> Result<(), sqlx::Error> {
    let keys: BTreeSet<i64> = names.iter().map(|name| text_key(TAG, name)).collect();
    let keys: Vec<i64> = keys.into_iter().collect();
    lock(connection, &keys).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ordered_by_class_then_hash_and_stable() {
        let id = Uuid::from_u128(u128::MAX);
        assert!(uuid_key(USER, id) < uuid_key(POST, Uuid::nil()));
        assert!(uuid_key(COMMENT, id) < text_key(TAG, ""));
        assert_eq!(text_key(TAG, "rust"), text_key(TAG, "rust"));
        assert_ne!(text_key(TAG, "rust"), text_key(TAG, "go"));
        assert!(text_key(TAG, "rust") > 0);
    }
}
