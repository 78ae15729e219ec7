//! GraphQL requests and responses, for tests that read like the API's use.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::TestApp;

pub struct GraphqlRequest<'a> {
    app: &'a TestApp,
    query: String,
    variables: Value,
    headers: Vec<(String, String)>,
}

impl<'a> GraphqlRequest<'a> {
    pub(crate) fn new(app: &'a TestApp, query: &str) -> GraphqlRequest<'a> {
        GraphqlRequest {
            app,
            query: query.to_owned(),
            variables: json!({}),
            headers: Vec::new(),
        }
    }

    pub fn variables(mut self, variables: Value) -> Self {
        self.variables = variables;
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn send(self) -> GraphqlResponse {
        let mut request = self
            .app
            .http
            .post(self.app.graphql_url())
            .json(&json!({"query": self.query, "variables": self.variables}));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("the query-service answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().await.expect("a JSON GraphQL response");
        GraphqlResponse {
            status,
            headers,
            body,
        }
    }
}

#[derive(Debug)]
pub struct GraphqlResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl GraphqlResponse {
    /// The data, asserting there were no errors.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected GraphQL errors: {}",
            self.body
        );
        &self.body["data"]
    }

    /// The first error's `extensions.code`.
    pub fn error_code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a GraphQL error with a code: {}", self.body))
    }

    pub fn error(&self) -> &Value {
        &self.body["errors"][0]
    }
}

/// A user registered through the API, with what it takes to sign in.
#[derive(Clone, Debug)]
pub struct RegisteredUser {
    pub id: Uuid,
    pub handle: String,
    pub email: String,
    pub password: String,
}

impl TestApp {
    pub async fn register(&self, handle: &str) -> RegisteredUser {
        let email = format!("{handle}@example.com");
        let password = format!("{handle} has a long passphrase");
        let response = self
            .graphql(
                "mutation($input: RegisterUserInput!) { registerUser(input: $input) { user { id } } }",
            )
            .variables(json!({"input": {
                "email": email, "handle": handle, "displayName": handle, "password": password,
            }}))
            .send()
            .await;
        let id = response.data()["registerUser"]["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("the registered user is not read back: {}", response.body))
            .parse()
            .expect("a UUID");
        RegisteredUser {
            id,
            handle: handle.to_owned(),
            email,
            password,
        }
    }
}

/// A signed-in session.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub async fn login(&self, user: &RegisteredUser) -> Session {
        let response = self
            .graphql("mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken } }")
            .variables(json!({"input": {"email": user.email, "password": user.password}}))
            .send()
            .await;
        let auth = &response.data()["login"];
        Session {
            access_token: auth["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: auth["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers and signs in.
    pub async fn signed_in(&self, handle: &str) -> (RegisteredUser, Session) {
        let user = self.register(handle).await;
        let session = self.login(&user).await;
        (user, session)
    }

    /// Registers a user and gives them a role, as an operator would, and
    /// waits until the read models (which query-service authorizes by) have it.
    pub async fn signed_in_as(
        &self,
        handle: &str,
        role: chronicle_schema::Role,
    ) -> (RegisteredUser, Session) {
        let user = self.register(handle).await;
        command_service::operator::set_role(&self.pool, &user.email, role)
            .await
            .expect("set the role");
        if self.projector_url().is_some() {
            self.drain().await;
        }
        let session = self.login(&user).await;
        (user, session)
    }

    /// Creates a draft and answers its id.
    pub async fn create_post(&self, session: &Session, title: &str, tags: &[&str]) -> Uuid {
        let response = self
            .graphql(
                "mutation($input: CreatePostInput!) { createPost(input: $input) { post { id } } }",
            )
            .variables(
                json!({"input": {"title": title, "body": format!("About {title}."), "tags": tags}}),
            )
            .bearer(&session.access_token)
            .send()
            .await;
        response.data()["createPost"]["post"]["id"]
            .as_str()
            .expect("the post is read back")
            .parse()
            .unwrap()
    }

    pub async fn publish_post(&self, session: &Session, id: Uuid) {
        self.graphql("mutation($id: ID!) { publishPost(id: $id) { version } }")
            .variables(json!({"id": id}))
            .bearer(&session.access_token)
            .send()
            .await
            .data();
    }

    /// Creates and publishes a post.
    pub async fn published_post(&self, session: &Session, title: &str, tags: &[&str]) -> Uuid {
        let id = self.create_post(session, title, tags).await;
        self.publish_post(session, id).await;
        id
    }

    pub async fn add_comment(
        &self,
        session: &Session,
        post_id: Uuid,
        parent_id: Option<Uuid>,
        body: &str,
    ) -> GraphqlResponse {
        self.graphql(
            "mutation($input: AddCommentInput!) { addComment(input: $input) { comment { id body } version } }",
        )
        .variables(json!({"input": {"postId": post_id, "parentId": parent_id, "body": body}}))
        .bearer(&session.access_token)
        .send()
        .await
    }
}
