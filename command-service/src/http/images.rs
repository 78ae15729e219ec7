//! `POST /v1/images`: an image upload (multipart: `postId`, `alt`, `file`),
//! forwarded by query-service with the caller's token.
//!
//! The bytes are checked before anything is stored (size, format by content,
//! pixel count, decoded to the end); the original is then stored under its
//! SHA-256 and attached to the post by `AttachImage`. If the command is
//! refused, an original this upload stored is removed again: a refused
//! upload leaves nothing behind.

use axum::Json;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
pub use chronicle_schema::images::MAX_UPLOAD_BODY_BYTES;
use chronicle_schema::images::{self, ImageFormat, MAX_UPLOAD_BYTES, UploadedImage};
use chronicle_schema::{Command, CommandEnvelope, ConsistencyToken};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ApiState, request_context};
use crate::commands;
use crate::error::CommandError;
use crate::validation::FieldErrors;
use crate::validation::image::{ImageRefusal, inspect};

/// Uploads decoded at once (each may hold hundreds of megabytes of pixels).
static INSPECTIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Namespace of image ids: one post's upload of the same bytes is one image.
const IMAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6368_726f_6e69_636c_652d_696d_6167_6573);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uploaded {
    pub image_id: Uuid,
    pub post_id: Uuid,
    pub hash: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub status: &'static str,
    pub consistency_token: ConsistencyToken,
}

pub async fn upload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let form = match read_form(multipart).await {
        Ok(form) => form,
        Err(error) => return error.into_response(),
    };
    // Once the bytes are in hand, the rest runs to its end on a task of its
    // own: a client that hangs up (or a forwarder that times out) never
    // leaves a stored original behind a command that did not run.
    let attached = tokio::spawn(async move { attach(&state, &headers, form).await });
    match attached.await {
        Ok(Ok(uploaded)) => Json(uploaded).into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(error) => CommandError::Internal(format!("upload task: {error}")).into_response(),
    }
}

struct Form {
    post_id: Uuid,
    alt: String,
    file: bytes::Bytes,
}

async fn attach(
    state: &ApiState,
    headers: &HeaderMap,
    form: Form,
) -> Result<Uploaded, CommandError> {
    // A whole decode is hundreds of megabytes at the limit: a few at a time.
    let _slot = INSPECTIONS
        .acquire()
        .await
        .map_err(|error| CommandError::Internal(format!("inspection slots: {error}")))?;
    let file = form.file.clone();
    let inspected = tokio::task::spawn_blocking(move || inspect(&file))
        .await
        .map_err(|error| CommandError::Internal(format!("image inspection: {error}")))?
        .map_err(|refusal| match refusal {
            ImageRefusal::Unsupported => {
                CommandError::UnsupportedMediaType(format!("the file {refusal}"))
            }
            other => invalid("file", &other.to_string()),
        })?;
    let hash = format!("{:x}", Sha256::digest(&form.file));
    let image = UploadedImage {
        image_id: Uuid::new_v5(
            &IMAGE_ID_NAMESPACE,
            format!("{}/{hash}", form.post_id).as_bytes(),
        ),
        hash: hash.clone(),
        format: inspected.format,
        width: inspected.width,
        height: inspected.height,
        bytes: form.file.len() as u64,
    };
    let key = object_store::path::Path::from(images::original_key(&hash));
    // Created only if absent: the same bytes are stored once, and an
    // original another upload stored is never removed by this one.
    let stored_here = match state
        .services
        .images
        .put_opts(
            &key,
            PutPayload::from_bytes(form.file),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => true,
        Err(object_store::Error::AlreadyExists { .. }) => false,
        Err(error) => {
            return Err(CommandError::Internal(format!(
                "storing the original: {error}"
            )));
        }
    };
    let envelope = CommandEnvelope {
        command_id: Uuid::now_v7(),
        correlation_id: Uuid::now_v7(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        command: Command::AttachImage {
            post_id: form.post_id,
            image: image.clone(),
            alt: form.alt,
        },
    };
    let request = request_context(headers);
    match commands::execute(&state.services, &request, &envelope).await {
        Ok(reply) => Ok(Uploaded {
            image_id: image.image_id,
            post_id: form.post_id,
            hash,
            format: image.format,
            width: image.width,
            height: image.height,
            status: "PROCESSING",
            consistency_token: reply.consistency_token,
        }),
        Err(error) => {
            if stored_here && let Err(cleanup) = state.services.images.delete(&key).await {
                tracing::warn!(%cleanup, %hash, "could not remove a refused upload's original");
            }
            Err(error)
        }
    }
}

async fn read_form(multipart: Result<Multipart, MultipartRejection>) -> Result<Form, CommandError> {
    let mut multipart = multipart?;
    let mut post_id = None;
    let mut alt = String::new();
    let mut file = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("postId") => {
                let text = text(field).await?;
                post_id = Some(
                    text.trim()
                        .parse::<Uuid>()
                        .map_err(|_| invalid("postId", "is not a post id"))?,
                );
            }
            Some("alt") => alt = text(field).await?,
            Some("file") => file = Some(file_bytes(field).await?),
            _ => {}
        }
    }
    let mut errors = FieldErrors::new();
    if post_id.is_none() {
        errors.add("postId", "is required");
    }
    if file.is_none() {
        errors.add("file", "is required");
    }
    match (post_id, file) {
        (Some(post_id), Some(file)) => Ok(Form { post_id, alt, file }),
        _ => Err(CommandError::Invalid(errors)),
    }
}

async fn text(field: Field<'_>) -> Result<String, CommandError> {
    let name = field.name().unwrap_or_default().to_owned();
    let bytes = field.bytes().await.map_err(multipart_error)?;
    if bytes.len() > 16 * 1024 {
        return Err(invalid(&name, "is too long"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(&name, "is not UTF-8 text"))
}

/// The file, refused as soon as it passes the limit (never buffered past it).
async fn file_bytes(mut field: Field<'_>) -> Result<bytes::Bytes, CommandError> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(invalid("file", "is empty"));
    }
    Ok(bytes.freeze())
}

fn too_large() -> CommandError {
    CommandError::PayloadTooLarge(format!(
        "an image is at most {} MiB",
        MAX_UPLOAD_BYTES / 1024 / 1024
    ))
}

fn multipart_error(error: impl Into<MultipartFailure>) -> CommandError {
    let error = error.into();
    if error.status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        invalid(
            "file",
            &format!(
                "the upload is not a readable multipart form: {}",
                error.text
            ),
        )
    }
}

struct MultipartFailure {
    status: axum::http::StatusCode,
    text: String,
}

impl From<axum::extract::multipart::MultipartError> for MultipartFailure {
    fn from(error: axum::extract::multipart::MultipartError) -> Self {
        MultipartFailure {
            status: error.status(),
            text: error.body_text(),
        }
    }
}

impl From<MultipartRejection> for MultipartFailure {
    fn from(rejection: MultipartRejection) -> Self {
        MultipartFailure {
            status: rejection.status(),
            text: rejection.body_text(),
        }
    }
}

impl From<MultipartRejection> for CommandError {
    fn from(rejection: MultipartRejection) -> Self {
        multipart_error(rejection)
    }
}

fn invalid(field: &str, message: &str) -> CommandError {
    let mut errors = FieldErrors::new();
    errors.add(field, message);
    CommandError::Invalid(errors)
}
