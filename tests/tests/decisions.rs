//! A command decides on what it read and appends in one statement, which
//! checks that nothing it read has moved. These race a command against the
//! change that would make it wrong, and assert on the event store's order:
//! what one statement checked can never be overtaken.

use std::collections::HashSet;

use chronicle_schema::events::UserEvent;
use chronicle_schema::{DomainEvent, Role};
use chronicle_tests::{Session, TestApp};
use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

/// The position of a stream's event of this type (the first one).
async fn position_of(app: &TestApp, stream_id: Uuid, event_type: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT min(position) FROM event_store.events WHERE stream_id = $1 AND event_type = $2",
    )
    .bind(stream_id)
    .bind(event_type)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Sends a command straight to one command-service.
async fn command(app: &TestApp, url: &str, session: &Session, command: Value) -> Value {
    let envelope = json!({
        "commandId": Uuid::now_v7(), "correlationId": Uuid::now_v7(), "command": command,
    });
    send(app, url, session, &envelope).await
}

/// Posts a command envelope to the command API at `url`; its reply.
async fn send(app: &TestApp, url: &str, session: &Session, envelope: &Value) -> Value {
    let response = app
        .http
        .post(format!("{url}/v1/commands"))
        .header("x-service-token", &app.command_api_token)
        .bearer_auth(&session.access_token)
        .json(envelope)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// A command sent as a careful client sends it: with an idempotency key,
/// and once more with the same key if the service answers UNAVAILABLE (an
/// overloaded machine can time a request out waiting for a connection;
/// the key makes a retry of one that did commit return its first outcome).
/// Once only: a lock-order regression (deadlocks, also UNAVAILABLE) must
/// not hide behind retries; the service already appends a failed batch's
/// commands one by one.
async fn command_retried(app: &TestApp, session: &Session, command: Value) -> Value {
    let key = Uuid::now_v7().to_string();
    let mut reply = Value::Null;
    for _ in 0..2 {
        let envelope = json!({
            "commandId": Uuid::now_v7(), "correlationId": Uuid::now_v7(),
            "idempotencyKey": key, "command": command,
        });
        reply = send(app, app.command_url(), session, &envelope).await;
        if reply["code"] != "UNAVAILABLE" {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    reply
}

/// Only published posts take comments: a comment and an unpublish of its
/// post, sent together, never end with the comment appended after the
/// unpublish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_racing_an_unpublish_never_lands_on_an_unpublished_post() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("author").await;
    let (_, reader) = app.signed_in("reader").await;
    let mut posts = Vec::new();
    for index in 0..15 {
        let post = command(
            &app,
            app.command_url(),
            &author,
            json!({"type": "CreatePost", "title": format!("Post {index}"), "body": "b", "tags": [], "slug": null}),
        )
        .await["streamId"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap();
        command(
            &app,
            app.command_url(),
            &author,
            json!({"type": "PublishPost", "postId": post, "expectedVersion": null}),
        )
        .await;
        posts.push(post);
    }

    let races = posts.iter().map(|post| {
        let (app, author, reader) = (&app, &author, &reader);
        async move {
            let comment = command(
                app,
                app.command_url(),
                reader,
                json!({"type": "AddComment", "postId": post, "body": "first!", "parentId": null}),
            );
            let unpublish = command(
                app,
                app.command_url(),
                author,
                json!({"type": "UnpublishPost", "postId": post, "expectedVersion": null}),
            );
            let (comment, _) = futures::join!(comment, unpublish);
            comment["streamId"]
                .as_str()
                .map(|id| id.parse::<Uuid>().unwrap())
        }
    });
    let comments = join_all(races).await;

    let mut landed = 0;
    for (post, comment) in posts.iter().zip(comments) {
        let unpublished = position_of(&app, *post, "PostUnpublished").await.unwrap();
        if let Some(comment) = comment {
            landed += 1;
            let added = position_of(&app, comment, "CommentAdded").await.unwrap();
            assert!(
                added < unpublished,
                "a comment was appended after its post was unpublished"
            );
        }
    }
    eprintln!(
        "{landed} of {} comments landed before the unpublish",
        posts.len()
    );
}

/// A role or an account is checked where the command appends: a post sent
/// together with its author's deactivation is refused, or appended before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_racing_its_authors_deactivation_lands_before_it_or_not_at_all() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;
    let mut authors = Vec::new();
    for index in 0..12 {
        authors.push(app.signed_in(&format!("author{index}")).await);
    }

    let races = authors.iter().map(|(user, session)| {
        let (app, admin) = (&app, &admin);
        async move {
            let post = command(
                app,
                app.command_url(),
                session,
                json!({"type": "CreatePost", "title": "Racing", "body": "b", "tags": [], "slug": null}),
            );
            let deactivate = command(
                app,
                app.command_url(),
                admin,
                json!({"type": "DeactivateUser", "userId": user.id, "expectedVersion": null}),
            );
            let (post, _) = futures::join!(post, deactivate);
            post["streamId"].as_str().map(|id| id.parse::<Uuid>().unwrap())
        }
    });
    let posts = join_all(races).await;

    for ((user, _), post) in authors.iter().zip(posts) {
        let deactivated = position_of(&app, user.id, "UserDeactivated").await.unwrap();
        if let Some(post) = post {
            let created = position_of(&app, post, "PostCreated").await.unwrap();
            assert!(
                created < deactivated,
                "a post was appended after its author was deactivated"
            );
        }
    }
}

/// Slug candidates are claimed by the append itself: concurrent posts with
/// one title all succeed, each with a slug of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_with_one_title_all_get_a_slug_of_their_own() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (_, bob) = app.signed_in("bob").await;
    let creates = (0..16).map(|index| {
        let session = if index % 2 == 0 { &ada } else { &bob };
        app.graphql(
            "mutation($input: CreatePostInput!) { createPost(input: $input) { post { slug } } }",
        )
        .variables(json!({"input": {"title": "Event sourcing, again", "body": "b", "tags": []}}))
        .bearer(&session.access_token)
        .send()
    });
    let responses = join_all(creates).await;
    let slugs: HashSet<String> = responses
        .iter()
        .map(|response| {
            response.data()["createPost"]["post"]["slug"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(slugs.len(), 16, "{slugs:?}");
    assert!(slugs.contains("event-sourcing-again"));
}

/// Each instance keeps the aggregates it read; one that is behind (another
/// instance wrote since) still decides on the store's state: a change
/// without an expected version is kept, one with the version the other
/// instance answered is accepted, and a stale one is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_cache_is_behind_decides_on_the_stores_state() {
    let app = TestApp::spawn().await;
    let other = app.spawn_extra_command_service().await;
    let (ada, session) = app.signed_in("ada").await;
    let rename = |name: &str, expected: Option<i64>| json!({"type": "UpdateProfile", "displayName": name, "bio": null, "expectedVersion": expected});
    // Both instances read Ada at version 1.
    let first = command(&app, app.command_url(), &session, rename("Ada A", None)).await;
    assert_eq!(first["version"], 2, "{first}");
    let second = command(&app, other.url(), &session, rename("Ada B", None)).await;
    assert_eq!(second["version"], 3, "{second}");
    // The first instance last saw version 2; the store is at 3.
    let third = command(&app, app.command_url(), &session, rename("Ada C", Some(3))).await;
    assert_eq!(third["version"], 4, "{third}");
    let stale = command(&app, other.url(), &session, rename("Ada D", Some(3))).await;
    assert_eq!(stale["code"], "CONFLICT", "{stale}");
    let kept = command(&app, other.url(), &session, rename("Ada E", None)).await;
    assert_eq!(kept["version"], 5, "{kept}");

    let mut connection = app.pool.acquire().await.unwrap();
    let names: Vec<String> = command_service::event_store::read_stream(&mut connection, ada.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|recorded| match recorded.event {
            DomainEvent::User(UserEvent::ProfileUpdated(profile)) => Some(profile.display_name),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["Ada A", "Ada B", "Ada C", "Ada E"]);
}

/// What the cache says about the actor never outlives the store: an admin
/// demoted behind this instance's back (by the operator tool) cannot promote
/// themselves again through it, and a user promoted behind its back acts
/// with the new role at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_changed_behind_the_caches_back_applies_at_once() {
    let app = TestApp::spawn().await;
    let (admin, admin_session) = app.signed_in_as("admin", Role::Admin).await;
    let (user, user_session) = app.signed_in("user").await;
    let (other, _) = app.signed_in("other").await;
    // Both are cached by this instance, as they are now.
    for session in [&admin_session, &user_session] {
        let created = command(
            &app,
            app.command_url(),
            session,
            json!({"type": "CreatePost", "title": "Cached", "body": "b", "tags": [], "slug": null}),
        )
        .await;
        assert!(created["version"].is_number(), "{created}");
    }

    let (_, demoted_at) = command_service::operator::set_role(&app.pool, &admin.email, Role::User)
        .await
        .unwrap();
    let promote_self = command(
        &app,
        app.command_url(),
        &admin_session,
        json!({"type": "ChangeRole", "userId": admin.id, "role": "ADMIN", "expectedVersion": demoted_at}),
    )
    .await;
    assert_eq!(promote_self["code"], "FORBIDDEN", "{promote_self}");
    // Their own profile, at the version they were demoted to, is theirs to change.
    let renamed = command(
        &app,
        app.command_url(),
        &admin_session,
        json!({"type": "UpdateProfile", "displayName": "Former admin", "bio": null, "expectedVersion": demoted_at}),
    )
    .await;
    assert_eq!(renamed["version"], demoted_at + 1, "{renamed}");

    command_service::operator::set_role(&app.pool, &user.email, Role::Admin)
        .await
        .unwrap();
    let promoted = command(
        &app,
        app.command_url(),
        &user_session,
        json!({"type": "ChangeRole", "userId": other.id, "role": "MODERATOR", "expectedVersion": null}),
    )
    .await;
    assert_eq!(promoted["version"], 2, "{promoted}");
}

/// Many concurrent changes to a few streams, through the API: appends share
/// transactions (group commit), those that lose a race are decided again,
/// none is lost, and each stream reaches the bus in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_are_all_kept_and_reach_the_bus_in_order() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let mut posts = Vec::new();
    for index in 0..4 {
        posts.push(
            app.create_post(&session, &format!("Edited {index}"), &[])
                .await,
        );
    }
    let (app, session) = (&app, &session);
    let edits = posts.iter().flat_map(|post| {
        (0..10).map(move |edit| {
            command_retried(
                app,
                session,
                json!({"type": "EditPost", "postId": post, "title": format!("Edit {edit}"),
                       "body": null, "tags": null, "expectedVersion": null}),
            )
        })
    });
    let replies = join_all(edits).await;
    for reply in &replies {
        assert!(reply["version"].is_number(), "{reply}");
    }
    for post in &posts {
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM event_store.events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(post)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(versions, (1..=11).collect::<Vec<_>>());
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store.events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let messages = chronicle_tests::read_topic(
        &app.topic,
        total as usize,
        std::time::Duration::from_secs(30),
    )
    .await;
    let mut last = std::collections::HashMap::new();
    for message in &messages {
        let previous = last.entry(message.event.stream_id).or_insert(0);
        if message.event.version <= *previous {
            continue; // a redelivery
        }
        assert_eq!(
            message.event.version,
            *previous + 1,
            "stream {} jumped on the bus",
            message.event.stream_id
        );
        *previous = message.event.version;
    }
    for post in &posts {
        assert_eq!(last[post], 11);
    }
}
