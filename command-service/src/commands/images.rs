//! Image commands: an upload attached to its post, and the image worker's
//! outcome for it. Both append to the post's stream, so the post's images
//! are in its history, erased with it, and in order with its edits.

use chronicle_schema::images::{self, ImageOutcome, MAX_ALT_CHARS, UploadedImage};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use super::{Attempt, Decided, Handle};
use crate::aggregates::Post;
use crate::error::CommandError;
use crate::validation::FieldErrors;

pub(super) struct Attach {
    pub post_id: Uuid,
    pub image: UploadedImage,
    pub alt: String,
}

impl Attach {
    pub fn parse(post_id: Uuid, image: &UploadedImage, alt: &str) -> Result<Attach, CommandError> {
        let alt = alt.trim();
        if alt.chars().count() > MAX_ALT_CHARS {
            let mut errors = FieldErrors::new();
            errors.add("alt", format!("is at most {MAX_ALT_CHARS} characters"));
            return Err(CommandError::Invalid(errors));
        }
        if alt.chars().any(char::is_control) {
            let mut errors = FieldErrors::new();
            errors.add("alt", "must not contain control characters");
            return Err(CommandError::Invalid(errors));
        }
        Ok(Attach {
            post_id,
            image: image.clone(),
            alt: alt.to_owned(),
        })
    }
}

impl Handle for Attach {
    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let post = attempt.target::<Post>(self.post_id, None).await?;
        let events = post
            .state
            .attach_image(&actor, &self.image, self.alt.clone())?;
        Ok(Decided::new::<Post>(self.post_id, post.version, events)
            .sealed_for(post.state.author_id))
    }
}

/// The worker's outcome: no user acts (a service credential holder sends
/// it), and a post that moved on is decided again, never refused.
pub(super) struct RecordOutcome {
    pub post_id: Uuid,
    pub image_id: Uuid,
    pub outcome: ImageOutcome,
}

impl Handle for RecordOutcome {
    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        if attempt.actor().await?.is_some() {
            return Err(CommandError::Forbidden(
                "only the image worker records an image's outcome".into(),
            ));
        }
        let post = attempt.target::<Post>(self.post_id, None).await?;
        let events = post
            .state
            .record_image_outcome(self.image_id, &self.outcome)?;
        Ok(Decided::new::<Post>(self.post_id, post.version, events))
    }
}

/// After an erasure commits: the stored originals and renditions of the
/// erased posts' images, unless a post that is not erased has the same bytes
/// (blobs are content-addressed, so shared). A failure is logged and leaves
/// the blobs unreachable (no post that may be seen has them, so none is
/// served); the erasure itself has happened.
pub(super) async fn delete_erased_blobs(services: &super::CommandServices, posts: &[Uuid]) {
    if let Err(error) = delete_blobs(services, posts).await {
        tracing::warn!(%error, "could not delete an erased person's images");
    }
}

async fn delete_blobs(
    services: &super::CommandServices,
    posts: &[Uuid],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let hashes = sqlx::query_scalar!(
        r#"SELECT DISTINCT added.payload->>'hash' AS "hash!"
           FROM event_store.events added
           WHERE added.stream_id = ANY($1) AND added.event_type = 'PostImageAdded'
             AND NOT EXISTS (
               SELECT 1 FROM event_store.events other
               WHERE other.event_type = 'PostImageAdded'
                 AND other.payload->>'hash' = added.payload->>'hash'
                 AND NOT (other.stream_id = ANY($1))
                 AND NOT EXISTS (SELECT 1 FROM event_store.events closed
                                 WHERE closed.stream_id = other.stream_id
                                   AND closed.event_type = 'PostErased'))"#,
        posts
    )
    .fetch_all(&services.pool)
    .await?;
    for hash in hashes.iter().filter(|hash| images::is_content_hash(hash)) {
        let renditions = Path::from(images::renditions_prefix(hash));
        let stored: Vec<_> = services
            .images
            .list(Some(&renditions))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for key in stored
            .iter()
            .chain([&Path::from(images::original_key(hash))])
        {
            match services.images.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    if !hashes.is_empty() {
        metrics::counter!("chronicle_images_erased_total").increment(hashes.len() as u64);
    }
    Ok(())
}
