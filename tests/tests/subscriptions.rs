//! Subscriptions over WebSocket (graphql-transport-ws), fed by the projector.

use std::time::Duration;

use chronicle_tests::TestApp;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(app: &TestApp, query: &str, variables: Value) -> Socket {
    let url = format!("{}/graphql/ws", app.query_url().replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Text(
            json!({"type": "connection_init"}).to_string().into(),
        ))
        .await
        .unwrap();
    let ack = next_message(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack");
    socket
        .send(Message::Text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    socket
}

async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_posts_published_with_their_tag() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let mut socket = subscribe(
        &app,
        "subscription($tag: String) { postPublished(tag: $tag) { title tags author { handle } } }",
        json!({"tag": "rust"}),
    )
    .await;
    // Give the subscription a moment to be registered on the server.
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.published_post(&ada, "About go", &["go"]).await;
    app.published_post(&ada, "About rust", &["rust"]).await;

    let next = next_message(&mut socket).await;
    assert_eq!(next["type"], "next");
    assert_eq!(
        next["payload"]["data"]["postPublished"],
        json!({"title": "About rust", "tags": ["rust"], "author": {"handle": "ada"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_comments_added_to_their_post() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada").await;
    let watched = app.published_post(&ada, "Watched", &[]).await;
    let other = app.published_post(&ada, "Other", &[]).await;
    let mut socket = subscribe(
        &app,
        "subscription($post: ID!) { commentAdded(postId: $post) { body post { title } } }",
        json!({"post": watched}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.add_comment(&ada, other, None, "Elsewhere").await.data();
    app.add_comment(&ada, watched, None, "Here").await.data();

    let next = next_message(&mut socket).await;
    assert_eq!(
        next["payload"]["data"]["commentAdded"],
        json!({"body": "Here", "post": {"title": "Watched"}})
    );
}
