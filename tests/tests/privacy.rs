//! Erasure by crypto-shredding, and data export (docs/privacy.md).
//!
//! After `eraseUser`, no byte of the person's email, name, bio, or the text
//! of their posts and comments is left where Chronicle keeps data: any table
//! (the event store's raw rows included), the bus as a new consumer reads it
//! from the beginning, the search index's term dictionaries, and the
//! services' own logs (the services run as binaries here, logging at debug).

use std::time::Duration;

use chronicle_schema::search_schema::IndexLayout;
use chronicle_tests::{
    ServiceProcess, Session, TestApp, TestOptions, eventually, read_raw_topic, search,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Words nobody else writes: lower-case letters only, so each is one token
/// however the analyzers cut text.
fn word(prefix: &str) -> String {
    let tail: String = Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .map(|c| char::from(b'a' + (c.to_digit(16).unwrap() as u8 % 26)))
        .take(10)
        .collect();
    format!("{prefix}{tail}")
}

/// Every service logs at debug (the libraries at info) into its log file.
const DEBUG: &str =
    "debug,rdkafka=info,librdkafka=info,h2=info,hyper=info,hyper_util=info,tantivy=info";

/// A command-service, a projector (read models and search) and a
/// query-service, as binaries on the test app's database and topic.
struct Stack {
    _command: ServiceProcess,
    _projector: ServiceProcess,
    query: ServiceProcess,
    logs: std::path::PathBuf,
    index_dir: std::path::PathBuf,
    http: reqwest::Client,
}

impl Stack {
    async fn start(app: &TestApp) -> Stack {
        let logs = app.search_index_dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let index_dir = app.search_index_dir.join("binary-index");
        let command = ServiceProcess::start(
            "command-service",
            app.command_service_args(true),
            vec![],
            DEBUG,
            Some(&logs.join("command-service.log")),
        )
        .await;
        let projector_args = app
            .projector_args()
            .into_iter()
            .map(|arg| {
                if arg.starts_with("--search-index-dir=") {
                    format!("--search-index-dir={}", index_dir.display())
                } else {
                    arg
                }
            })
            .collect();
        let projector = ServiceProcess::start(
            "projector",
            projector_args,
            vec![],
            DEBUG,
            Some(&logs.join("projector.log")),
        )
        .await;
        let query = ServiceProcess::start(
            "query-service",
            vec![],
            app.query_service_env(command.url(), &index_dir),
            DEBUG,
            Some(&logs.join("query-service.log")),
        )
        .await;
        Stack {
            _command: command,
            _projector: projector,
            query,
            logs,
            index_dir,
            http: reqwest::Client::new(),
        }
    }

    async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.query.url()))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn signed_in(&self, handle: &str, email: &str, name: &str) -> (Uuid, Session) {
        let password = format!("{handle} has a long passphrase");
        let registered = self
            .graphql(
                "mutation($input: RegisterUserInput!) { registerUser(input: $input) { user { id } } }",
                json!({"input": {"email": email, "handle": handle, "displayName": name, "password": password}}),
                None,
            )
            .await;
        let id = registered["data"]["registerUser"]["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("registered: {registered}"))
            .parse()
            .unwrap();
        let login = self
            .graphql(
                "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }",
                json!({"input": {"email": email, "password": password}}),
                None,
            )
            .await;
        let session = Session {
            access_token: login["data"]["login"]["accessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
            refresh_token: login["data"]["login"]["refreshToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        (id, session)
    }

    async fn published(&self, session: &Session, title: &str, body: &str, tag: &str) -> Uuid {
        let created = self
            .graphql(
                "mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } } }",
                json!({"input": {"title": title, "body": body, "tags": [tag]}}),
                Some(&session.access_token),
            )
            .await;
        let id: Uuid = created["data"]["createPost"]["post"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("created: {created}"))
            .parse()
            .unwrap();
        let published = self
            .graphql(
                "mutation($id: ID!) { publishPost(id: $id) { version } }",
                json!({"id": id}),
                Some(&session.access_token),
            )
            .await;
        assert!(published["errors"].is_null(), "{published}");
        id
    }

    async fn comment(&self, session: &Session, post: Uuid, body: &str) -> Value {
        self.graphql(
            "mutation($input: AddCommentInput!) { addComment(input: $input) { comment { id } } }",
            json!({"input": {"postId": post, "body": body}}),
            Some(&session.access_token),
        )
        .await
    }

    fn logs_containing(&self, secrets: &[String]) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
            assert!(text.contains("debug"), "{} logs at debug", path.display());
            for secret in secrets {
                if text.contains(&secret.to_lowercase()) {
                    found.push(format!("{} in {}", secret, path.display()));
                }
            }
        }
        found
    }
}

/// Every row of every table, as text, that contains any of `secrets`.
async fn rows_containing(pool: &PgPool, secrets: &[String]) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_type = 'BASE TABLE'
           AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (schema, table) in tables {
        for secret in secrets {
            let hits: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text ILIKE '%' || $1 || '%'"
            )))
            .bind(secret)
            .fetch_one(pool)
            .await
            .unwrap();
            if hits > 0 {
                found.push(format!("{secret} in {schema}.{table} ({hits} rows)"));
            }
        }
    }
    found
}

