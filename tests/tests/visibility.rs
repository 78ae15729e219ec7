//! One visibility rule, on every path that reaches a post, a comment or a
//! user: a draft is seen only by its author and moderators, a deleted post by
//! no one, a comment exactly when its post is, an email only by its owner and
//! admins.
//!
//! The paths are found by walking the schema (introspection), so a field added
//! later that returns a Post, Comment or User fails this test until it has a
//! probe here.

use std::collections::{BTreeMap, BTreeSet};

use chronicle_schema::Role;
use chronicle_tests::{Session, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "SECRET-DRAFT-BODY";
const GONE: &str = "DELETED-POST-BODY";

/// The types whose values the rule guards.
const GUARDED: [&str; 3] = ["Post", "Comment", "User"];

struct World {
    alice: Session,
    bob: Session,
    moderator: Session,
    /// Published, commented on by Bob and replied to by Alice, then
    /// unpublished and edited by Alice.
    draft: Uuid,
    comment: Uuid,
    reply: Uuid,
    /// Published, commented on by Bob, then deleted.
    deleted: Uuid,
    deleted_comment: Uuid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Viewer {
    Anonymous,
    Bob,
    Alice,
    Moderator,
}

const VIEWERS: [Viewer; 4] = [
    Viewer::Anonymous,
    Viewer::Bob,
    Viewer::Alice,
    Viewer::Moderator,
];

impl Viewer {
    fn may_see_drafts(self) -> bool {
        matches!(self, Viewer::Alice | Viewer::Moderator)
    }
}

impl World {
    async fn build(app: &TestApp) -> World {
        let (_, alice) = app.signed_in("alice").await;
        let (_, bob) = app.signed_in("bob").await;
        let (_, moderator) = app.signed_in_as("mod", Role::Moderator).await;
        let draft = app
            .published_post(&alice, "Soon a draft", &["guarded"])
            .await;
        let comment = id_of(&app.add_comment(&bob, draft, None, "bob's comment").await);
        let reply = id_of(
            &app.add_comment(&alice, draft, Some(comment), "alice's reply")
                .await,
        );
        app.graphql("mutation($id: ID!) { unpublishPost(id: $id) { version } }")
            .variables(json!({"id": draft}))
            .bearer(&alice.access_token)
            .send()
            .await
            .data();
        app.graphql("mutation($id: ID!, $body: String!) { editPost(input: {id: $id, body: $body}) { version } }")
            .variables(json!({"id": draft, "body": SECRET}))
            .bearer(&alice.access_token)
            .send()
            .await
            .data();
        let deleted = app
            .published_post(&alice, "Soon deleted", &["guarded"])
            .await;
        app.graphql("mutation($id: ID!, $body: String!) { editPost(input: {id: $id, body: $body}) { version } }")
            .variables(json!({"id": deleted, "body": GONE}))
            .bearer(&alice.access_token)
            .send()
            .await
            .data();
        let deleted_comment = id_of(
            &app.add_comment(&bob, deleted, None, "on a post soon gone")
                .await,
        );
        app.graphql("mutation($id: ID!) { deletePost(id: $id) { version } }")
            .variables(json!({"id": deleted}))
            .bearer(&alice.access_token)
            .send()
            .await
            .data();
        app.drain().await;
        app.drain_search().await;
        World {
            alice,
            bob,
            moderator,
            draft,
            comment,
            reply,
            deleted,
            deleted_comment,
        }
    }

    fn session(&self, viewer: Viewer) -> Option<&Session> {
        match viewer {
            Viewer::Anonymous => None,
            Viewer::Bob => Some(&self.bob),
            Viewer::Alice => Some(&self.alice),
            Viewer::Moderator => Some(&self.moderator),
        }
    }
}

fn id_of(response: &chronicle_tests::GraphqlResponse) -> Uuid {
    response.data()["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn ask(app: &TestApp, world: &World, viewer: Viewer, query: &str, variables: Value) -> Value {
    let mut request = app.graphql(query).variables(variables);
    if let Some(session) = world.session(viewer) {
        request = request.bearer(&session.access_token);
    }
    request.send().await.body
}

/// Nothing of the deleted post, ever; nothing of the draft but for its
/// author and moderators.
fn assert_guarded(viewer: Viewer, probe: &str, body: &Value) {
    let text = body.to_string();
    assert!(
        !text.contains(GONE),
        "{probe}: {viewer:?} saw the deleted post: {text}"
    );
    if !viewer.may_see_drafts() {
        assert!(
            !text.contains(SECRET),
            "{probe}: {viewer:?} saw the draft: {text}"
        );
        assert!(
            !text.contains("alice's reply"),
            "{probe}: {viewer:?} saw a comment of the draft: {text}"
        );
    }
}

/// The fields of the schema that return a guarded type (directly, in a list,
/// or through a connection or payload), except the plumbing of connections.
async fn reaching_fields(app: &TestApp) -> BTreeSet<String> {
    let introspection = app
        .graphql(
            "{ __schema { types { name kind possibleTypes { name } fields { name type { name kind ofType { name kind ofType { name kind ofType { name kind } } } } } } } }",
        )
        .send()
        .await;
    let types = introspection.data()["__schema"]["types"]
        .as_array()
        .unwrap()
        .clone();
    let named = |field: &Value| -> String {
        let mut current = &field["type"];
        while current["name"].is_null() {
            current = &current["ofType"];
        }
        current["name"].as_str().unwrap().to_owned()
    };
    let fields_of: BTreeMap<String, Vec<(String, String)>> = types
        .iter()
        .filter(|kind| {
            kind["kind"] == "OBJECT" && !kind["name"].as_str().unwrap().starts_with("__")
        })
        .map(|kind| {
            let fields = kind["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|field| (field["name"].as_str().unwrap().to_owned(), named(field)))
                .collect();
            (kind["name"].as_str().unwrap().to_owned(), fields)
        })
        .collect();
    // Interfaces and unions hold what their members hold (`Node`).
    let members: BTreeMap<String, Vec<String>> = types
        .iter()
        .filter(|kind| kind["possibleTypes"].is_array())
        .map(|kind| {
            let names = kind["possibleTypes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|member| member["name"].as_str().unwrap().to_owned())
                .collect();
            (kind["name"].as_str().unwrap().to_owned(), names)
        })
        .collect();
    // Types that hold a guarded value somewhere inside.
    let mut holding: BTreeSet<String> = GUARDED.iter().map(|name| name.to_string()).collect();
    loop {
        let before = holding.len();
        for (name, fields) in &fields_of {
            if fields.iter().any(|(_, target)| holding.contains(target)) {
                holding.insert(name.clone());
            }
        }
        for (name, names) in &members {
            if names.iter().any(|member| holding.contains(member)) {
                holding.insert(name.clone());
            }
        }
        if holding.len() == before {
            break;
        }
    }
    let plumbing = |owner: &str| {
        owner.ends_with("Connection") || owner.ends_with("Edge") && owner != "SearchEdge"
    };
    fields_of
        .iter()
        .filter(|(owner, _)| !plumbing(owner))
        .flat_map(|(owner, fields)| {
            fields
                .iter()
                .filter(|(_, target)| holding.contains(target))
                .map(move |(field, _)| format!("{owner}.{field}"))
        })
        .collect()
}

const EMAIL_PROBE: &str = "{ user(handle: \"alice\") { email posts { nodes { id } } } users { nodes { handle email } } viewer { email } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_to_a_post_comment_or_user_applies_the_one_visibility_rule() {
    let app = TestApp::spawn().await;
    let world = World::build(&app).await;
    let ids = json!({
        "draft": world.draft, "comment": world.comment, "reply": world.reply,
        "deleted": world.deleted, "deletedComment": world.deleted_comment,
    });

    // Each probe reaches hidden content through the named fields, for every viewer.
    let probes: Vec<(&[&str], &str)> = vec![
        (
            &["Query.post", "Post.author", "Post.comments", "Comment.replies", "Comment.author"],
            "query($draft: ID!, $deleted: ID!) {
               a: post(id: $draft) { body author { handle } comments { nodes { body author { handle } replies { nodes { body } } } } }
               b: post(id: $deleted) { body }
             }",
        ),
        (
            &["Query.node", "Comment.post", "Comment.parent"],
            "query($draft: ID!, $comment: ID!, $reply: ID!, $deleted: ID!, $deletedComment: ID!) {
               p: node(id: $draft) { id ... on Post { body } }
               c: node(id: $comment) { id ... on Comment { body post { body } } }
               r: node(id: $reply) { id ... on Comment { body parent { body } post { body } } }
               d: node(id: $deleted) { id ... on Post { body } }
               dc: node(id: $deletedComment) { id ... on Comment { post { body } } }
             }",
        ),
        (
            &["Query.posts", "User.posts"],
            "{ posts(filter: {status: DRAFT}) { totalCount nodes { body } }
               published: posts { totalCount nodes { body } }
               tagged: posts(filter: {tag: \"guarded\"}) { totalCount nodes { body } }
               user(handle: \"alice\") { postCount posts { nodes { body } } } }",
        ),
        (
            &["Query.search", "SearchEdge.node"],
            "{ a: search(query: \"secret draft body\") { totalCount edges { node { body } } }
               b: search(query: \"deleted post body\") { totalCount edges { node { body } } }
               c: search(query: \"guarded\") { totalCount edges { node { body } } } }",
        ),
        (&["Query.user", "Query.users", "Query.viewer"], EMAIL_PROBE),
    ];
    let mut probed: BTreeSet<&str> = BTreeSet::new();
    for (fields, query) in &probes {
        probed.extend(fields.iter());
        for viewer in VIEWERS {
            let body = ask(&app, &world, viewer, query, ids.clone()).await;
            assert_guarded(viewer, fields[0], &body);
            if fields[0] == "Query.post" {
                let draft = &body["data"]["a"];
                assert_eq!(
                    draft.is_null(),
                    !viewer.may_see_drafts(),
                    "{viewer:?}: {body}"
                );
                if viewer.may_see_drafts() {
                    assert_eq!(
                        draft["comments"]["nodes"][0]["replies"]["nodes"][0]["body"],
                        "alice's reply"
                    );
                }
            }
            if fields[0] == "Query.node" {
                let data = &body["data"];
                for alias in ["p", "c", "r"] {
                    assert_eq!(
                        data[alias].is_null(),
                        !viewer.may_see_drafts(),
                        "{alias} for {viewer:?}: {body}"
                    );
                }
                assert!(data["d"].is_null() && data["dc"].is_null(), "{body}");
            }
            if fields[0] == "Query.posts" {
                let drafts = body["data"]["posts"]["totalCount"].as_i64().unwrap();
                assert_eq!(drafts > 0, viewer.may_see_drafts(), "{viewer:?}: {body}");
                assert_eq!(body["data"]["published"]["totalCount"], 0, "{body}");
                assert_eq!(body["data"]["tagged"]["totalCount"], 0, "{body}");
                assert_eq!(body["data"]["user"]["postCount"], 0, "{body}");
            }
            if fields[0] == "Query.search" {
                for alias in ["a", "b", "c"] {
                    assert_eq!(body["data"][alias]["totalCount"], 0, "{alias}: {body}");
                }
            }
            if fields[0] == "Query.user" {
                // An email only for its owner (Alice here; no admin among the viewers).
                let own = viewer == Viewer::Alice;
                assert_eq!(
                    body["data"]["user"]["email"].is_string(),
                    own,
                    "{viewer:?}: {body}"
                );
                for user in body["data"]["users"]["nodes"].as_array().unwrap() {
                    let mine = own && user["handle"] == "alice"
                        || viewer == Viewer::Bob && user["handle"] == "bob"
                        || viewer == Viewer::Moderator && user["handle"] == "mod";
                    assert_eq!(user["email"].is_string(), mine, "{viewer:?}: {body}");
                }
            }
        }
    }

    // Mutations read back through the same rule.
    probed.extend(["Mutation.editComment", "CommentPayload.comment"]);
    let edited = app
        .graphql("mutation($id: ID!) { editComment(input: {id: $id, body: \"edited\"}) { comment { body post { status body } } } }")
        .variables(json!({"id": world.comment}))
        .bearer(&world.bob.access_token)
        .send()
        .await;
    assert_guarded(Viewer::Bob, "Mutation.editComment", &edited.body);
    assert_eq!(edited.data()["editComment"]["comment"], Value::Null);
    let on_deleted = app
        .graphql("mutation($id: ID!) { editComment(input: {id: $id, body: \"edited\"}) { comment { post { body } } } }")
        .variables(json!({"id": world.deleted_comment}))
        .bearer(&world.bob.access_token)
        .send()
        .await;
    assert_guarded(Viewer::Bob, "Mutation.editComment", &on_deleted.body);

    probed.extend([
        "Mutation.addComment",
        "Mutation.editPost",
        "Mutation.publishPost",
        "Mutation.unpublishPost",
        "PostPayload.post",
    ]);
    for mutation in [
        "mutation($draft: ID!) { addComment(input: {postId: $draft, body: \"hi\"}) { comment { post { body } } } }",
        "mutation($draft: ID!) { editPost(input: {id: $draft, title: \"mine now\"}) { post { body } } }",
        "mutation($draft: ID!) { publishPost(id: $draft) { post { body } } }",
        "mutation($draft: ID!) { unpublishPost(id: $draft) { post { body } } }",
    ] {
        let response = app
            .graphql(mutation)
            .variables(ids.clone())
            .bearer(&world.bob.access_token)
            .send()
            .await;
        assert_guarded(Viewer::Bob, mutation, &response.body);
        assert!(
            response.body["errors"].is_array(),
            "Bob may not: {}",
            response.body
        );
    }
    // The moderator may unpublish, and reads back what moderators may see.
    let moderated = app
        .graphql("mutation($draft: ID!) { unpublishPost(id: $draft) { post { body } } }")
        .variables(ids.clone())
        .bearer(&world.moderator.access_token)
        .send()
        .await;
    assert_guarded(Viewer::Moderator, "Mutation.unpublishPost", &moderated.body);

    // Paths that reach only the caller's own user or content, or only public
    // content; each says why it needs no probe of hidden content.
    let by_construction: BTreeMap<&str, &str> = BTreeMap::from([
        ("Mutation.registerUser", "returns the new user to themself"),
        ("Mutation.login", "returns the signed-in user to themself"),
        (
            "Mutation.refreshToken",
            "returns the signed-in user to themself",
        ),
        ("Mutation.updateProfile", "returns the caller's own user"),
        ("Mutation.changeRole", "admins only; emails are for admins"),
        ("Mutation.deactivateUser", "the user themself or an admin"),
        ("Mutation.createPost", "returns the caller's own new draft"),
        (
            "UserPayload.user",
            "see the user mutations above; email by the rule of User.email",
        ),
        ("AuthPayload.user", "the signed-in user themself"),
        (
            "Subscription.postPublished",
            "pushes public posts only (subscriptions::*)",
        ),
        (
            "Subscription.commentAdded",
            "pushes comments of public posts only (subscriptions::*)",
        ),
    ]);
    let unprobed: Vec<String> = reaching_fields(&app)
        .await
        .into_iter()
        .filter(|field| {
            !probed.contains(field.as_str()) && !by_construction.contains_key(field.as_str())
        })
        .collect();
    assert!(
        unprobed.is_empty(),
        "these fields reach a Post, Comment or User and have no visibility probe here: {unprobed:?}"
    );
}
