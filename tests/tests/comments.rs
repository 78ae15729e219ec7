//! Comments: published posts only, replies one level deep, counts kept.

use chronicle_schema::Role;
use chronicle_tests::TestApp;
use serde_json::json;
use uuid::Uuid;

fn id_of(response: &chronicle_tests::GraphqlResponse) -> Uuid {
    response.data()["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_post_takes_comments_and_replies_and_counts_them() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("ada").await;
    let (bob, reader) = app.signed_in("bob").await;
    let post_id = app.published_post(&author, "Hello", &[]).await;

    let top = app.add_comment(&reader, post_id, None, "Lovely.").await;
    let top_id = id_of(&top);
    let reply = app
        .add_comment(&author, post_id, Some(top_id), "Thank you.")
        .await;
    assert_eq!(reply.data()["addComment"]["comment"]["body"], "Thank you.");

    let read = app
        .graphql(
            "query($id: ID!, $user: ID!) { post(id: $id) { commentCount } user(id: $user) { commentCount } }",
        )
        .variables(json!({"id": post_id, "user": bob.id}))
        .send()
        .await;
    assert_eq!(read.data()["post"]["commentCount"], 2);
    assert_eq!(read.data()["user"]["commentCount"], 1);
    let reply_count: i32 = sqlx::query_scalar("SELECT reply_count FROM comments WHERE id = $1")
        .bind(top_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reply_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_takes_no_comment_and_replies_do_not_nest() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("ada").await;
    let draft = app.create_post(&author, "Draft", &[]).await;
    let refused = app.add_comment(&author, draft, None, "First!").await;
    assert_eq!(refused.error_code(), "BAD_USER_INPUT");
    assert!(refused.error()["extensions"]["fields"]["postId"].is_string());

    let post_id = app.published_post(&author, "Hello", &[]).await;
    let top = id_of(&app.add_comment(&author, post_id, None, "Top").await);
    let reply = id_of(&app.add_comment(&author, post_id, Some(top), "Reply").await);
    let nested = app
        .add_comment(&author, post_id, Some(reply), "Too deep")
        .await;
    assert_eq!(nested.error_code(), "BAD_USER_INPUT");
    assert!(nested.error()["extensions"]["fields"]["parentId"].is_string());

    let missing = app
        .add_comment(&author, Uuid::now_v7(), None, "Into the void")
        .await;
    assert_eq!(missing.error_code(), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_edits_a_moderator_deletes_and_a_deleted_comment_is_empty() {
    let app = TestApp::spawn().await;
    let (_, author) = app.signed_in("ada").await;
    let (_, commenter) = app.signed_in("bob").await;
    let (_, moderator) = app.signed_in_as("mod", Role::Moderator).await;
    let post_id = app.published_post(&author, "Hello", &[]).await;
    let comment_id = id_of(&app.add_comment(&commenter, post_id, None, "Frist").await);

    let edited = app
        .graphql("mutation($id: ID!) { editComment(input: {id: $id, body: \"First\"}) { comment { body editedAt } } }")
        .variables(json!({"id": comment_id}))
        .bearer(&commenter.access_token)
        .send()
        .await;
    assert_eq!(edited.data()["editComment"]["comment"]["body"], "First");
    assert!(edited.data()["editComment"]["comment"]["editedAt"].is_string());

    let deleted = app
        .graphql("mutation($id: ID!) { deleteComment(id: $id) { consistencyToken } }")
        .variables(json!({"id": comment_id}))
        .bearer(&moderator.access_token)
        .send()
        .await;
    let token = deleted.data()["deleteComment"]["consistencyToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (body, is_deleted): (String, bool) = {
        app.graphql("{ viewer { id } }")
            .header("x-consistency-token", &token)
            .send()
            .await
            .data();
        sqlx::query_as("SELECT body, deleted FROM comments WHERE id = $1")
            .bind(comment_id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!((body.as_str(), is_deleted), ("", true));
    let count: i32 = sqlx::query_scalar("SELECT comment_count FROM posts WHERE id = $1")
        .bind(post_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
