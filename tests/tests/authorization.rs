//! Who may do what: every mutation against every kind of caller.

use chronicle_schema::Role;
use chronicle_tests::{Session, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    /// A signed-in user who does not own the target.
    Other,
    /// The target's author, or the user themself.
    Owner,
    Moderator,
    Admin,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Other,
    Who::Owner,
    Who::Moderator,
    Who::Admin,
];

struct Callers {
    other: Session,
    moderator: Session,
    admin: Session,
}

/// Runs `mutation` for `who` against a fresh target; answers "OK" or the error code.
async fn attempt(app: &TestApp, callers: &Callers, mutation: &str, who: Who) -> String {
    let (owner_user, owner) = app
        .signed_in(&format!(
            "owner_{}",
            &Uuid::now_v7().simple().to_string()[20..]
        ))
        .await;
    let post = app.published_post(&owner, "Target", &["t"]).await;
    let comment: Uuid =
        app.add_comment(&owner, post, None, "Mine").await.data()["addComment"]["comment"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let (query, variables) = match mutation {
        "updateProfile" => (
            "mutation { updateProfile(input: {displayName: \"Renamed\"}) { version } }",
            json!({}),
        ),
        "changeRole" => (
            "mutation($id: ID!) { changeRole(input: {userId: $id, role: MODERATOR}) { version } }",
            json!({"id": owner_user.id}),
        ),
        "deactivateUser" => (
            "mutation($id: ID!) { deactivateUser(id: $id) { version } }",
            json!({"id": owner_user.id}),
        ),
        "createPost" => (
            "mutation { createPost(input: {title: \"New\", body: \"b\"}) { version } }",
            json!({}),
        ),
        "editPost" => (
            "mutation($id: ID!) { editPost(input: {id: $id, title: \"Edited\"}) { version } }",
            json!({"id": post}),
        ),
        "publishPost" => {
            // A draft of the owner's, so publishing changes something.
            let draft = app.create_post(&owner, "Draft", &[]).await;
            (
                "mutation($id: ID!) { publishPost(id: $id) { version } }",
                json!({"id": draft}),
            )
        }
        "unpublishPost" => (
            "mutation($id: ID!) { unpublishPost(id: $id) { version } }",
            json!({"id": post}),
        ),
        "deletePost" => (
            "mutation($id: ID!) { deletePost(id: $id) { version } }",
            json!({"id": post}),
        ),
        "addComment" => (
            "mutation($id: ID!) { addComment(input: {postId: $id, body: \"Hi\"}) { version } }",
            json!({"id": post}),
        ),
        "editComment" => (
            "mutation($id: ID!) { editComment(input: {id: $id, body: \"Edited\"}) { version } }",
            json!({"id": comment}),
        ),
        "deleteComment" => (
            "mutation($id: ID!) { deleteComment(id: $id) { version } }",
            json!({"id": comment}),
        ),
        other => panic!("no case for {other}"),
    };
    let token = match who {
        Who::Anonymous => None,
        Who::Other => Some(&callers.other),
        Who::Owner => Some(&owner),
        Who::Moderator => Some(&callers.moderator),
        Who::Admin => Some(&callers.admin),
    };
    let request = app.graphql(query).variables(variables);
    let response = match token {
        Some(session) => request.bearer(&session.access_token).send().await,
        None => request.send().await,
    };
    match response.body.get("errors") {
        None => "OK".to_owned(),
        Some(_) => response.error_code().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_allows_exactly_the_callers_it_should() {
    let app = TestApp::spawn().await;
    let callers = Callers {
        other: app.signed_in("other").await.1,
        moderator: app.signed_in_as("moderator", Role::Moderator).await.1,
        admin: app.signed_in_as("admin", Role::Admin).await.1,
    };
    const U: &str = "UNAUTHENTICATED";
    const F: &str = "FORBIDDEN";
    // Columns: anonymous, another user, the owner, a moderator, an admin.
    let matrix: [(&str, [&str; 5]); 11] = [
        ("updateProfile", [U, "OK", "OK", "OK", "OK"]),
        ("changeRole", [U, F, F, F, "OK"]),
        ("deactivateUser", [U, F, "OK", F, "OK"]),
        ("createPost", [U, "OK", "OK", "OK", "OK"]),
        ("editPost", [U, F, "OK", F, F]),
        ("publishPost", [U, F, "OK", F, F]),
        ("unpublishPost", [U, F, "OK", "OK", "OK"]),
        ("deletePost", [U, F, "OK", F, "OK"]),
        ("addComment", [U, "OK", "OK", "OK", "OK"]),
        ("editComment", [U, F, "OK", F, F]),
        ("deleteComment", [U, F, "OK", "OK", "OK"]),
    ];
    let mut mismatches = Vec::new();
    for (mutation, expected) in matrix {
        for (who, expected) in EVERYONE.iter().zip(expected) {
            let outcome = attempt(&app, &callers, mutation, *who).await;
            if outcome != expected {
                mismatches.push(format!(
                    "{mutation} as {who:?}: expected {expected}, got {outcome}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_moderator_loses_their_powers_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;
    let (moderator_user, moderator) = app.signed_in_as("moderator", Role::Moderator).await;
    let (_, author) = app.signed_in("ada").await;
    let post = app.published_post(&author, "Hello", &[]).await;

    let demoted = app
        .graphql(
            "mutation($id: ID!) { changeRole(input: {userId: $id, role: USER}) { user { role } } }",
        )
        .variables(json!({"id": moderator_user.id}))
        .bearer(&admin.access_token)
        .send()
        .await;
    assert_eq!(demoted.data()["changeRole"]["user"]["role"], "USER");

    // The moderator's token still says MODERATOR; the event store says otherwise.
    let response = app
        .graphql("mutation($id: ID!) { unpublishPost(id: $id) { version } }")
        .variables(json!({"id": post}))
        .bearer(&moderator.access_token)
        .send()
        .await;
    assert_eq!(response.error_code(), "FORBIDDEN");
    let _: &Value = &response.body;
}
