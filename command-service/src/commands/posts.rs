//! Post commands.
//!
//! Changing whether a post is published takes the post's lock exclusively;
//! adding a comment takes it shared (see `comments`). So "only published posts
//! take comments" holds even when an unpublish races a comment. The locks are
//! taken by the append statement itself, before it checks the versions read.

use uuid::Uuid;

use super::{Attempt, Decided, Handle};
use crate::aggregates::Post;
use crate::aggregates::post::{Draft, Edit};
use crate::error::CommandError;
use crate::event_store::Claim;
use crate::validation::{FieldErrors, parse_body, parse_slug, parse_tags, parse_title, slugify};

/// Numbered variants of a title-derived slug offered before a random one.
const NUMBERED_SLUGS: usize = 10;

pub(super) struct Create {
    title: String,
    body: String,
    tags: Vec<String>,
    requested_slug: Option<String>,
    post_id: Uuid,
}

impl Create {
    pub fn parse(
        title: &str,
        body: &str,
        tags: Option<&[String]>,
        slug: Option<&str>,
    ) -> Result<Create, CommandError> {
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
        Ok(Create {
            title,
            body,
            tags,
            requested_slug,
            post_id: Uuid::now_v7(),
        })
    }

    /// The requested slug (taken: a conflict), or the title's, then numbered
    /// variants of it, then one with the post id's random tail: the append
    /// claims the first that is free.
    fn slug_candidates(&self) -> Vec<String> {
        if let Some(slug) = &self.requested_slug {
            return vec![slug.clone()];
        }
        let base = slugify(&self.title);
        let mut candidates = vec![base.clone()];
        candidates.extend((2..=NUMBERED_SLUGS).map(|number| format!("{base}-{number}")));
        candidates.push(format!(
            "{base}-{}",
            &self.post_id.simple().to_string()[20..]
        ));
        candidates
    }
}

impl Handle for Create {
    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let candidates = self.slug_candidates();
        // A new stream: nothing to read. The slug is the first candidate for
        // now; the append writes the one it claims into the event.
        let draft = Draft {
            slug: candidates[0].clone(),
            title: self.title.clone(),
            body: self.body.clone(),
            tags: self.tags.clone(),
        };
        let events =
            <Post as crate::aggregates::Aggregate>::new(self.post_id).create(&actor, draft)?;
        let mut decided = Decided::new::<Post>(self.post_id, 0, events);
        decided.claims = vec![Claim {
            kind: "slug",
            candidates,
            field: Some("slug"),
        }];
        Ok(decided)
    }
}

pub(super) struct EditPost {
    post_id: Uuid,
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
    expected_version: Option<i32>,
}

impl EditPost {
    pub fn parse(
        post_id: Uuid,
        title: Option<&str>,
        body: Option<&str>,
        tags: Option<&[String]>,
        expected_version: Option<i32>,
    ) -> Result<EditPost, CommandError> {
        let mut errors = FieldErrors::new();
        let edit = EditPost {
            post_id,
            title: title.and_then(|title| errors.check("title", parse_title(title))),
            body: body.and_then(|body| errors.check("body", parse_body(body))),
            tags: tags.and_then(|tags| errors.check("tags", parse_tags(tags))),
            expected_version,
        };
        if !errors.is_empty() {
            return Err(CommandError::Invalid(errors));
        }
        Ok(edit)
    }
}

impl Handle for EditPost {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let post = attempt
            .target::<Post>(self.post_id, self.expected_version)
            .await?;
        let events = post.state.edit(
            &actor,
            Edit {
                title: self.title.clone(),
                body: self.body.clone(),
                tags: self.tags.clone(),
            },
        )?;
        Ok(Decided::new::<Post>(self.post_id, post.version, events)
            .sealed_for(post.state.author_id))
    }
}

#[derive(Clone, Copy)]
pub(super) enum Change {
    Publish,
    Unpublish,
    Delete,
}

pub(super) struct Transition {
    post_id: Uuid,
    change: Change,
    expected_version: Option<i32>,
}

impl Transition {
    pub fn new(post_id: Uuid, change: Change, expected_version: Option<i32>) -> Transition {
        Transition {
            post_id,
            change,
            expected_version,
        }
    }
}

impl Handle for Transition {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let post = attempt
            .target::<Post>(self.post_id, self.expected_version)
            .await?;
        let events = match self.change {
            Change::Publish => post.state.publish(&actor),
            Change::Unpublish => post.state.unpublish(&actor),
            Change::Delete => post.state.delete(&actor),
        }?;
        Ok(Decided::new::<Post>(self.post_id, post.version, events))
    }
}
