//! A blog post: drafted, edited, published, unpublished, deleted (softly).

use chronicle_schema::events::{
    PostCreated, PostDeleted, PostEdited, PostEvent, PostImageAdded, PostImageProcessed,
    PostImageRejected, PostPublished, PostUnpublished,
};
use chronicle_schema::images::{ImageOutcome, MAX_IMAGES_PER_POST, UploadedImage};
use chronicle_schema::{DomainEvent, Role, StreamType};
use uuid::Uuid;

use super::{Actor, Aggregate, Decision, Rejection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostStatus {
    Draft,
    Published,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Post {
    pub id: Uuid,
    pub created: bool,
    pub author_id: Uuid,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub status: PostStatus,
    pub deleted: bool,
    /// Its images, and whether each has an outcome yet.
    pub images: Vec<(Uuid, ImageProgress)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageProgress {
    Processing,
    Done,
}

/// A draft's parsed content.
pub struct Draft {
    pub slug: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
}

/// Parsed changes; `None` keeps the current value.
#[derive(Default)]
pub struct Edit {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

impl Aggregate for Post {
    const STREAM_TYPE: StreamType = StreamType::Post;
    type Event = PostEvent;

    fn new(id: Uuid) -> Self {
        Post {
            id,
            created: false,
            author_id: Uuid::nil(),
            slug: String::new(),
            title: String::new(),
            body: String::new(),
            tags: Vec::new(),
            status: PostStatus::Draft,
            deleted: false,
            images: Vec::new(),
        }
    }

    fn apply(&mut self, event: &PostEvent) {
        match event {
            PostEvent::Created(created) => {
                self.created = true;
                self.author_id = created.author_id;
                self.slug.clone_from(&created.slug);
                self.title.clone_from(&created.title);
                self.body.clone_from(&created.body);
                self.tags.clone_from(&created.tags);
            }
            PostEvent::Edited(edited) => {
                self.title.clone_from(&edited.title);
                self.body.clone_from(&edited.body);
                self.tags.clone_from(&edited.tags);
            }
            PostEvent::Published(_) => self.status = PostStatus::Published,
            PostEvent::Unpublished(_) => self.status = PostStatus::Draft,
            PostEvent::Deleted(_) => self.deleted = true,
            // Gone for good: every command on it is answered "not found".
            PostEvent::Erased(_) => *self = Post::new(self.id),
            PostEvent::ImageAdded(added) => {
                self.images
                    .push((added.image_id, ImageProgress::Processing));
            }
            PostEvent::ImageProcessed(PostImageProcessed { image_id, .. })
            | PostEvent::ImageRejected(PostImageRejected { image_id, .. }) => {
                if let Some((_, progress)) = self.images.iter_mut().find(|(id, _)| id == image_id) {
                    *progress = ImageProgress::Done;
                }
            }
        }
    }

    fn own_event(event: DomainEvent) -> Option<PostEvent> {
        match event {
            DomainEvent::Post(event) => Some(event),
            _ => None,
        }
    }

    fn exists(&self) -> bool {
        self.created && !self.deleted
    }
}

impl Post {
    pub fn is_published(&self) -> bool {
        self.exists() && self.status == PostStatus::Published
    }

    pub fn create(&self, author: &Actor, draft: Draft) -> Decision<PostEvent> {
        if self.created {
            return Err(Rejection::Conflict("this post already exists"));
        }
        Ok(vec![
            PostCreated {
                author_id: author.id,
                author_handle: author.handle.clone(),
                slug: draft.slug,
                title: draft.title,
                body: draft.body,
                tags: draft.tags,
            }
            .into(),
        ])
    }

    /// The author edits their own post; nobody else rewrites their words.
    pub fn edit(&self, actor: &Actor, edit: Edit) -> Decision<PostEvent> {
        self.ensure_exists()?;
        if actor.id != self.author_id {
            return Err(Rejection::Forbidden("only the author may edit a post"));
        }
        let edited = PostEdited {
            title: edit.title.unwrap_or_else(|| self.title.clone()),
            body: edit.body.unwrap_or_else(|| self.body.clone()),
            tags: edit.tags.unwrap_or_else(|| self.tags.clone()),
        };
        if edited.title == self.title && edited.body == self.body && edited.tags == self.tags {
            return Ok(vec![]);
        }
        Ok(vec![edited.into()])
    }

    pub fn publish(&self, actor: &Actor) -> Decision<PostEvent> {
        self.ensure_exists()?;
        if actor.id != self.author_id {
            return Err(Rejection::Forbidden("only the author may publish a post"));
        }
        if self.status == PostStatus::Published {
            return Ok(vec![]);
        }
        Ok(vec![PostPublished {}.into()])
    }

    /// The author, or a moderator or admin taking a post down.
    pub fn unpublish(&self, actor: &Actor) -> Decision<PostEvent> {
        self.ensure_exists()?;
        if actor.id != self.author_id && !actor.role.can_moderate() {
            return Err(Rejection::Forbidden(
                "only the author, a moderator or an admin may unpublish a post",
            ));
        }
        if self.status == PostStatus::Draft {
            return Ok(vec![]);
        }
        Ok(vec![PostUnpublished {}.into()])
    }

    /// The author or an admin (moderators unpublish instead).
    pub fn delete(&self, actor: &Actor) -> Decision<PostEvent> {
        self.ensure_exists()?;
        if actor.id != self.author_id && actor.role != Role::Admin {
            return Err(Rejection::Forbidden(
                "only the author or an admin may delete a post",
            ));
        }
        Ok(vec![PostDeleted {}.into()])
    }

    /// An uploaded image, attached by the post's author.
    pub fn attach_image(
        &self,
        actor: &Actor,
        image: &UploadedImage,
        alt: String,
    ) -> Decision<PostEvent> {
        self.ensure_exists()?;
        if actor.id != self.author_id {
            return Err(Rejection::Forbidden(
                "only the author may add images to a post",
            ));
        }
        if self.images.iter().any(|(id, _)| *id == image.image_id) {
            return Ok(vec![]);
        }
        if self.images.len() >= MAX_IMAGES_PER_POST {
            return Err(Rejection::invalid(
                "file",
                &format!("a post has at most {MAX_IMAGES_PER_POST} images"),
            ));
        }
        Ok(vec![
            PostImageAdded {
                image_id: image.image_id,
                hash: image.hash.clone(),
                format: image.format,
                width: image.width,
                height: image.height,
                bytes: image.bytes,
                alt,
            }
            .into(),
        ])
    }

    /// The image worker's outcome. Once per image: a redelivered outcome,
    /// or one for an image the post no longer has (erased), changes nothing.
    pub fn record_image_outcome(
        &self,
        image_id: Uuid,
        outcome: &ImageOutcome,
    ) -> Decision<PostEvent> {
        let processing = self
            .images
            .iter()
            .any(|(id, progress)| *id == image_id && *progress == ImageProgress::Processing);
        // Once deleted, nothing more is appended (the image is gone with it).
        if !processing || !self.exists() {
            return Ok(vec![]);
        }
        Ok(vec![match outcome {
            ImageOutcome::Processed { renditions } => PostImageProcessed {
                image_id,
                renditions: renditions.clone(),
            }
            .into(),
            ImageOutcome::Rejected { reason } => PostImageRejected {
                image_id,
                reason: reason.clone(),
            }
            .into(),
        }])
    }

    fn ensure_exists(&self) -> Result<(), Rejection> {
        if self.exists() {
            Ok(())
        } else {
            Err(Rejection::NotFound("post"))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const AUTHOR: Uuid = Uuid::from_u128(1);

    fn actor(id: u128, role: Role) -> Actor {
        Actor {
            id: Uuid::from_u128(id),
            role,
            handle: format!("user{id}"),
        }
    }

    fn author() -> Actor {
        actor(1, Role::User)
    }

    fn created() -> PostEvent {
        PostCreated {
            author_id: AUTHOR,
            author_handle: "user1".into(),
            slug: "hello".into(),
            title: "Hello".into(),
            body: "First".into(),
            tags: vec!["rust".into()],
        }
        .into()
    }

    fn given(events: &[PostEvent]) -> Post {
        let mut post = Post::new(Uuid::from_u128(99));
        for event in events {
            post.apply(event);
        }
        post
    }

    fn draft() -> Draft {
        Draft {
            slug: "hello".into(),
            title: "Hello".into(),
            body: "First".into(),
            tags: vec!["rust".into()],
        }
    }

    fn uploaded(id: u128) -> UploadedImage {
        UploadedImage {
            image_id: Uuid::from_u128(id),
            hash: "ab".repeat(32),
            format: chronicle_schema::images::ImageFormat::Png,
            width: 640,
            height: 480,
            bytes: 1234,
        }
    }

    #[test]
    fn only_the_author_attaches_images_and_each_outcome_is_recorded_once() {
        let post = given(&[created()]);
        assert!(matches!(
            post.attach_image(&actor(2, Role::Admin), &uploaded(7), "a cat".into()),
            Err(Rejection::Forbidden(_))
        ));
        let events = post
            .attach_image(&author(), &uploaded(7), "a cat".into())
            .unwrap();
        assert_eq!(events.len(), 1);
        let post = given(&[created(), events[0].clone()]);
        // The same upload attached again (a retry) adds nothing.
        assert_eq!(
            post.attach_image(&author(), &uploaded(7), "a cat".into()),
            Ok(vec![])
        );
        let outcome = ImageOutcome::Rejected {
            reason: "corrupt".into(),
        };
        let recorded = post
            .record_image_outcome(Uuid::from_u128(7), &outcome)
            .unwrap();
        assert!(matches!(recorded[0], PostEvent::ImageRejected(_)));
        let post = given(&[created(), events[0].clone(), recorded[0].clone()]);
        assert_eq!(
            post.record_image_outcome(Uuid::from_u128(7), &outcome),
            Ok(vec![])
        );
        assert_eq!(
            post.record_image_outcome(Uuid::from_u128(8), &outcome),
            Ok(vec![]),
            "an image the post does not have"
        );
    }

    #[test]
    fn a_deleted_post_takes_no_outcome() {
        let mut post = given(&[created()]);
        for event in post
            .attach_image(&author(), &uploaded(7), String::new())
            .unwrap()
        {
            post.apply(&event);
        }
        for event in post.delete(&author()).unwrap() {
            post.apply(&event);
        }
        let outcome = ImageOutcome::Processed { renditions: vec![] };
        assert_eq!(
            post.record_image_outcome(Uuid::from_u128(7), &outcome),
            Ok(vec![])
        );
    }

    #[test]
    fn a_post_takes_a_bounded_number_of_images() {
        let mut post = given(&[created()]);
        for id in 0..MAX_IMAGES_PER_POST as u128 {
            for event in post
                .attach_image(&author(), &uploaded(id), String::new())
                .unwrap()
            {
                post.apply(&event);
            }
        }
        assert!(matches!(
            post.attach_image(&author(), &uploaded(999), String::new()),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn creating_a_post_records_a_draft_with_its_author() {
        let events = given(&[]).create(&author(), draft()).unwrap();
        assert_eq!(events, vec![created()]);
        let post = given(&events);
        assert_eq!(post.status, PostStatus::Draft);
        assert_eq!(post.author_id, AUTHOR);
    }

    #[test]
    fn the_author_edits_and_only_changed_content_is_recorded() {
        let post = given(&[created()]);
        let events = post
            .edit(
                &author(),
                Edit {
                    title: Some("Hi".into()),
                    ..Edit::default()
                },
            )
            .unwrap();
        assert_eq!(
            events,
            vec![PostEvent::Edited(PostEdited {
                title: "Hi".into(),
                body: "First".into(),
                tags: vec!["rust".into()]
            })]
        );
        assert!(
            post.edit(
                &author(),
                Edit {
                    title: Some("Hello".into()),
                    ..Edit::default()
                }
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn nobody_else_edits_or_publishes_not_even_an_admin() {
        let post = given(&[created()]);
        for other in [
            actor(2, Role::User),
            actor(3, Role::Moderator),
            actor(4, Role::Admin),
        ] {
            assert!(matches!(
                post.edit(&other, Edit::default()),
                Err(Rejection::Forbidden(_))
            ));
            assert!(matches!(post.publish(&other), Err(Rejection::Forbidden(_))));
        }
    }

    #[test]
    fn moderators_and_admins_unpublish_any_post_users_do_not() {
        let post = given(&[created(), PostPublished {}.into()]);
        assert!(matches!(
            post.unpublish(&actor(2, Role::User)),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(post.unpublish(&actor(3, Role::Moderator)).unwrap().len(), 1);
        assert_eq!(post.unpublish(&actor(4, Role::Admin)).unwrap().len(), 1);
        assert_eq!(post.unpublish(&author()).unwrap().len(), 1);
    }

    #[test]
    fn the_author_or_an_admin_deletes_a_moderator_does_not() {
        let post = given(&[created()]);
        assert!(matches!(
            post.delete(&actor(3, Role::Moderator)),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(post.delete(&actor(4, Role::Admin)).unwrap().len(), 1);
        assert_eq!(post.delete(&author()).unwrap().len(), 1);
    }

    #[test]
    fn a_deleted_post_is_gone_for_every_command() {
        let post = given(&[created(), PostDeleted {}.into()]);
        assert_eq!(
            post.edit(&author(), Edit::default()),
            Err(Rejection::NotFound("post"))
        );
        assert_eq!(post.publish(&author()), Err(Rejection::NotFound("post")));
        assert_eq!(post.unpublish(&author()), Err(Rejection::NotFound("post")));
        assert_eq!(post.delete(&author()), Err(Rejection::NotFound("post")));
        assert!(!post.is_published());
    }

    #[test]
    fn publishing_twice_appends_once() {
        let published = given(&[created(), PostPublished {}.into()]);
        assert!(published.publish(&author()).unwrap().is_empty());
        assert!(given(&[created()]).unpublish(&author()).unwrap().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Step {
        Edit(u128),
        Publish(u128),
        Unpublish(u128),
        Delete(u128),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u128..5).prop_map(Step::Edit),
            (1u128..5).prop_map(Step::Publish),
            (1u128..5).prop_map(Step::Unpublish),
            (1u128..5).prop_map(Step::Delete),
        ]
    }

    fn role_of(id: u128) -> Role {
        match id {
            3 => Role::Moderator,
            4 => Role::Admin,
            _ => Role::User,
        }
    }

    proptest! {
        /// Whatever anyone tries, in any order: the post keeps its author, a
        /// non-author never changes its content, and once deleted nothing
        /// more is ever appended.
        #[test]
        fn invariants_hold_for_any_command_sequence(steps in proptest::collection::vec(step(), 0..30)) {
            let mut post = given(&[created()]);
            let mut history = vec![created()];
            for step in steps {
                let was_deleted = post.deleted;
                let (who, decision) = match &step {
                    Step::Edit(who) => (*who, post.edit(&actor(*who, role_of(*who)), Edit { title: Some(format!("by {who}")), ..Edit::default() })),
                    Step::Publish(who) => (*who, post.publish(&actor(*who, role_of(*who)))),
                    Step::Unpublish(who) => (*who, post.unpublish(&actor(*who, role_of(*who)))),
                    Step::Delete(who) => (*who, post.delete(&actor(*who, role_of(*who)))),
                };
                if let Ok(events) = decision {
                    prop_assert!(!was_deleted || events.is_empty());
                    for event in &events {
                        if matches!(event, PostEvent::Edited(_)) {
                            prop_assert_eq!(who, 1, "only the author edits");
                        }
                        post.apply(event);
                        history.push(event.clone());
                    }
                }
                prop_assert_eq!(post.author_id, AUTHOR);
            }
            prop_assert_eq!(given(&history), post, "state is a pure fold of the history");
        }
    }
}
