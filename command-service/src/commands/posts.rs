//! Post commands.
//!
//! Changing whether a post is published takes the post's lock exclusively;
//! adding a comment takes it shared (see `comments`). So "only published posts
//! take comments" holds even when an unpublish races a comment.

use chronicle_schema::CommandReply;
use sqlx::PgConnection;
use uuid::Uuid;

use super::unique_claims::{ClaimKind, claim};
use super::{Execution, transact};
use crate::aggregates::Post;
use crate::aggregates::post::{Draft, Edit};
use crate::auth::require;
use crate::error::CommandError;
use crate::validation::{FieldErrors, parse_body, parse_slug, parse_tags, parse_title, slugify};

/// How many suffixed variants of a title-derived slug are tried.
const SLUG_ATTEMPTS: usize = 20;

pub(super) async fn lock_post(
    connection: &mut PgConnection,
    post_id: Uuid,
    shared: bool,
) -> Result<(), sqlx::Error> {
    // Advisory locks assign no transaction id: the append stays the first write.
    if shared {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1::text, 7))",
            post_id.to_string()
        )
        .execute(connection)
        .await?;
    } else {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))",
            post_id.to_string()
        )
        .execute(connection)
        .await?;
    }
    Ok(())
}

pub(super) async fn create(
    execution: &Execution<'_>,
    title: &str,
    body: &str,
    tags: Option<&[String]>,
    slug: Option<&str>,
) -> Result<CommandReply, CommandError> {
    let mut errors = FieldErrors::new();
    let title = errors.check("title", parse_title(title));
    let body = errors.check("body", parse_body(body));
    let tags = errors.check("tags", parse_tags(tags.unwrap_or_default()));
    let requested_slug = match slug {
        Some(slug) => errors.check("slug", parse_slug(slug)).map(Some),
        None => Some(None),
    };
    let (Some(title), Some(body), Some(tags), Some(requested_slug)) =
        (title, body, tags, requested_slug)
    else {
        return Err(CommandError::Invalid(errors));
    };
    let post_id = Uuid::now_v7();

    transact!(execution, retry_on_race: false, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        // The slug is claimed before the append that records it. For a stream
        // being created that is safe: no earlier version exists whose order
        // on the bus the early transaction id could invert.
        let slug = claim_slug(connection, post_id, requested_slug.as_deref(), &title).await?;
        let draft = Draft {
            slug,
            title: title.clone(),
            body: body.clone(),
            tags: tags.clone(),
        };
        execution
            .decide_and_append::<Post>(connection, Some(&actor), post_id, None, |post| post.create(&actor, draft))
            .await
    })
}

/// Claims the requested slug (a conflict if taken), or the first free variant
/// of the title's.
async fn claim_slug(
    connection: &mut PgConnection,
    post_id: Uuid,
    requested: Option<&str>,
    title: &str,
) -> Result<String, CommandError> {
    if let Some(slug) = requested {
        if claim(connection, ClaimKind::Slug, slug, post_id).await? {
            return Ok(slug.to_owned());
        }
        let mut fields = FieldErrors::new();
        fields.add("slug", "is already taken");
        return Err(CommandError::Conflict {
            message: "a post with this slug already exists".into(),
            fields,
        });
    }
    let base = slugify(title);
    for attempt in 0..SLUG_ATTEMPTS {
        let candidate = match attempt {
            0 => base.clone(),
            1..10 => format!("{base}-{}", attempt + 1),
            _ => format!("{base}-{}", &post_id.simple().to_string()[24..]),
        };
        if claim(connection, ClaimKind::Slug, &candidate, post_id).await? {
            return Ok(candidate);
        }
    }
    Err(CommandError::Internal(format!("no free slug for {base}")))
}

pub(super) async fn edit(
    execution: &Execution<'_>,
    post_id: Uuid,
    title: Option<&str>,
    body: Option<&str>,
    tags: Option<&[String]>,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    let mut errors = FieldErrors::new();
    let edit = Edit {
        title: title.and_then(|title| errors.check("title", parse_title(title))),
        body: body.and_then(|body| errors.check("body", parse_body(body))),
        tags: tags.and_then(|tags| errors.check("tags", parse_tags(tags))),
    };
    if !errors.is_empty() {
        return Err(CommandError::Invalid(errors));
    }
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        let edit = Edit {
            title: edit.title.clone(),
            body: edit.body.clone(),
            tags: edit.tags.clone(),
        };
        execution
            .decide_and_append::<Post>(connection, Some(&actor), post_id, expected_version, |post| {
                post.edit(&actor, edit)
            })
            .await
    })
}

#[derive(Clone, Copy)]
pub(super) enum Transition {
    Publish,
    Unpublish,
    Delete,
}

pub(super) async fn transition(
    execution: &Execution<'_>,
    post_id: Uuid,
    transition: Transition,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        lock_post(connection, post_id, false).await?;
        execution
            .decide_and_append::<Post>(connection, Some(&actor), post_id, expected_version, |post| {
                match transition {
                    Transition::Publish => post.publish(&actor),
                    Transition::Unpublish => post.unpublish(&actor),
                    Transition::Delete => post.delete(&actor),
                }
            })
            .await
    })
}
