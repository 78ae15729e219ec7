//! A blog's history, generated: users, posts with Markdown bodies of realistic
//! length, tags with a long tail, comments with replies, edits, unpublished
//! and deleted posts. Popularity follows Zipf laws (a few prolific authors, a
//! few busy posts, a few common tags), and the prose samples a technical
//! English vocabulary by word frequency, so search statistics look real.

use chronicle_schema::events::{
    CommentAdded, CommentDeleted, CommentEdited, CommentEvent, PostCreated, PostDeleted,
    PostEdited, PostEvent, PostPublished, PostUnpublished, UserEvent, UserRegistered,
};
use chronicle_schema::{DomainEvent, Role, StreamType};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use uuid::Uuid;

const VOCABULARY: &str = include_str!("../data/vocabulary.txt");
const TAG_COUNT: usize = 500;

/// How big a history to make.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub users: usize,
    pub posts: usize,
    pub comments: usize,
    pub seed: u64,
}

impl Plan {
    /// About `events` events in all, in a blog's usual proportions.
    pub fn for_events(events: usize, seed: u64) -> Plan {
        let users = (events / 50).max(2);
        let posts = (events / 8).max(2);
        // A post makes ~2.2 events (create, publish, some edits), a comment ~1.08.
        let comments = events.saturating_sub(users + posts * 22 / 10) * 100 / 108;
        Plan {
            users,
            posts,
            comments,
            seed,
        }
    }
}

/// One event to store, with the stream it belongs to and when it happened.
#[derive(Clone, Debug)]
pub struct Generated {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
    pub event: DomainEvent,
    pub actor_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

/// Values unique across streams, which the command side would have claimed.
#[derive(Clone, Debug)]
pub struct Claim {
    pub kind: &'static str,
    pub value: String,
    pub stream_id: Uuid,
}

pub struct History {
    pub events: Vec<Generated>,
    pub claims: Vec<Claim>,
    pub users: Vec<Uuid>,
}

/// The vocabulary, sampled by word frequency.
pub struct Words {
    words: Vec<&'static str>,
    zipf: Zipf<f64>,
}

impl Default for Words {
    fn default() -> Words {
        Words::new()
    }
}

impl Words {
    pub fn new() -> Words {
        let words: Vec<&str> = VOCABULARY
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let zipf = Zipf::new(words.len() as f64, 1.05).expect("a valid Zipf law");
        Words { words, zipf }
    }

    pub fn word(&self, rng: &mut StdRng) -> &'static str {
        self.words[self.zipf.sample(rng) as usize - 1]
    }

    /// The words, most frequent first.
    pub fn ranked(&self) -> &[&'static str] {
        &self.words
    }

    fn sentence(&self, rng: &mut StdRng, length: usize) -> String {
        let mut sentence: Vec<String> = (0..length).map(|_| self.word(rng).to_owned()).collect();
        if let Some(first) = sentence.first_mut() {
            *first = capitalise(first);
        }
        format!("{}.", sentence.join(" "))
    }

