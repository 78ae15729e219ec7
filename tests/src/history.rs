//! Random blog histories straight into the event store: valid streams with
//! the awkward parts (authors shared across posts, tags shared across
//! authors, deactivations, unpublished and deleted posts, replies, deleted
//! comments, several streams committed in one transaction, an event no row
//! can take), for tests that compare projections built different ways.

use chronicle_schema::events::{
    CommentAdded, CommentDeleted, CommentEdited, PostCreated, PostDeleted, PostEdited,
    PostImageAdded, PostImageProcessed, PostImageRejected, PostPublished, PostUnpublished,
    UserDeactivated, UserProfileUpdated, UserRegistered,
};
use chronicle_schema::images::{ImageFormat, Rendition};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

const TAGS: &[&str] = &["rust", "cqrs", "kafka", "postgres", "search"];

struct Stream {
    id: Uuid,
    version: i32,
}

struct Author {
    stream: Stream,
    handle: String,
    active: bool,
}

struct Post {
    stream: Stream,
    published: bool,
    deleted: bool,
    /// Images uploaded and not processed yet.
    processing: Vec<Uuid>,
}

struct Comment {
    stream: Stream,
    post: usize,
    top_level: bool,
    deleted: bool,
}

#[derive(Default)]
struct World {
    users: Vec<Author>,
    posts: Vec<Post>,
    comments: Vec<Comment>,
}

type Append = (Uuid, StreamType, i32, DomainEvent);

fn tags(rng: &mut StdRng) -> Vec<String> {
    let count = rng.random_range(0..3);
    TAGS.choose_multiple(rng, count)
        .map(|tag| (*tag).to_owned())
        .collect()
}

