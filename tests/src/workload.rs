//! Realistic activity, for tests that compare projections built different ways.

use chronicle_schema::events::{
    CommentAdded, CommentEvent, PostCreated, PostEdited, PostEvent, PostPublished, UserEvent,
    UserProfileUpdated, UserRegistered,
};
use chronicle_schema::{DomainEvent, EventMetadata, Role, StreamType};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Session, TestApp};

const TAGS: &[&str] = &[
    "rust",
    "cqrs",
    "kafka",
    "postgres",
    "search",
    "event-sourcing",
    "ops",
];

/// Through the public API: users, drafts, publications, edits and retags,
/// comments and replies, a rename, an unpublish, deletions.
pub async fn blog_activity(app: &TestApp, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sessions: Vec<Session> = Vec::new();
    for index in 0..4 {
        sessions.push(app.signed_in(&format!("writer{seed}_{index}")).await.1);
    }
    let mut published = Vec::new();
    let mut drafts = Vec::new();
    for (author, session) in sessions.iter().enumerate() {
        for number in 0..3 {
            let count = rng.random_range(0..3);
            let tags: Vec<&str> = TAGS.choose_multiple(&mut rng, count).copied().collect();
            let id = app
                .create_post(session, &format!("Post {number} by writer {author}"), &tags)
                .await;
            if number < 2 {
                app.publish_post(session, id).await;
                published.push((author, id));
            } else {
                drafts.push((author, id));
            }
        }
    }
    let mut comments = Vec::new();
    for session in &sessions {
        for _ in 0..4 {
            let (_, post) = *published.choose(&mut rng).unwrap();
            let response = app
                .add_comment(session, post, None, "A thoughtful comment.")
                .await;
            let id: Uuid = response.data()["addComment"]["comment"]["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            comments.push((post, id));
        }
    }
    for (post, parent) in comments.iter().step_by(2) {
        let replier = sessions.choose(&mut rng).unwrap();
        app.add_comment(replier, *post, Some(*parent), "A reply.")
            .await
            .data();
    }
    // Edits, a retag, an unpublish, a deletion, a rename.
    for (author, post) in published.iter().take(3) {
        let tags: Vec<&str> = TAGS.choose_multiple(&mut rng, 2).copied().collect();
        app.graphql("mutation($input: EditPostInput!) { editPost(input: $input) { version } }")
            .variables(json!({"input": {"id": post, "title": "Edited title", "tags": tags}}))
            .bearer(&sessions[*author].access_token)
            .send()
            .await
            .data();
    }
    let (author, post) = published[3];
    app.graphql("mutation($id: ID!) { unpublishPost(id: $id) { version } }")
        .variables(json!({"id": post}))
        .bearer(&sessions[author].access_token)
        .send()
        .await
        .data();
    let (author, post) = drafts[0];
    app.graphql("mutation($id: ID!) { deletePost(id: $id) { version } }")
        .variables(json!({"id": post}))
        .bearer(&sessions[author].access_token)
        .send()
        .await
        .data();
    app.graphql(r#"mutation { updateProfile(input: {displayName: "Renamed Writer", bio: "Writes."}) { version } }"#)
        .bearer(&sessions[0].access_token)
        .send()
        .await
        .data();
}

fn metadata() -> EventMetadata {
    let command_id = Uuid::now_v7();
    EventMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor_id: None,
        traceparent: None,
    }
}

async fn append(
    pool: &PgPool,
    stream_id: Uuid,
    stream_type: StreamType,
    base: i32,
    events: Vec<DomainEvent>,
) {
    let mut transaction = pool.begin().await.unwrap();
    command_service::event_store::append(
        &mut transaction,
        stream_id,
        stream_type,
        base,
        &events,
        &metadata(),
        &Default::default(),
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
}

/// Straight into the event store, fast: `users` users, each with a post they
/// edit and comment on, `rounds` times. Valid event sequences, no commands.
pub async fn append_load(pool: &PgPool, users: usize, rounds: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut written = 0;
    let mut writers = Vec::new();
    for index in 0..users {
        let (user, post) = (Uuid::now_v7(), Uuid::now_v7());
        let handle = format!("load{seed}_{index}");
        append(
            pool,
            user,
            StreamType::User,
            0,
            vec![
                UserEvent::Registered(UserRegistered {
                    email: format!("{handle}@example.com"),
                    handle: handle.clone(),
                    display_name: handle.clone(),
                    role: Role::User,
                })
                .into(),
            ],
        )
        .await;
        append(
            pool,
            post,
            StreamType::Post,
            0,
            vec![
                PostEvent::Created(PostCreated {
                    author_id: user,
                    author_handle: handle.clone(),
                    slug: handle.clone(),
                    title: format!("Load post {index}"),
                    body: "Some *markdown* body.".into(),
                    tags: vec![TAGS[index % TAGS.len()].to_owned()],
                })
                .into(),
                PostEvent::Published(PostPublished {}).into(),
            ],
        )
        .await;
        written += 3;
        writers.push((user, post));
    }
    let mut versions = vec![(1, 2); users];
    for round in 0..rounds {
        for (index, (user, post)) in writers.iter().enumerate() {
            match rng.random_range(0..3) {
                0 => {
                    append(
                        pool,
                        *user,
                        StreamType::User,
                        versions[index].0,
                        vec![
                            UserEvent::ProfileUpdated(UserProfileUpdated {
                                display_name: format!("Writer {index} round {round}"),
                                bio: None,
                            })
                            .into(),
                        ],
                    )
                    .await;
                    versions[index].0 += 1;
                }
                1 => {
                    append(
                        pool,
                        *post,
                        StreamType::Post,
                        versions[index].1,
                        vec![
                            PostEvent::Edited(PostEdited {
                                title: format!("Load post {index} round {round}"),
                                body: format!("Body of round {round}."),
                                tags: vec![TAGS[(index + round) % TAGS.len()].to_owned()],
                            })
                            .into(),
                        ],
                    )
                    .await;
                    versions[index].1 += 1;
                }
                _ => {
                    append(
                        pool,
                        Uuid::now_v7(),
                        StreamType::Comment,
                        0,
                        vec![
                            CommentEvent::Added(CommentAdded {
                                post_id: *post,
                                author_id: *user,
                                parent_id: None,
                                body: format!("Comment in round {round}"),
                            })
                            .into(),
                        ],
                    )
                    .await;
                }
            }
            written += 1;
        }
    }
    written
}
