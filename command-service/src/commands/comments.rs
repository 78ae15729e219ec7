//! Comment commands.

use chronicle_schema::CommandReply;
use uuid::Uuid;

use super::posts::lock_post;
use super::{Execution, transact};
use crate::aggregates::{Comment, Post};
use crate::auth::require;
use crate::error::CommandError;
use crate::event_store;
use crate::validation::{FieldErrors, parse_comment_body};

fn parse(body: &str) -> Result<String, CommandError> {
    let mut errors = FieldErrors::new();
    errors
        .check("body", parse_comment_body(body))
        .ok_or(CommandError::Invalid(errors))
}

pub(super) async fn add(
    execution: &Execution<'_>,
    post_id: Uuid,
    body: &str,
    parent_id: Option<Uuid>,
) -> Result<CommandReply, CommandError> {
    let body = parse(body)?;
    let comment_id = Uuid::now_v7();
    transact!(execution, retry_on_race: false, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        // Shared: comments on one post don't wait for each other, only for a
        // change of the post's published state.
        lock_post(connection, post_id, true).await?;
        let post = event_store::load::<Post>(connection, post_id).await?.state;
        let parent = match parent_id {
            Some(parent_id) => Some(event_store::load::<Comment>(connection, parent_id).await?.state),
            None => None,
        };
        execution
            .decide_and_append::<Comment>(connection, Some(&actor), comment_id, None, |comment| {
                comment.add(&actor, &post, parent.as_ref(), body.clone())
            })
            .await
    })
}

pub(super) async fn edit(
    execution: &Execution<'_>,
    comment_id: Uuid,
    body: &str,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    let body = parse(body)?;
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        execution
            .decide_and_append::<Comment>(connection, Some(&actor), comment_id, expected_version, |comment| {
                comment.edit(&actor, body.clone())
            })
            .await
    })
}

pub(super) async fn delete(
    execution: &Execution<'_>,
    comment_id: Uuid,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        execution
            .decide_and_append::<Comment>(connection, Some(&actor), comment_id, expected_version, |comment| {
                comment.delete(&actor)
            })
            .await
    })
}
