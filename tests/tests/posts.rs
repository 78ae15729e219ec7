//! Writing posts: drafts, slugs, edits, publishing, deletion, and the read
//! models they keep (author counts, tags, author names).

use chronicle_tests::TestApp;
use serde_json::json;

const POST_FIELDS: &str = "id slug title body excerpt status tags commentCount publishedAt version
                           author { handle displayName postCount }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_post_is_a_draft_read_back_with_its_author_tags_and_slug() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;

    let response = app
        .graphql(&format!("mutation($input: CreatePostInput!) {{ createPost(input: $input) {{ post {{ {POST_FIELDS} }} version }} }}"))
        .variables(json!({"input": {
            "title": "Notes on the Analytical Engine",
            "body": "# Notes\n\nThe engine *weaves* algebraic patterns.",
            "tags": ["Computing", "history", "computing"],
        }}))
        .bearer(&session.access_token)
        .send()
        .await;

    let post = &response.data()["createPost"]["post"];
    assert_eq!(post["status"], "DRAFT");
    assert_eq!(post["slug"], "notes-on-the-analytical-engine");
    assert_eq!(post["tags"], json!(["computing", "history"]));
    assert_eq!(
        post["excerpt"],
        "Notes\nThe engine weaves algebraic patterns.".replace('\n', " ")
    );
    assert_eq!(post["publishedAt"], serde_json::Value::Null);
    assert_eq!(post["author"]["handle"], "ada");
    assert_eq!(post["author"]["postCount"], 0, "drafts are not counted");
    assert_eq!(response.data()["createPost"]["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slugs_are_unique_a_requested_one_conflicts_a_derived_one_gets_a_suffix() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let create = |title: &str, slug: Option<&str>| {
        app.graphql(
            "mutation($input: CreatePostInput!) { createPost(input: $input) { post { slug } } }",
        )
        .variables(json!({"input": {"title": title, "body": "b", "slug": slug}}))
        .bearer(&session.access_token)
        .send()
    };
    assert_eq!(
        create("Hello", None).await.data()["createPost"]["post"]["slug"],
        "hello"
    );
    // The title's slug is claimed alone first; once it is taken, the
    // numbered ones in order, then one with the post id's tail.
    for number in 2..=10 {
        assert_eq!(
            create("Hello", None).await.data()["createPost"]["post"]["slug"],
            format!("hello-{number}")
        );
    }
    let last = create("Hello", None).await;
    let last = last.data()["createPost"]["post"]["slug"].as_str().unwrap();
    let tail = last.strip_prefix("hello-").unwrap();
    assert!(
        tail.len() == 12 && tail.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{last}"
    );
    let taken = create("Other", Some("hello")).await;
    assert_eq!(taken.error_code(), "CONFLICT");
    assert_eq!(
        taken.error()["extensions"]["fields"]["slug"],
        "is already taken"
    );
    let invalid = create("Other", Some("Not A Slug!")).await;
    assert_eq!(invalid.error_code(), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_counts_the_post_for_its_author_and_tags_and_unpublishing_uncounts_it() {
    let app = TestApp::spawn().await;
    let (ada, session) = app.signed_in("ada").await;
    let post_id = app.create_post(&session, "Hello", &["rust", "cqrs"]).await;

    let published = app
        .graphql("mutation($id: ID!) { publishPost(id: $id) { post { status publishedAt author { postCount } } version } }")
        .variables(json!({"id": post_id}))
        .bearer(&session.access_token)
        .send()
        .await;
    let payload = &published.data()["publishPost"];
    assert_eq!(payload["post"]["status"], "PUBLISHED");
    assert!(payload["post"]["publishedAt"].is_string());
    assert_eq!(payload["post"]["author"]["postCount"], 1);
    let tags: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, post_count FROM tags ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(tags, vec![("cqrs".into(), 1), ("rust".into(), 1)]);

    app.graphql("mutation($id: ID!) { unpublishPost(id: $id) { version } }")
        .variables(json!({"id": post_id}))
        .bearer(&session.access_token)
        .send()
        .await
        .data();
    let user = app
        .graphql("query($id: ID!) { user(id: $id) { postCount } }")
        .variables(json!({"id": ada.id}))
        .send()
        .await;
    assert_eq!(user.data()["user"]["postCount"], 0);
    let tags: i64 = sqlx::query_scalar("SELECT count(*) FROM tags")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tags, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_changes_only_what_is_given_and_retags() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let post_id = app.published_post(&session, "Hello", &["rust"]).await;

    let edited = app
        .graphql("mutation($input: EditPostInput!) { editPost(input: $input) { post { title body tags } version } }")
        .variables(json!({"input": {"id": post_id, "tags": ["go"]}}))
        .bearer(&session.access_token)
        .send()
        .await;

    let payload = &edited.data()["editPost"];
    assert_eq!(payload["post"]["title"], "Hello");
    assert_eq!(payload["post"]["tags"], json!(["go"]));
    assert_eq!(payload["version"], 3);
    let tags: Vec<String> = sqlx::query_scalar("SELECT name FROM tags")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(tags, vec!["go"]);

    // Keeping a tag while adding one counts it once (it once stalled the projector).
    let kept = app
        .graphql("mutation($input: EditPostInput!) { editPost(input: $input) { post { tags } } }")
        .variables(json!({"input": {"id": post_id, "tags": ["go", "rust"]}}))
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(
        kept.data()["editPost"]["post"]["tags"],
        json!(["go", "rust"])
    );
    let tags: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, post_count FROM tags ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(tags, vec![("go".into(), 1), ("rust".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_post_disappears_from_reads_and_counts() {
    let app = TestApp::spawn().await;
    let (ada, session) = app.signed_in("ada").await;
    let post_id = app.published_post(&session, "Hello", &["rust"]).await;

    let deleted = app
        .graphql("mutation($id: ID!) { deletePost(id: $id) { id version consistencyToken } }")
        .variables(json!({"id": post_id}))
        .bearer(&session.access_token)
        .send()
        .await;
    let token = deleted.data()["deletePost"]["consistencyToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let read = app
        .graphql(
            "query($id: ID!, $user: ID!) { post(id: $id) { id } user(id: $user) { postCount } }",
        )
        .variables(json!({"id": post_id, "user": ada.id}))
        .header("x-consistency-token", &token)
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(read.data()["post"], serde_json::Value::Null);
    assert_eq!(read.data()["user"]["postCount"], 0);
    let again = app
        .graphql("mutation($id: ID!) { publishPost(id: $id) { version } }")
        .variables(json!({"id": post_id}))
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(again.error_code(), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_visible_to_their_author_and_moderators_only() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("ada").await;
    let (_, reader) = app.signed_in("bob").await;
    let (_, moderator) = app
        .signed_in_as("mod", chronicle_schema::Role::Moderator)
        .await;
    let post_id = app.create_post(&author, "Draft", &[]).await;
    let read = |token: Option<&str>| {
        let request = app
            .graphql("query($id: ID!) { post(id: $id) { title } }")
            .variables(json!({"id": post_id}));
        match token {
            Some(token) => request.bearer(token).send(),
            None => request.send(),
        }
    };
    assert_eq!(
        read(Some(&author.access_token)).await.data()["post"]["title"],
        "Draft"
    );
    assert_eq!(
        read(Some(&moderator.access_token)).await.data()["post"]["title"],
        "Draft"
    );
    assert_eq!(
        read(Some(&reader.access_token)).await.data()["post"],
        serde_json::Value::Null
    );
    assert_eq!(read(None).await.data()["post"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_reaches_every_post_of_the_author() {
    let app = TestApp::spawn().await;
    let (_, session) = app.signed_in("ada").await;
    let first = app.published_post(&session, "One", &[]).await;
    let second = app.create_post(&session, "Two", &[]).await;

    let renamed = app
        .graphql(r#"mutation { updateProfile(input: {displayName: "Countess Lovelace", bio: "Mathematician"}) { user { displayName bio } version } }"#)
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(
        renamed.data()["updateProfile"]["user"]["bio"],
        "Mathematician"
    );

    let names: Vec<String> =
        sqlx::query_scalar("SELECT author_display_name FROM posts WHERE id = ANY($1)")
            .bind(vec![first, second])
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(names, vec!["Countess Lovelace", "Countess Lovelace"]);

    let cleared = app
        .graphql("mutation { updateProfile(input: {bio: null}) { user { displayName bio } } }")
        .bearer(&session.access_token)
        .send()
        .await;
    assert_eq!(
        cleared.data()["updateProfile"]["user"],
        json!({"displayName": "Countess Lovelace", "bio": null})
    );
}
