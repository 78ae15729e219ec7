//! The query side of the contract: Relay connections by keyset, node(id),
//! filters and visibility, and no N+1.

use chronicle_schema::Role;
use chronicle_tests::{Session, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

const POSTS: &str = "query($first: Int, $after: String, $last: Int, $before: String, $filter: PostFilter, $order: PostOrder) {
  posts(first: $first, after: $after, last: $last, before: $before, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id title commentCount } }
    nodes { id }
  }
}";

async fn posts_page(app: &TestApp, variables: Value, session: Option<&Session>) -> Value {
    let request = app.graphql(POSTS).variables(variables);
    let response = match session {
        Some(session) => request.bearer(&session.access_token).send().await,
        None => request.send().await,
    };
    response.data()["posts"].clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Walks forward with `first`, then backward with `last`, and checks both
/// see every post once, in the same order.
async fn walk(app: &TestApp, order: &str, expected: usize) -> Vec<String> {
    let mut forward = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = posts_page(
            app,
            json!({"first": 4, "after": after, "order": order}),
            None,
        )
        .await;
        assert_eq!(page["totalCount"], expected);
        assert_eq!(page["pageInfo"]["hasPreviousPage"], !forward.is_empty());
        let page_ids = ids(&page);
        assert_eq!(page["nodes"].as_array().unwrap().len(), page_ids.len());
        forward.extend(page_ids);
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    let mut backward = Vec::new();
    let mut before = Value::Null;
    loop {
        let page = posts_page(
            app,
            json!({"last": 3, "before": before, "order": order}),
            None,
        )
        .await;
        let mut page_ids = ids(&page);
        page_ids.extend(backward);
        backward = page_ids;
        if page["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = page["pageInfo"]["startCursor"].clone();
    }
    let mut unique = forward.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        forward.len(),
        expected,
        "{order}: forward saw {} of {expected}",
        forward.len()
    );
    assert_eq!(unique.len(), expected, "{order}: an item appeared twice");
    assert_eq!(backward, forward, "{order}: backward differs from forward");
    forward
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_post_exactly_once_forward_and_backward_in_every_order() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let mut published = Vec::new();
    for number in 0..13 {
        published.push(
            app.published_post(&ada, &format!("Post {number}"), &["walk"])
                .await,
        );
    }
    // Some comments, so COMMENT_COUNT_DESC has ties and non-ties.
    for (index, post) in published.iter().enumerate().take(5) {
        for _ in 0..=index % 3 {
            app.add_comment(&ada, *post, None, "A comment").await.data();
        }
    }
    app.create_post(&ada, "A draft, never listed", &[]).await;

    let newest_first = walk(&app, "PUBLISHED_AT_DESC", 13).await;
    let oldest_first = walk(&app, "PUBLISHED_AT_ASC", 13).await;
    let mut reversed = oldest_first.clone();
    reversed.reverse();
    assert_eq!(newest_first, reversed);
    assert_eq!(newest_first[0], published[12].to_string());
    walk(&app, "UPDATED_AT_DESC", 13).await;
    let by_comments = walk(&app, "COMMENT_COUNT_DESC", 13).await;
    let first_page = posts_page(
        &app,
        json!({"first": 2, "order": "COMMENT_COUNT_DESC"}),
        None,
    )
    .await;
    assert_eq!(first_page["edges"][0]["node"]["commentCount"], 3);
    assert_eq!(by_comments.len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tags_comments_and_replies_are_connections_too() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    for index in 0..4 {
        app.signed_in(&format!("reader{index}")).await;
    }
    let post = app.published_post(&ada, "Hello", &["a", "b"]).await;
    app.published_post(&ada, "Again", &["a"]).await;
    let top: Uuid = app.add_comment(&ada, post, None, "Top").await.data()["addComment"]["comment"]
        ["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for index in 0..3 {
        app.add_comment(&ada, post, Some(top), &format!("Reply {index}"))
            .await
            .data();
    }
    app.add_comment(&ada, post, None, "Second top").await.data();

    let users = app.graphql("{ users(first: 2) { totalCount pageInfo { hasNextPage endCursor } nodes { handle } } }").send().await;
    assert_eq!(users.data()["users"]["totalCount"], 5);
    assert_eq!(users.data()["users"]["nodes"][0]["handle"], "ada");
    let next = app
        .graphql("query($after: String) { users(first: 10, after: $after) { nodes { handle } pageInfo { hasNextPage } } }")
        .variables(json!({"after": users.data()["users"]["pageInfo"]["endCursor"]}))
        .send()
        .await;
    assert_eq!(next.data()["users"]["nodes"].as_array().unwrap().len(), 3);

    let tags = app
        .graphql("{ tags(first: 1) { totalCount edges { cursor node { name postCount } } } }")
        .send()
        .await;
    assert_eq!(
        tags.data()["tags"]["edges"][0]["node"],
        json!({"name": "a", "postCount": 2})
    );
    let cursor = tags.data()["tags"]["edges"][0]["cursor"].clone();
    let rest = app
        .graphql("query($after: String) { tags(first: 5, after: $after) { nodes { name } } }")
        .variables(json!({"after": cursor}))
        .send()
        .await;
    assert_eq!(rest.data()["tags"]["nodes"], json!([{"name": "b"}]));

    let thread = app
        .graphql("query($id: ID!) { post(id: $id) { comments(first: 10) { totalCount nodes { body parent { id } replies(first: 2) { totalCount pageInfo { hasNextPage } nodes { body } } } } } }")
        .variables(json!({"id": post}))
        .send()
        .await;
    let comments = &thread.data()["post"]["comments"];
    assert_eq!(comments["totalCount"], 2, "top-level comments only");
    assert_eq!(comments["nodes"][0]["body"], "Top");
    assert_eq!(comments["nodes"][0]["replies"]["totalCount"], 3);
    assert_eq!(
        comments["nodes"][0]["replies"]["pageInfo"]["hasNextPage"],
        true
    );
    assert_eq!(
        comments["nodes"][0]["replies"]["nodes"][0]["body"],
        "Reply 0"
    );

    let by_author = app
        .graphql("{ user(handle: \"ada\") { posts(first: 10) { totalCount nodes { title } } } }")
        .send()
        .await;
    assert_eq!(by_author.data()["user"]["posts"]["totalCount"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_finds_users_posts_and_comments_but_no_hidden_ones() {
    let app = TestApp::spawn().await;
    let (ada_user, ada) = app.signed_in("ada").await;
    let post = app.published_post(&ada, "Public", &[]).await;
    let draft = app.create_post(&ada, "Private", &[]).await;
    let comment =
        app.add_comment(&ada, post, None, "Hi").await.data()["addComment"]["comment"]["id"].clone();
    let node = |id: Value| {
        app.graphql("query($id: ID!) { node(id: $id) { __typename id ... on Post { title } ... on User { handle } ... on Comment { body } } }")
            .variables(json!({"id": id}))
            .send()
    };
    assert_eq!(
        node(json!(ada_user.id)).await.data()["node"]["handle"],
        "ada"
    );
    assert_eq!(node(json!(post)).await.data()["node"]["__typename"], "Post");
    assert_eq!(node(comment).await.data()["node"]["body"], "Hi");
    assert_eq!(node(json!(draft)).await.data()["node"], Value::Null);
    assert_eq!(
        node(json!(Uuid::now_v7())).await.data()["node"],
        Value::Null
    );
    assert_eq!(
        node(json!("not-an-id")).await.error_code(),
        "BAD_USER_INPUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_lists_and_drafts_are_listed_only_for_who_may_see_them() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let (_, bob) = app.signed_in("bob").await;
    let (_, moderator) = app.signed_in_as("moderator", Role::Moderator).await;
    app.published_post(&ada, "Ada on rust", &["rust"]).await;
    app.published_post(&bob, "Bob on go", &["go"]).await;
    app.create_post(&ada, "Ada's draft", &[]).await;
    app.create_post(&bob, "Bob's draft", &[]).await;

    let by_ada = posts_page(&app, json!({"filter": {"authorHandle": "ada"}}), None).await;
    assert_eq!(by_ada["totalCount"], 1);
    let tagged = posts_page(&app, json!({"filter": {"tag": "GO"}}), None).await;
    assert_eq!(tagged["edges"][0]["node"]["title"], "Bob on go");
    let future = posts_page(
        &app,
        json!({"filter": {"publishedAfter": "2999-01-01T00:00:00Z"}}),
        None,
    )
    .await;
    assert_eq!(future["totalCount"], 0);

    let drafts = |session| posts_page(&app, json!({"filter": {"status": "DRAFT"}}), session);
    assert_eq!(drafts(None).await["totalCount"], 0);
    let own = drafts(Some(&ada)).await;
    assert_eq!(own["totalCount"], 1);
    assert_eq!(own["edges"][0]["node"]["title"], "Ada's draft");
    assert_eq!(drafts(Some(&moderator)).await["totalCount"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_authors_posts_leave_public_view_and_counts() {
    let app = TestApp::spawn().await;
    let (ada_user, ada) = app.signed_in("ada").await;
    let (_, admin) = app.signed_in_as("admin", Role::Admin).await;
    let post = app.published_post(&ada, "Soon hidden", &["hidden"]).await;

    let deactivated = app
        .graphql("mutation($id: ID!) { deactivateUser(id: $id) { consistencyToken } }")
        .variables(json!({"id": ada_user.id}))
        .bearer(&admin.access_token)
        .send()
        .await;
    let token = deactivated.data()["deactivateUser"]["consistencyToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let public = app
        .graphql("query($id: ID!) { post(id: $id) { title } posts { totalCount } tags { totalCount } user(handle: \"ada\") { active postCount } }")
        .variables(json!({"id": post}))
        .header("x-consistency-token", &token)
        .send()
        .await;
    assert_eq!(public.data()["post"], Value::Null);
    assert_eq!(public.data()["posts"]["totalCount"], 0);
    assert_eq!(public.data()["tags"]["totalCount"], 0);
    assert_eq!(
        public.data()["user"],
        json!({"active": false, "postCount": 0})
    );
    // Moderators and admins still see it.
    let as_admin = app
        .graphql("query($id: ID!) { post(id: $id) { title } }")
        .variables(json!({"id": post}))
        .bearer(&admin.access_token)
        .send()
        .await;
    assert_eq!(as_admin.data()["post"]["title"], "Soon hidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_posts_with_authors_and_comment_counts_take_a_constant_few_statements() {
    let app = TestApp::spawn().await;
    let mut sessions = Vec::new();
    for index in 0..10 {
        sessions.push(app.signed_in(&format!("author{index}")).await.1);
    }
    for number in 0..50 {
        let session = &sessions[number % sessions.len()];
        app.published_post(session, &format!("Post {number}"), &[])
            .await;
    }
    let app = &app;
    let statements = |first: u32| async move {
        let response = app
            .graphql("query($first: Int) { posts(first: $first) { nodes { title commentCount author { handle displayName postCount } } } }")
            .variables(json!({"first": first}))
            .header("x-query-diagnostics", "1")
            .send()
            .await;
        assert_eq!(
            response.data()["posts"]["nodes"].as_array().unwrap().len(),
            first as usize
        );
        response.body["extensions"]["diagnostics"]["sqlStatements"]
            .as_u64()
            .unwrap()
    };
    let for_fifty = statements(50).await;
    let for_five = statements(5).await;
    // One for the page of posts, one for all their authors: not one per post
    // (51). On a loaded machine the loader's batching window can close before
    // every author is asked for, splitting its batch in two: still constant.
    assert!(for_fifty <= 3, "{for_fifty} statements for 50 posts");
    assert!(for_five <= 3, "{for_five} statements for 5 posts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_say_how_fresh_the_projections_they_read_are() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    app.published_post(&ada, "Fresh", &[]).await;
    app.drain_search().await;
    chronicle_tests::eventually(
        std::time::Duration::from_secs(10),
        "freshness in extensions",
        || async {
            let response = app
                .graphql("{ posts { totalCount } search(query: \"fresh\") { totalCount } }")
                .send()
                .await;
            let freshness = &response.body["extensions"]["freshness"];
            freshness["readModels"]["state"] == "LIVE"
                && freshness["search"]["lagEvents"].is_number()
        },
    )
    .await;
    let plain = app.graphql("{ posts { totalCount } }").send().await;
    assert!(
        plain.body["extensions"]["freshness"]["search"].is_null(),
        "search was not read"
    );
}

/// A token for a write that never happened is refused at once, not waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_token_past_the_streams_last_version_is_refused_at_once() {
    use chronicle_schema::consistency::ConsistencyToken;
    use chronicle_schema::events::StreamType;
    let app = TestApp::spawn().await;
    let (ada, _) = app.signed_in("ada").await;
    for (stream_id, version) in [(ada.id, 999_999), (uuid::Uuid::now_v7(), 1)] {
        let forged = ConsistencyToken {
            stream_type: StreamType::User,
            stream_id,
            version,
        };
        let started = std::time::Instant::now();
        let response = app
            .graphql("{ posts { totalCount } }")
            .header("x-consistency-token", &forged.to_string())
            .send()
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT");
        assert!(response.error()["extensions"]["fields"]["X-Consistency-Token"].is_string());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "refused after {:?}",
            started.elapsed()
        );
    }
}