impl World {
    /// One step of the history: the events it appends.
    fn step(&mut self, rng: &mut StdRng, seed: u64) -> Vec<Append> {
        if self.users.len() < 3 || rng.random_ratio(1, 12) {
            let handle = format!("h{seed}_{}", self.users.len());
            let id = Uuid::now_v7();
            self.users.push(Author {
                stream: Stream { id, version: 1 },
                handle: handle.clone(),
                active: true,
            });
            return vec![(
                id,
                StreamType::User,
                0,
                UserRegistered {
                    email: format!("{handle}@example.com"),
                    handle: handle.clone(),
                    display_name: handle,
                    role: Role::User,
                }
                .into(),
            )];
        }
        let roll = rng.random_range(0..100);
        let user = rng.random_range(0..self.users.len());
        match roll {
            0..8 => self.user_event(user, rng),
            8..30 => {
                let id = Uuid::now_v7();
                let author = &self.users[user];
                let event = PostCreated {
                    author_id: author.stream.id,
                    author_handle: author.handle.clone(),
                    slug: format!("{}-{}", author.handle, self.posts.len()),
                    title: format!("Post {}", self.posts.len()),
                    body: format!("Body *{}*", self.posts.len()),
                    tags: tags(rng),
                };
                self.posts.push(Post {
                    stream: Stream { id, version: 1 },
                    published: false,
                    deleted: false,
                    processing: Vec::new(),
                });
                vec![(id, StreamType::Post, 0, event.into())]
            }
            30..55 if !self.posts.is_empty() => {
                let index = rng.random_range(0..self.posts.len());
                self.post_event(index, rng)
            }
            55..97 if !self.posts.is_empty() => self.comment_event(user, rng),
            97..99 => {
                // An event no row can take: an edit of a post never created.
                vec![(
                    Uuid::now_v7(),
                    StreamType::Post,
                    0,
                    PostEdited {
                        title: "orphan".into(),
                        body: "orphan".into(),
                        tags: vec!["rust".into()],
                    }
                    .into(),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn user_event(&mut self, user: usize, rng: &mut StdRng) -> Vec<Append> {
        let author = &mut self.users[user];
        let base = author.stream.version;
        let event: DomainEvent = if author.active && rng.random_ratio(1, 4) {
            author.active = false;
            UserDeactivated {}.into()
        } else {
            UserProfileUpdated {
                display_name: format!("{} v{}", author.handle, base + 1),
                bio: Some(format!("bio {base}")),
            }
            .into()
        };
        author.stream.version += 1;
        vec![(author.stream.id, StreamType::User, base, event)]
    }

    fn post_event(&mut self, index: usize, rng: &mut StdRng) -> Vec<Append> {
        let post = &mut self.posts[index];
        if post.deleted {
            return Vec::new();
        }
        let base = post.stream.version;
        let event: DomainEvent = match rng.random_range(0..10) {
            0..3 => PostEdited {
                title: format!("Edited {index} v{base}"),
                body: format!("Edited body {base}"),
                tags: tags(rng),
            }
            .into(),
            3..7 if !post.published => {
                post.published = true;
                PostPublished {}.into()
            }
            3..8 if post.published => {
                post.published = false;
                PostUnpublished {}.into()
            }
            8 => {
                post.deleted = true;
                PostDeleted {}.into()
            }
            // An image: uploaded, or the worker's outcome for one.
            _ => match post.processing.pop() {
                Some(image_id) if rng.random_ratio(3, 4) => PostImageProcessed {
                    image_id,
                    renditions: vec![Rendition {
                        width: 320,
                        height: 240,
                        format: ImageFormat::Webp,
                        bytes: u64::from(base as u32),
                    }],
                }
                .into(),
                Some(image_id) => PostImageRejected {
                    image_id,
                    reason: format!("unreadable v{base}"),
                }
                .into(),
                None => {
                    let image_id = Uuid::now_v7();
                    post.processing.push(image_id);
                    PostImageAdded {
                        image_id,
                        hash: format!("{:064x}", image_id.as_u128()),
                        format: ImageFormat::Jpeg,
                        width: 640,
                        height: 480,
                        bytes: 1000,
                        alt: format!("alt {index} v{base}"),
                    }
                    .into()
                }
            },
        };
        post.stream.version += 1;
        vec![(post.stream.id, StreamType::Post, base, event)]
    }

    fn comment_event(&mut self, user: usize, rng: &mut StdRng) -> Vec<Append> {
        if !self.comments.is_empty() && rng.random_ratio(1, 4) {
            let index = rng.random_range(0..self.comments.len());
            let comment = &mut self.comments[index];
            if comment.deleted {
                return Vec::new();
            }
            let base = comment.stream.version;
            let event: DomainEvent = if rng.random_ratio(1, 2) {
                comment.deleted = true;
                CommentDeleted {}.into()
            } else {
                CommentEdited {
                    body: format!("edited {base}"),
                }
                .into()
            };
            comment.stream.version += 1;
            return vec![(comment.stream.id, StreamType::Comment, base, event)];
        }
        let post = rng.random_range(0..self.posts.len());
        let parents: Vec<usize> = (0..self.comments.len())
            .filter(|index| self.comments[*index].post == post && self.comments[*index].top_level)
            .collect();
        let parent = if rng.random_ratio(1, 3) {
            parents.choose(rng).copied()
        } else {
            None
        };
        let id = Uuid::now_v7();
        let event = CommentAdded {
            post_id: self.posts[post].stream.id,
            author_id: self.users[user].stream.id,
            parent_id: parent.map(|parent| self.comments[parent].stream.id),
            body: format!("comment {}", self.comments.len()),
        };
        self.comments.push(Comment {
            stream: Stream { id, version: 1 },
            post,
            top_level: parent.is_none(),
            deleted: false,
        });
        vec![(id, StreamType::Comment, 0, event.into())]
    }
}

/// Appends a random history of about `steps` steps, a few steps per
/// transaction; answers the number of events.
pub async fn random_history(pool: &PgPool, seed: u64, steps: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::default();
    let mut written = 0;
    let mut done = 0;
    while done < steps {
        let together = rng.random_range(1..4);
        let mut transaction = pool.begin().await.expect("begin");
        for _ in 0..together {
            for (stream_id, stream_type, base, event) in world.step(&mut rng, seed) {
                let command_id = Uuid::now_v7();
                command_service::event_store::append(
                    &mut transaction,
                    stream_id,
                    stream_type,
                    base,
                    &[event],
                    &EventMetadata {
                        command_id,
                        correlation_id: command_id,
                        causation_id: command_id,
                        actor_id: None,
                        traceparent: None,
                    },
                    &Default::default(),
                )
                .await
                .expect("append a step of the history");
                written += 1;
            }
        }
        transaction.commit().await.expect("commit");
        done += together;
    }
    written
}
