//! Data export (GDPR art. 15 and 20): everything Chronicle holds about the
//! caller, as one JSON document: their profile (email included), sessions,
//! posts (drafts and deleted ones too) and comments. Nothing of anyone
//! else's: only rows the caller is the subject of.
//!
//! Written in pieces, a page of rows at a time, so a large author's export
//! streams (`GET /me/export`) in bounded memory; `exportMyData` in GraphQL
//! collects the same pieces.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chronicle_schema::read_models::comments::{self, CommentRow};
use chronicle_schema::read_models::posts::{self, PostRow};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::error::ApiError;
use crate::graphql::Services;
use crate::read_models::users;

/// Rows per query: the memory an export holds at once.
const PAGE: i64 = 200;

/// Where the pieces go; false when the reader has gone.
pub(crate) trait Sink {
    async fn piece(&mut self, text: String) -> bool;
}

impl Sink for String {
    async fn piece(&mut self, text: String) -> bool {
        self.push_str(&text);
        true
    }
}

impl Sink for mpsc::Sender<Result<String, std::io::Error>> {
    async fn piece(&mut self, text: String) -> bool {
        self.send(Ok(text)).await.is_ok()
    }
}

/// Writes `user_id`'s export into `sink`.
pub(crate) async fn write(
    services: &Services,
    user_id: Uuid,
    sink: &mut impl Sink,
) -> Result<(), sqlx::Error> {
    let pool = &services.pool;
    let profile = users::by_id(pool, user_id).await?.map(|user| {
        json!({
            "id": user.id, "handle": user.handle, "displayName": user.display_name,
            "bio": user.bio, "email": user.email, "role": user.role.as_str(),
            "active": user.active, "joinedAt": user.joined_at, "updatedAt": user.updated_at,
        })
    });
    let sessions: Vec<Value> = sqlx::query!(
        "SELECT id, started_at, revoked_at FROM auth.sessions WHERE user_id = $1 ORDER BY started_at",
        user_id
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|session| json!({"id": session.id, "startedAt": session.started_at, "endedAt": session.revoked_at}))
    .collect();
    let head = format!(
        "{{\"format\":\"chronicle-export/1\",\"exportedAt\":{},\"userId\":{},\"profile\":{},\"sessions\":{},\"posts\":[",
        json!(Utc::now()),
        json!(user_id),
        json!(profile),
        json!(sessions)
    );
    if !sink.piece(head).await {
        return Ok(());
    }

    let posts = Rows {
        table: "posts",
        columns: posts::COLUMNS,
        key: |post: &PostRow| (post.created_at, post.id),
        json: post_json,
    };
    if !posts.write(pool, user_id, sink).await? {
        return Ok(());
    }
    if !sink.piece("],\"comments\":[".to_owned()).await {
        return Ok(());
    }
    let comments = Rows {
        table: "comments",
        columns: comments::COLUMNS,
        key: |comment: &CommentRow| (comment.created_at, comment.id),
        json: comment_json,
    };
    if !comments.write(pool, user_id, sink).await? {
        return Ok(());
    }
    sink.piece("]}".to_owned()).await;
    Ok(())
}

/// One read model's rows of the person, written a page at a time in
/// (created_at, id) order, as the elements of a JSON array.
struct Rows<Row> {
    table: &'static str,
    columns: &'static str,
    key: fn(&Row) -> (DateTime<Utc>, Uuid),
    json: fn(&Row) -> Value,
}

impl<Row> Rows<Row>
where
    Row: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    /// False when the reader has gone.
    async fn write(
        &self,
        pool: &sqlx::PgPool,
        user_id: Uuid,
        sink: &mut impl Sink,
    ) -> Result<bool, sqlx::Error> {
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        let mut first = true;
        loop {
            let page: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM {} WHERE author_id = $1 \
                   AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3)) \
                 ORDER BY created_at, id LIMIT $4",
                self.columns, self.table
            )))
            .bind(user_id)
            .bind(after.map(|(at, _)| at))
            .bind(after.map(|(_, id)| id))
            .bind(PAGE)
            .fetch_all(pool)
            .await?;
            let Some(last) = page.last() else {
                return Ok(true);
            };
            after = Some((self.key)(last));
            let mut text = String::new();
            for row in &page {
                if !std::mem::take(&mut first) {
                    text.push(',');
                }
                text.push_str(&(self.json)(row).to_string());
            }
            if !sink.piece(text).await {
                return Ok(false);
            }
        }
    }
}

fn post_json(post: &PostRow) -> Value {
    json!({
        "id": post.id, "slug": post.slug, "title": post.title, "body": post.body,
        "tags": post.tags, "status": post.status.as_str(), "deleted": post.deleted,
        "createdAt": post.created_at, "updatedAt": post.updated_at,
        "publishedAt": post.published_at, "version": post.version,
    })
}

fn comment_json(comment: &CommentRow) -> Value {
    json!({
        "id": comment.id, "postId": comment.post_id, "parentId": comment.parent_id,
        "body": comment.body, "deleted": comment.deleted, "createdAt": comment.created_at,
        "editedAt": comment.edited_at, "version": comment.version,
    })
}

/// `GET /me/export`: the caller's export, streamed as it is read.
pub async fn download(
    axum::extract::State(services): axum::extract::State<Services>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(chronicle_platform::access_token::bearer);
    let viewer = match token {
        None => Err(ApiError::new(
            chronicle_schema::ErrorCode::Unauthenticated,
            "sign in to export your data",
        )),
        Some(token) => crate::graphql::http::viewer(&services, token).await,
    };
    let viewer = match viewer {
        Ok(viewer) => viewer,
        Err(error) => {
            let status = StatusCode::from_u16(error.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"code": error.code.as_str(), "message": error.message});
            return (status, axum::Json(body)).into_response();
        }
    };
    let (mut sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(error) = write(&services, viewer.id, &mut sender).await {
            // The status is sent: cut the document short, so it does not parse.
            tracing::warn!(%error, "a data export failed midway");
            let _ = sender
                .send(Err(std::io::Error::other("export failed")))
                .await;
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"chronicle-export.json\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(ReceiverStream::new(receiver)),
    )
        .into_response()
}