async fn bus_containing(topic: &str, secrets: &[String]) -> Vec<String> {
    let messages = read_raw_topic(topic, usize::MAX, Duration::from_secs(5)).await;
    assert!(!messages.is_empty(), "the bus carries the events");
    let mut found = Vec::new();
    for message in messages {
        let mut text = String::from_utf8_lossy(&message.payload).to_lowercase();
        for (_, value) in &message.headers {
            text.push_str(&value.to_lowercase());
        }
        for secret in secrets {
            if text.contains(&secret.to_lowercase()) {
                found.push(format!("{secret} on the bus"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_no_readable_trace_in_tables_bus_index_or_logs() {
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let stack = Stack::start(&app).await;

    // Every value is a distinctive word, so each is found however it is
    // cut, cased or slugged.
    let words: Vec<String> = [
        "erin",
        "mail",
        "name",
        "bio",
        "title",
        "body",
        "tag",
        "comment",
        "elsewhere",
    ]
    .iter()
    .map(|prefix| word(prefix))
    .collect();
    let handle = words[0].clone();
    let email = format!("{}@privacy.example", words[1]);
    let name = format!("Erin {}", words[2]);
    let bio = format!("Bio {}", words[3]);
    let title = format!("Title {}", words[4]);
    let body = format!("Body {} words", words[5]);
    let tag = words[6].clone();
    let comment = format!("Comment {}", words[7]);
    let reply_elsewhere = format!("Elsewhere {}", words[8]);
    let mut secrets = words.clone();
    secrets.push(email.clone());

    let (erin, erin_session) = stack.signed_in(&handle, &email, &name).await;
    let (_, olga_session) = stack
        .signed_in(&word("olga"), &format!("{}@example.com", word("o")), "Olga")
        .await;
    let updated = stack
        .graphql(
            "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }",
            json!({"input": {"bio": bio}}),
            Some(&erin_session.access_token),
        )
        .await;
    assert!(updated["errors"].is_null(), "{updated}");
    let post = stack.published(&erin_session, &title, &body, &tag).await;
    let olga_post = stack
        .published(&olga_session, "Olga writes", "Olga's own words.", "olga")
        .await;
    assert!(stack.comment(&erin_session, post, &comment).await["errors"].is_null());
    let olga_comment = stack.comment(&olga_session, post, "Olga was here").await;
    let olga_comment: Uuid = olga_comment["data"]["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stack
            .comment(&erin_session, olga_post, &reply_elsewhere)
            .await["errors"]
            .is_null()
    );

    // Sealed from the start: the store and the bus carry ciphertext only; the
    // read models and the index have the text.
    let stored: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM event_store.events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for secret in &secrets {
        assert!(
            !stored
                .iter()
                .any(|payload| payload.to_lowercase().contains(&secret.to_lowercase())),
            "{secret} is stored in plain text"
        );
    }
    let layout = IndexLayout::new(&stack.index_dir);
    eventually(Duration::from_secs(30), "the post is indexed", || async {
        !search::terms_held(&layout, &body).is_empty()
    })
    .await;

    let other = stack
        .graphql(
            "mutation($id: ID!) { eraseUser(id: $id) { version } }",
            json!({"id": erin}),
            Some(&olga_session.access_token),
        )
        .await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{other}"
    );
    let erased = stack
        .graphql(
            "mutation($id: ID!) { eraseUser(id: $id) { id version consistencyToken } }",
            json!({"id": erin}),
            Some(&erin_session.access_token),
        )
        .await;
    assert!(erased["errors"].is_null(), "{erased}");

    eventually(
        Duration::from_secs(30),
        "nothing of Erin is left in any table",
        || async { rows_containing(&app.pool, &secrets).await.is_empty() },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "nothing of Erin is left in the index",
        || async {
            secrets
                .iter()
                .all(|secret| search::terms_held(&layout, secret).is_empty())
        },
    )
    .await;
    assert_eq!(
        bus_containing(&app.topic, &secrets).await,
        Vec::<String>::new()
    );
    assert_eq!(stack.logs_containing(&secrets), Vec::<String>::new());

    // Erin is gone for every reader; Olga's comment on Erin's post is kept.
    let read = stack
        .graphql(
            "query($id: ID!) { node(id: $id) { ... on Post { id } } }",
            json!({"id": post}),
            None,
        )
        .await;
    assert!(read["data"]["node"].is_null(), "{read}");
    let kept: (String, bool) =
        sqlx::query_as("SELECT body, deleted FROM read.comments WHERE id = $1")
            .bind(olga_comment)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(kept, ("Olga was here".to_owned(), false));
    // Her sign-in is gone, and her email and handle can be used again.
    let login = stack
        .graphql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({"input": {"email": email, "password": format!("{handle} has a long passphrase")}}),
            None,
        )
        .await;
    assert_eq!(
        login["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{login}"
    );
    let again = stack
        .graphql(
            "mutation($id: ID!) { eraseUser(id: $id) { version } }",
            json!({"id": erin}),
            Some(&erin_session.access_token),
        )
        .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{again}"
    );
    let (_, _) = stack.signed_in(&handle, &email, "Someone new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_an_erasure_builds_what_was_live_and_the_person_stays_erased() {
    let app = TestApp::spawn().await;
    let (erin, erin_session) = app.signed_in("erin").await;
    let (_, olga_session) = app.signed_in("olga").await;
    let post = app
        .published_post(&erin_session, "Erin's first", &["shared"])
        .await;
    app.published_post(&erin_session, "Erin's second", &["mine"])
        .await;
    let olga_post = app
        .published_post(&olga_session, "Olga's", &["shared"])
        .await;
    let olga_comment = app
        .add_comment(&olga_session, post, None, "On Erin's post")
        .await;
    let olga_comment: Uuid = olga_comment.data()["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let erin_comment = app
        .add_comment(&erin_session, olga_post, None, "Erin on Olga's")
        .await;
    let erin_comment: Uuid = erin_comment.data()["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.add_comment(
        &olga_session,
        olga_post,
        Some(erin_comment),
        "A reply to Erin",
    )
    .await
    .data();

    let erased = app
        .graphql("mutation($id: ID!) { eraseUser(id: $id) { version } }")
        .variables(json!({"id": erin.id}))
        .bearer(&erin_session.access_token)
        .send()
        .await;
    erased.data();
    app.drain().await;
    app.drain_search().await;

    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed, "a replay builds what the live path built");
    let (live, rebuilt) = app.search_documents_live_and_rebuilt().await;
    assert_eq!(live, rebuilt);

    // Others' counts no longer count Erin: the shared tag has Olga's post
    // only, Olga's post counts her comment and her reply, not Erin's.
    let shared: i32 = sqlx::query_scalar("SELECT post_count FROM read.tags WHERE name = 'shared'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(shared, 1);
    let mine: Option<i32> =
        sqlx::query_scalar("SELECT post_count FROM read.tags WHERE name = 'mine'")
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    assert!(mine.unwrap_or(0) == 0, "Erin's tag counts none: {mine:?}");
    let olga_count: i32 = sqlx::query_scalar("SELECT comment_count FROM read.posts WHERE id = $1")
        .bind(olga_post)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        olga_count, 1,
        "the reply to Erin counts, Erin's comment does not"
    );
    let kept: bool = sqlx::query_scalar("SELECT NOT deleted FROM read.comments WHERE id = $1")
        .bind(olga_comment)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(kept, "Olga's comment on Erin's post stays hers");
    let text: Vec<String> =
        sqlx::query_scalar("SELECT title || body || slug FROM read.posts WHERE author_id = $1")
            .bind(erin.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        text.iter().all(|text| !text.contains("Erin")),
        "Erin's posts keep no text: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_racing_the_persons_writes_and_others_comments_loses_nothing_of_the_others() {
    let app = TestApp::spawn().await;
    let (erin, erin_session) = app.signed_in("erin").await;
    let posts = [
        app.published_post(&erin_session, "Erin one", &["race"])
            .await,
        app.published_post(&erin_session, "Erin two", &["race"])
            .await,
    ];
    let mut commenters = Vec::new();
    for handle in ["olga", "pete"] {
        commenters.push(app.signed_in(handle).await);
    }

    let writes = async {
        let mut erin_writes = 0;
        for round in 0..30 {
            let response = app
                .graphql("mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } } }")
                .variables(json!({"input": {"title": format!("Erin racing {round}"), "body": "Racing."}}))
                .bearer(&erin_session.access_token)
                .send()
                .await;
            if response.body["errors"].is_null() {
                erin_writes += 1;
            }
        }
        erin_writes
    };
    let comments = futures::future::join_all(commenters.iter().map(|(user, session)| {
        let app = &app;
        async move {
            let mut accepted = Vec::new();
            for round in 0..30 {
                let post = posts[round % posts.len()];
                let body = format!("{} says {round}", user.handle);
                let response = app.add_comment(session, post, None, &body).await;
                // Accepted: a version (the comment itself reads back null
                // once its post is erased).
                if response.body["data"]["addComment"]["version"].is_number() {
                    accepted.push((body, user.id));
                } else {
                    // Refused after the erasure, with a clear answer.
                    assert_eq!(response.error_code(), "NOT_FOUND", "{}", response.body);
                }
            }
            accepted
        }
    }));
    let erase = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.graphql("mutation($id: ID!) { eraseUser(id: $id) { version } }")
            .variables(json!({"id": erin.id}))
            .bearer(&erin_session.access_token)
            .send()
            .await
            .data()
            .clone()
    };
    let (_, accepted, _) = tokio::join!(writes, comments, erase);
    app.drain().await;

    // Every comment of the others that was accepted is kept, whole, and
    // counted for its author.
    for (body, author) in accepted.iter().flatten() {
        let kept: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM read.comments WHERE author_id = $1 AND body = $2 AND NOT deleted",
        )
        .bind(author)
        .bind(body)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(kept, 1, "{body}");
    }
    for (user, _) in &commenters {
        let counted: i32 = sqlx::query_scalar("SELECT comment_count FROM read.users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let theirs = accepted
            .iter()
            .flatten()
            .filter(|(_, author)| *author == user.id)
            .count();
        assert_eq!(counted as usize, theirs);
    }
    // Of Erin, nothing public is left, whatever raced the erasure.
    let public: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read.posts WHERE author_id = $1 AND (public OR title <> '')",
    )
    .bind(erin.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(public, 0);
    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_all_of_the_callers_data_and_nothing_private_of_anyone_else() {
    let app = TestApp::spawn().await;
    let (ada, ada_session) = app.signed_in("ada").await;
    let (bob, bob_session) = app.signed_in("bob").await;
    let published = app
        .published_post(&ada_session, "Ada in public", &["notes"])
        .await;
    app.create_post(&ada_session, "Ada's draft", &[]).await;
    app.create_post(&bob_session, "Bob's secret draft", &[])
        .await;
    let comment = app
        .add_comment(&ada_session, published, None, "Ada comments")
        .await;
    let comment: Uuid = comment.data()["addComment"]["comment"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.add_comment(&bob_session, published, Some(comment), "Bob replies")
        .await
        .data();
    app.add_comment(&ada_session, published, Some(comment), "Ada replies too")
        .await
        .data();
    app.drain().await;

    let response = app
        .http
        .get(format!("{}/me/export", app.query_url()))
        .bearer_auth(&ada_session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let streamed: Value = response.json().await.unwrap();
    let graphql = app
        .graphql("{ exportMyData }")
        .bearer(&ada_session.access_token)
        .send()
        .await;
    let collected = graphql.data()["exportMyData"].clone();
    for export in [&streamed, &collected] {
        assert_eq!(export["userId"], json!(ada.id));
        assert_eq!(export["profile"]["email"], json!(ada.email));
        let titles: Vec<&str> = export["posts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|post| post["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, vec!["Ada in public", "Ada's draft"]);
        let bodies: Vec<&str> = export["comments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|comment| comment["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, vec!["Ada comments", "Ada replies too"]);
        assert!(!export["sessions"].as_array().unwrap().is_empty());
        let text = export.to_string();
        for private in [bob.email.as_str(), "Bob's secret draft", "Bob replies"] {
            assert!(!text.contains(private), "{private} is Bob's: {text}");
        }
    }

    let anonymous = app
        .http
        .get(format!("{}/me/export", app.query_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// A command straight to the command-service (it does not wait to read its
/// write back, as the GraphQL mutations do).
async fn command(app: &TestApp, bearer: Option<&str>, command: Value) -> Value {
    let mut request = app
        .http
        .post(format!("{}/v1/commands", app.command_url()))
        .header("x-service-token", &app.command_api_token)
        .json(&json!({
            "commandId": Uuid::now_v7(), "correlationId": Uuid::now_v7(), "command": command,
        }));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// The erasure frees the handle, the email and the slugs at once; the
/// projector may apply a newcomer who takes them before the erasure itself
/// (it travels on other partitions). The newcomer is applied, nothing is
/// set aside, and the read models are what a replay builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_freed_by_an_erasure_are_taken_again_before_the_erasure_is_projected() {
    let mut app = TestApp::spawn_with(TestOptions {
        partitions: 6,
        ..TestOptions::default()
    })
    .await;
    let (erin, erin_session) = app.signed_in("erin").await;
    let titles: Vec<String> = (1..=6).map(|n| format!("Freed {n}")).collect();
    for title in &titles {
        app.published_post(&erin_session, title, &["freed"]).await;
    }
    app.drain().await;
    app.stop_projector().await;

    let erased = command(
        &app,
        Some(&erin_session.access_token),
        json!({"type": "EraseUser", "userId": erin.id}),
    )
    .await;
    assert!(erased["version"].is_number(), "{erased}");
    // The same email and handle, and posts with the same titles (slugs).
    let password = "a newcomer's long passphrase";
    let registered = command(
        &app,
        None,
        json!({"type": "RegisterUser", "email": erin.email, "handle": erin.handle,
               "displayName": "Newcomer", "password": password}),
    )
    .await;
    assert!(registered["version"].is_number(), "{registered}");
    let login = command(
        &app,
        None,
        json!({"type": "Login", "email": erin.email, "password": password}),
    )
    .await;
    let token = login["session"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_owned();
    for title in &titles {
        let created = command(
            &app,
            Some(&token),
            json!({"type": "CreatePost", "title": title, "body": "The newcomer's."}),
        )
        .await;
        assert!(created["version"].is_number(), "{created}");
    }

    app.start_projector().await;
    app.drain().await;
    let letters: Vec<String> =
        sqlx::query_scalar("SELECT error FROM projector.dead_letters WHERE redriven_at IS NULL")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(letters, Vec::<String>::new(), "nothing is set aside");
    let newcomer: String =
        sqlx::query_scalar("SELECT display_name FROM read.users WHERE handle = $1")
            .bind(&erin.handle)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(newcomer, "Newcomer");
    let slugs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read.posts p JOIN read.users u ON u.id = p.author_id
         WHERE u.handle = $1 AND p.slug LIKE 'freed-%'",
    )
    .bind(&erin.handle)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(slugs, 6, "the newcomer's posts have the freed slugs");
    let (live, replayed) = app.read_models_live_and_replayed().await;
    assert_eq!(live, replayed);
}

/// Two erasures of one person sent at once (a retry, a double click) both
/// answer as the first did; someone else may not erase anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_sent_twice_at_once_answers_the_same_twice() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in_as("admin", chronicle_schema::Role::Admin)
        .await;
    let (erin, erin_session) = app.signed_in("erin").await;
    app.published_post(&erin_session, "Erin's", &[]).await;
    let (_, olga) = app.signed_in("olga").await;

    let refused = command(
        &app,
        Some(&olga.access_token),
        json!({"type": "EraseUser", "userId": erin.id}),
    )
    .await;
    assert_eq!(refused["code"], "FORBIDDEN", "{refused}");

    let erase = || {
        command(
            &app,
            Some(&admin.access_token),
            json!({"type": "EraseUser", "userId": erin.id}),
        )
    };
    let (first, second) = tokio::join!(erase(), erase());
    assert!(first["version"].is_number(), "{first}");
    assert_eq!(first["version"], second["version"], "{first} {second}");
    let closed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store.events WHERE event_type IN ('UserErased', 'PostErased')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(closed, 2, "each stream is closed once");
}
