//! Comment commands.

use uuid::Uuid;

use super::{Attempt, Decided, Handle};
use crate::aggregates::{Aggregate, Comment, Post};
use crate::error::CommandError;
use crate::event_store::Lock;
use crate::validation::{FieldErrors, parse_comment_body};

fn parse(body: &str) -> Result<String, CommandError> {
    let mut errors = FieldErrors::new();
    errors
        .check("body", parse_comment_body(body))
        .ok_or(CommandError::Invalid(errors))
}

pub(super) struct Add {
    post_id: Uuid,
    body: String,
    parent_id: Option<Uuid>,
    comment_id: Uuid,
}

impl Add {
    pub fn parse(post_id: Uuid, body: &str, parent_id: Option<Uuid>) -> Result<Add, CommandError> {
        Ok(Add {
            post_id,
            body: parse(body)?,
            parent_id,
            comment_id: Uuid::now_v7(),
        })
    }
}

impl Handle for Add {
    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        // Shared: comments on one post don't wait for each other, only for a
        // change of the post's published state (or of the parent: deleted).
        let post = attempt.read::<Post>(self.post_id, Lock::Shared).await?;
        let parent = match self.parent_id {
            Some(parent_id) => Some(
                attempt
                    .read::<Comment>(parent_id, Lock::Shared)
                    .await?
                    .state,
            ),
            None => None,
        };
        let events = Comment::new(self.comment_id).add(
            &actor,
            &post.state,
            parent.as_ref(),
            self.body.clone(),
        )?;
        Ok(Decided::new::<Comment>(self.comment_id, 0, events))
    }
}

pub(super) struct EditComment {
    comment_id: Uuid,
    body: String,
    expected_version: Option<i32>,
}

impl EditComment {
    pub fn parse(
        comment_id: Uuid,
        body: &str,
        expected_version: Option<i32>,
    ) -> Result<EditComment, CommandError> {
        Ok(EditComment {
            comment_id,
            body: parse(body)?,
            expected_version,
        })
    }
}

impl Handle for EditComment {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let comment = attempt
            .target::<Comment>(self.comment_id, self.expected_version)
            .await?;
        let events = comment.state.edit(&actor, self.body.clone())?;
        Ok(
            Decided::new::<Comment>(self.comment_id, comment.version, events)
                .sealed_for(comment.state.author_id),
        )
    }
}

pub(super) struct DeleteComment {
    pub comment_id: Uuid,
    pub expected_version: Option<i32>,
}

impl Handle for DeleteComment {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let comment = attempt
            .target::<Comment>(self.comment_id, self.expected_version)
            .await?;
        let events = comment.state.delete(&actor)?;
        Ok(Decided::new::<Comment>(
            self.comment_id,
            comment.version,
            events,
        ))
    }
}