    pub fn title(&self, rng: &mut StdRng) -> String {
        let length = rng.random_range(3..9);
        (0..length)
            .map(|_| capitalise(self.word(rng)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A post body: a few paragraphs, now and then a heading, a list or code.
    pub fn body(&self, rng: &mut StdRng) -> String {
        let mut body = String::new();
        for paragraph in 0..rng.random_range(3..9) {
            if paragraph > 0 && rng.random_bool(0.3) {
                body.push_str(&format!("## {}\n\n", self.title(rng)));
            }
            let sentences: Vec<String> = (0..rng.random_range(2..7))
                .map(|_| {
                    let length = rng.random_range(8..22);
                    self.sentence(rng, length)
                })
                .collect();
            body.push_str(&sentences.join(" "));
            body.push_str("\n\n");
            if rng.random_bool(0.15) {
                for _ in 0..rng.random_range(2..5) {
                    let length = rng.random_range(3..8);
                    body.push_str(&format!("- *{}*\n", self.sentence(rng, length)));
                }
                body.push('\n');
            }
            if rng.random_bool(0.1) {
                body.push_str(&format!(
                    "```rust\nfn {}() -> Result<(), Error> {{\n    Ok(())\n}}\n```\n\n",
                    self.word(rng)
                ));
            }
        }
        body
    }

    fn comment(&self, rng: &mut StdRng) -> String {
        (0..rng.random_range(1..4))
            .map(|_| {
                let length = rng.random_range(5..18);
                self.sentence(rng, length)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Generates a history over the year before `end`.
pub fn generate(plan: Plan, end: DateTime<Utc>) -> History {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let words = Words::new();
    let start = end - Duration::days(365);
    let span = (end - start).num_seconds();
    let at = |rng: &mut StdRng, from: DateTime<Utc>| -> DateTime<Utc> {
        let remaining = (end - from).num_seconds().max(2);
        from + Duration::seconds(rng.random_range(1..remaining.min(span / 4).max(2)))
    };
    let tags: Vec<String> = (0..TAG_COUNT)
        .map(|index| {
            let word = words.words[(index * 7 + 13) % words.words.len()];
            if index < 100 {
                word.to_owned()
            } else {
                format!("{word}-{}", index / 100)
            }
        })
        .collect();
    let tag_popularity = Zipf::new(TAG_COUNT as f64, 1.1).expect("a valid Zipf law");
    let author_popularity = Zipf::new(plan.users as f64, 1.0).expect("a valid Zipf law");

    let mut events = Vec::with_capacity(plan.users + plan.posts * 3 + plan.comments);
    let mut claims = Vec::with_capacity(plan.users * 2 + plan.posts);
    let mut users = Vec::with_capacity(plan.users);
    let mut registered_at = Vec::with_capacity(plan.users);
    for index in 0..plan.users {
        let id = Uuid::now_v7();
        let handle = format!(
            "{}_{index}",
            words
                .word(&mut rng)
                .chars()
                .filter(char::is_ascii_lowercase)
                .collect::<String>()
        );
        let handle = if handle.starts_with(|c: char| c.is_ascii_lowercase()) {
            handle
        } else {
            format!("u{handle}")
        };
        let when = start + Duration::seconds(rng.random_range(0..span / 5));
        events.push(Generated {
            stream_id: id,
            stream_type: StreamType::User,
            version: 1,
            event: UserEvent::Registered(UserRegistered {
                email: format!("{handle}@example.com"),
                handle: handle.clone(),
                display_name: capitalise(&handle.replace('_', " ")),
                role: Role::User,
            })
            .into(),
            actor_id: None,
            at: when,
        });
        claims.push(Claim {
            kind: "email",
            value: format!("{handle}@example.com"),
            stream_id: id,
        });
        claims.push(Claim {
            kind: "handle",
            value: handle.clone(),
            stream_id: id,
        });
        users.push((id, handle));
        registered_at.push(when);
    }

    // Posts, and their lives.
    let mut published_posts: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
    for index in 0..plan.posts {
        let author = author_popularity.sample(&mut rng) as usize - 1;
        let (author_id, handle) = users[author].clone();
        let id = Uuid::now_v7();
        let mut version = 0;
        let mut when = at(&mut rng, registered_at[author]);
        let mut push = |event: PostEvent, when: DateTime<Utc>, version: &mut i32| {
            *version += 1;
            events.push(Generated {
                stream_id: id,
                stream_type: StreamType::Post,
                version: *version,
                event: event.into(),
                actor_id: Some(author_id),
                at: when,
            });
        };
        let title = words.title(&mut rng);
        let slug = format!("post-{index}");
        let mut post_tags: Vec<String> = Vec::new();
        for _ in 0..rng.random_range(0..5) {
            let tag = tags[tag_popularity.sample(&mut rng) as usize - 1].clone();
            if !post_tags.contains(&tag) {
                post_tags.push(tag);
            }
        }
        claims.push(Claim {
            kind: "slug",
            value: slug.clone(),
            stream_id: id,
        });
        push(
            PostCreated {
                author_id,
                author_handle: handle,
                slug,
                title: title.clone(),
                body: words.body(&mut rng),
                tags: post_tags.clone(),
            }
            .into(),
            when,
            &mut version,
        );
        if rng.random_bool(0.3) {
            when = at(&mut rng, when);
            push(
                PostEdited {
                    title: format!("{title}, revised"),
                    body: words.body(&mut rng),
                    tags: post_tags,
                }
                .into(),
                when,
                &mut version,
            );
        }
        if rng.random_bool(0.85) {
            when = at(&mut rng, when);
            push(PostPublished {}.into(), when, &mut version);
            if rng.random_bool(0.05) {
                when = at(&mut rng, when);
                push(PostUnpublished {}.into(), when, &mut version);
            } else if rng.random_bool(0.02) {
                when = at(&mut rng, when);
                push(PostDeleted {}.into(), when, &mut version);
            } else {
                published_posts.push((id, when));
            }
        }
    }

    // Comments on published posts: a few posts draw most of them.
    if !published_posts.is_empty() {
        let post_popularity =
            Zipf::new(published_posts.len() as f64, 0.9).expect("a valid Zipf law");
        let mut top_level: std::collections::HashMap<Uuid, Vec<(Uuid, DateTime<Utc>)>> =
            Default::default();
        for _ in 0..plan.comments {
            let (post_id, published) =
                published_posts[post_popularity.sample(&mut rng) as usize - 1];
            let author = author_popularity.sample(&mut rng) as usize - 1;
            let author_id = users[author].0;
            let id = Uuid::now_v7();
            let parent = top_level
                .get(&post_id)
                .filter(|_| rng.random_bool(0.3))
                .and_then(|parents| parents.get(rng.random_range(0..parents.len())).copied());
            let mut when = at(
                &mut rng,
                parent.map_or(published, |(_, parent_at)| parent_at),
            );
            events.push(Generated {
                stream_id: id,
                stream_type: StreamType::Comment,
                version: 1,
                event: CommentEvent::Added(CommentAdded {
                    post_id,
                    author_id,
                    parent_id: parent.map(|(parent, _)| parent),
                    body: words.comment(&mut rng),
                })
                .into(),
                actor_id: Some(author_id),
                at: when,
            });
            if parent.is_none() {
                top_level.entry(post_id).or_default().push((id, when));
            }
            let mut version = 1;
            if rng.random_bool(0.05) {
                when = at(&mut rng, when);
                version += 1;
                events.push(Generated {
                    stream_id: id,
                    stream_type: StreamType::Comment,
                    version,
                    event: CommentEvent::Edited(CommentEdited {
                        body: words.comment(&mut rng),
                    })
                    .into(),
                    actor_id: Some(author_id),
                    at: when,
                });
            }
            if rng.random_bool(0.03) {
                when = at(&mut rng, when);
                events.push(Generated {
                    stream_id: id,
                    stream_type: StreamType::Comment,
                    version: version + 1,
                    event: CommentEvent::Deleted(CommentDeleted {}).into(),
                    actor_id: Some(author_id),
                    at: when,
                });
            }
        }
    }
    // In time order: each stream's events are in time order too, so its
    // versions stay in order in the store.
    events.sort_by_key(|event| event.at);
    History {
        events,
        claims,
        users: users.into_iter().map(|(id, _)| id).collect(),
    }
}
