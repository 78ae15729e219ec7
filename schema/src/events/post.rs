use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::images::{ImageFormat, Rendition};

use super::event_enum;

event_enum!(PostEvent {
    Created(PostCreated) = "PostCreated", version 2,
    Edited(PostEdited) = "PostEdited", version 1,
    Published(PostPublished) = "PostPublished", version 1,
    Unpublished(PostUnpublished) = "PostUnpublished", version 1,
    Deleted(PostDeleted) = "PostDeleted", version 1,
    Erased(PostErased) = "PostErased", version 1,
    ImageAdded(PostImageAdded) = "PostImageAdded", version 1,
    ImageProcessed(PostImageProcessed) = "PostImageProcessed", version 1,
    ImageRejected(PostImageRejected) = "PostImageRejected", version 1,
});

/// A new draft. v1 had no tags (see `upcast`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostCreated {
    pub author_id: Uuid,
    /// Handles never change, so the author's handle travels with the post.
    pub author_handle: String,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
}

/// The post's content as it is after the edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostEdited {
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostPublished {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostUnpublished {}

/// Soft delete: the stream stays, the post disappears from every read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostDeleted {}

/// Its author was erased: the post's text is gone for good, and the stream
/// takes no more commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostErased {}

/// An image was uploaded to the post: its original is stored under `hash`,
/// and the image worker makes its renditions. The alt text is personal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostImageAdded {
    pub image_id: Uuid,
    /// SHA-256 of the original, lowercase hex.
    pub hash: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub alt: String,
}

/// The image worker made every rendition of the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostImageProcessed {
    pub image_id: Uuid,
    pub renditions: Vec<Rendition>,
}

/// The image worker could not make the image's renditions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostImageRejected {
    pub image_id: Uuid,
    pub reason: String,
}
