//! Images: `POST /images` (an upload, handed to the command-service as
//! received) and `GET /images/{hash}/{rendition}` (a rendition, served from
//! the object store).
//!
//! A rendition is served while a post that has the image may be seen by
//! the caller: a public post's to anyone (cached publicly, for ever: its URL
//! names its content), a draft's only to its author, moderators and admins
//! (cached privately). `ETag` is the content hash and the rendition's name,
//! so a revalidation is a 304 without reading the object.

use axum::Extension;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chronicle_schema::images::{self, MAX_UPLOAD_BODY_BYTES, MAX_UPLOAD_BYTES};
use chronicle_schema::{ErrorBody, ErrorCode};
use object_store::ObjectStoreExt;

use crate::client::ClientAddress;
use crate::command_client::Caller;
use crate::error::ApiError;
use crate::graphql::Services;

pub async fn upload(
    State(services): State<Services>,
    Extension(client): Extension<ClientAddress>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(bearer) = header(header::AUTHORIZATION.as_str())
        .and_then(chronicle_platform::access_token::bearer)
        .map(str::to_owned)
    else {
        return error(ApiError::new(
            ErrorCode::Unauthenticated,
            "sign in to upload images",
        ));
    };
    // Checked before the body is read: a refused upload costs nothing.
    let viewer = match crate::graphql::http::viewer(&services, &bearer).await {
        Ok(viewer) => viewer,
        Err(failure) => return error(failure),
    };
    if let Err(wait) = services.upload_limit.check(viewer.id) {
        let mut failure = ApiError::new(
            ErrorCode::RateLimited,
            "too many image uploads; try again shortly",
        );
        failure.retry_after_seconds = Some(wait.as_secs().max(1));
        return error(failure);
    }
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .filter(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
        })
        .cloned()
    else {
        return error(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "an upload is a multipart/form-data body with fields postId, alt and file",
        ));
    };
    let body = match to_bytes(body, MAX_UPLOAD_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return error(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("an image is at most {} MiB", MAX_UPLOAD_BYTES / 1024 / 1024),
            ));
        }
    };
    let caller = Caller {
        bearer: Some(bearer),
        client_address: client.0.to_string(),
        request_id: header("x-request-id").map(str::to_owned),
        idempotency_key: header("idempotency-key").map(str::to_owned),
    };
    match services
        .commands
        .upload_image(&caller, content_type, body)
        .await
    {
        Ok((status, body)) => (
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(failure) => error(failure),
    }
}

pub async fn rendition(
    State(services): State<Services>,
    Path((hash, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match serve(&services, &hash, &name, &headers).await {
        Ok(response) => response,
        Err(failure) => error(failure),
    }
}

async fn serve(
    services: &Services,
    hash: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some((_, format)) =
        images::parse_rendition_name(name).filter(|_| images::is_content_hash(hash))
    else {
        return Err(ApiError::not_found("image"));
    };
    // A public post's rendition never changes at its URL: cached for good
    // (if the post is hidden later, caches keep what they hold: docs/images.md).
    // A draft's is revalidated on every use, so access ends when it ends.
    let cache_control = match visibility(services, hash, headers).await? {
        Visibility::Public => "public, max-age=31536000, immutable",
        Visibility::Private => "private, no-cache",
        Visibility::Hidden => return Err(ApiError::not_found("image")),
    };
    let etag = format!("\"{hash}-{name}\"");
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let key = object_store::path::Path::from(images::rendition_key(hash, name));
        let bytes = match services.images.get(&key).await {
            Ok(object) => object.bytes().await,
            Err(error) => Err(error),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Err(ApiError::not_found("image")),
            Err(failure) => {
                tracing::warn!(%failure, %hash, %name, "could not read a rendition");
                return Err(ApiError::unavailable(
                    "the image store is unavailable; try again",
                ));
            }
        };
        ([(header::CONTENT_TYPE, format.mime())], bytes).into_response()
    };
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, etag);
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Who asks decides whether a draft's image is served.
    response_headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
    Ok(response)
}

enum Visibility {
    Public,
    Private,
    Hidden,
}

/// Whether a post that has the image may be seen by the caller.
async fn visibility(
    services: &Services,
    hash: &str,
    headers: &HeaderMap,
) -> Result<Visibility, ApiError> {
    let holder = serde_json::json!([{ "hash": hash }]);
    let public: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM read.posts WHERE public AND images @> $1)",
    )
    .bind(&holder)
    .fetch_one(&services.pool)
    .await?;
    if public {
        return Ok(Visibility::Public);
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(chronicle_platform::access_token::bearer)
    else {
        return Ok(Visibility::Hidden);
    };
    let viewer = crate::graphql::http::viewer(services, token).await?;
    let moderator = viewer.role.can_moderate();
    let visible: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM read.posts
                        WHERE images @> $1 AND NOT deleted AND (author_id = $2 OR $3))",
    )
    .bind(&holder)
    .bind(viewer.id)
    .bind(moderator)
    .fetch_one(&services.pool)
    .await?;
    Ok(if visible {
        Visibility::Private
    } else {
        Visibility::Hidden
    })
}

fn error(failure: ApiError) -> Response {
    let status = StatusCode::from_u16(failure.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = ErrorBody::new(failure.code, failure.message);
    body.fields = failure.fields;
    body.retry_after_seconds = failure.retry_after_seconds;
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = failure.retry_after_seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
