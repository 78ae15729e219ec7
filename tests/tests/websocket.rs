//! `/graphql/ws` under the same limits as HTTP: per-operation rate limits,
//! message size, connections per client, operations per connection, and the
//! real client address for login lockouts.

use std::time::Duration;

use chronicle_tests::{TestApp, TestOptions};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(app: &TestApp) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}/graphql/ws", app.query_url().replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    send(&mut socket, json!({"type": "connection_init"})).await;
    let ack = next_message(&mut socket).await.expect("an ack");
    assert_eq!(ack["type"], "connection_ack");
    Ok(socket)
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

async fn operation(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// The next text message, or None once the socket is closed.
async fn next_message(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")?;
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The `next` or `error` message of operation `id` (skipping `complete`s).
async fn outcome(socket: &mut Socket, id: &str) -> Value {
    loop {
        let message = next_message(socket).await.expect("the socket is open");
        if message["id"] == id && message["type"] != "complete" {
            return message;
        }
    }
}

fn error_code(message: &Value) -> &str {
    message["payload"]["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| message["payload"][0]["extensions"]["code"].as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_a_socket_takes_from_the_clients_rate_limit() {
    let app = TestApp::spawn_with(TestOptions {
        rate_limit_per_minute: (5, 1_000),
        ..TestOptions::default()
    })
    .await;
    // The upgrade is the first request of the five.
    let mut socket = open(&app).await.unwrap();
    for id in ["1", "2", "3", "4"] {
        operation(&mut socket, id, "{ __typename }", json!({})).await;
        let answer = outcome(&mut socket, id).await;
        assert_eq!(answer["type"], "next", "{answer}");
    }
    operation(&mut socket, "5", "{ __typename }", json!({})).await;
    let refused = outcome(&mut socket, "5").await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
    // And over HTTP the client is out of requests too: one bucket.
    assert_eq!(app.graphql("{ __typename }").send().await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_request_may_be_is_refused() {
    let app = TestApp::spawn().await;
    let mut socket = open(&app).await.unwrap();
    let padding = "x".repeat(4 * 1024 * 1024);
    let message = json!({"id": "1", "type": "subscribe",
                         "payload": {"query": format!("{{ __typename }} # {padding}")}});
    // The server may close the socket while the message is still being sent.
    let _ = socket.send(Message::Text(message.to_string().into())).await;
    assert!(
        next_message(&mut socket).await.is_none(),
        "a 4 MB message closes the socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_a_bounded_number_of_sockets_and_operations() {
    let app = TestApp::spawn().await;
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(open(&app).await.unwrap());
    }
    assert!(open(&app).await.is_err(), "a 17th socket is refused");
    drop(sockets.pop());
    // A closed socket frees its place (once the server has noticed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(socket) = open(&app).await {
            sockets.push(socket);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed socket slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let socket = &mut sockets[0];
    for index in 0..32 {
        operation(
            socket,
            &format!("s{index}"),
            "subscription { postPublished { id } }",
            json!({}),
        )
        .await;
    }
    operation(
        socket,
        "one-too-many",
        "subscription { postPublished { id } }",
        json!({}),
    )
    .await;
    let refused = outcome(socket, "one-too-many").await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_a_socket_is_counted_against_the_real_client() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let mut socket = open(&app).await.unwrap();
    operation(
        &mut socket,
        "login",
        "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
        json!({"input": {"email": ada.email, "password": "a wrong password"}}),
    )
    .await;
    let answer = outcome(&mut socket, "login").await;
    assert_eq!(error_code(&answer), "UNAUTHENTICATED", "{answer}");
    let clients: Vec<String> = sqlx::query_scalar("SELECT client FROM auth.login_failures")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(clients, vec!["127.0.0.1".to_owned()]);
}
