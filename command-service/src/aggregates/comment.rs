//! A comment on a published post, or a reply to one (one level deep).

use chronicle_schema::events::{CommentAdded, CommentDeleted, CommentEdited, CommentEvent};
use chronicle_schema::{DomainEvent, StreamType};
use uuid::Uuid;

use super::post::Post;
use super::{Actor, Aggregate, Decision, Rejection};

#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub id: Uuid,
    pub added: bool,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub body: String,
    pub deleted: bool,
}

impl Aggregate for Comment {
    const STREAM_TYPE: StreamType = StreamType::Comment;
    type Event = CommentEvent;

    fn new(id: Uuid) -> Self {
        Comment {
            id,
            added: false,
            post_id: Uuid::nil(),
            author_id: Uuid::nil(),
            parent_id: None,
            body: String::new(),
            deleted: false,
        }
    }

    fn apply(&mut self, event: &CommentEvent) {
        match event {
            CommentEvent::Added(added) => {
                self.added = true;
                self.post_id = added.post_id;
                self.author_id = added.author_id;
                self.parent_id = added.parent_id;
                self.body.clone_from(&added.body);
            }
            CommentEvent::Edited(edited) => self.body.clone_from(&edited.body),
            CommentEvent::Deleted(_) => {
                self.deleted = true;
                self.body.clear();
            }
            // Gone for good: every command on it is answered "not found".
            CommentEvent::Erased(_) => *self = Comment::new(self.id),
        }
    }

    fn own_event(event: DomainEvent) -> Option<CommentEvent> {
        match event {
            DomainEvent::Comment(event) => Some(event),
            _ => None,
        }
    }

    fn exists(&self) -> bool {
        self.added
    }
}

impl Comment {
    /// Adds this comment to `post`, as a reply to `parent` when given.
    pub fn add(
        &self,
        actor: &Actor,
        post: &Post,
        parent: Option<&Comment>,
        body: String,
    ) -> Decision<CommentEvent> {
        if self.added {
            return Err(Rejection::Conflict("this comment already exists"));
        }
        if !post.exists() {
            return Err(Rejection::NotFound("post"));
        }
        if !post.is_published() {
            return Err(Rejection::invalid(
                "postId",
                "only published posts take comments",
            ));
        }
        if let Some(parent) = parent {
            if !parent.added || parent.post_id != post.id {
                return Err(Rejection::invalid(
                    "parentId",
                    "is not a comment on this post",
                ));
            }
            if parent.parent_id.is_some() {
                return Err(Rejection::invalid(
                    "parentId",
                    "replies are one level deep: reply to the top-level comment",
                ));
            }
            if parent.deleted {
                return Err(Rejection::invalid("parentId", "the comment was deleted"));
            }
        }
        Ok(vec![
            CommentAdded {
                post_id: post.id,
                author_id: actor.id,
                parent_id: parent.map(|parent| parent.id),
                body,
            }
            .into(),
        ])
    }

    pub fn edit(&self, actor: &Actor, body: String) -> Decision<CommentEvent> {
        self.ensure_present()?;
        if actor.id != self.author_id {
            return Err(Rejection::Forbidden("only the author may edit a comment"));
        }
        if body == self.body {
            return Ok(vec![]);
        }
        Ok(vec![CommentEdited { body }.into()])
    }

    /// The author, a moderator or an admin.
    pub fn delete(&self, actor: &Actor) -> Decision<CommentEvent> {
        self.ensure_present()?;
        if actor.id != self.author_id && !actor.role.can_moderate() {
            return Err(Rejection::Forbidden(
                "only the author, a moderator or an admin may delete a comment",
            ));
        }
        Ok(vec![CommentDeleted {}.into()])
    }

    fn ensure_present(&self) -> Result<(), Rejection> {
        if self.added && !self.deleted {
            Ok(())
        } else {
            Err(Rejection::NotFound("comment"))
        }
    }
}

#[cfg(test)]
mod tests {
    use chronicle_schema::Role;
    use chronicle_schema::events::{PostCreated, PostEvent, PostPublished};
    use proptest::prelude::*;

    use super::*;

    fn actor(id: u128, role: Role) -> Actor {
        Actor {
            id: Uuid::from_u128(id),
            role,
            handle: format!("user{id}"),
        }
    }

    fn post(published: bool) -> Post {
        let mut post = Post::new(Uuid::from_u128(50));
        post.apply(&PostEvent::Created(PostCreated {
            author_id: Uuid::from_u128(1),
            author_handle: "user1".into(),
            slug: "s".into(),
            title: "t".into(),
            body: "b".into(),
            tags: vec![],
        }));
        if published {
            post.apply(&PostEvent::Published(PostPublished {}));
        }
        post
    }

    fn existing(id: u128, parent: Option<Uuid>, post_id: Uuid) -> Comment {
        let mut comment = Comment::new(Uuid::from_u128(id));
        comment.apply(&CommentEvent::Added(CommentAdded {
            post_id,
            author_id: Uuid::from_u128(2),
            parent_id: parent,
            body: "hi".into(),
        }));
        comment
    }

    #[test]
    fn a_published_post_takes_a_comment() {
        let post = post(true);
        let events = Comment::new(Uuid::from_u128(7))
            .add(&actor(2, Role::User), &post, None, "Nice".into())
            .unwrap();
        assert_eq!(
            events,
            vec![CommentEvent::Added(CommentAdded {
                post_id: post.id,
                author_id: Uuid::from_u128(2),
                parent_id: None,
                body: "Nice".into(),
            })]
        );
    }

    #[test]
    fn a_draft_takes_no_comment() {
        let result = Comment::new(Uuid::from_u128(7)).add(
            &actor(2, Role::User),
            &post(false),
            None,
            "x".into(),
        );
        assert!(matches!(result, Err(Rejection::Invalid(_))));
    }

    #[test]
    fn replies_are_one_level_deep_and_on_the_same_post() {
        let post = post(true);
        let top = existing(10, None, post.id);
        let reply = existing(11, Some(top.id), post.id);
        let elsewhere = existing(12, None, Uuid::from_u128(51));
        let new = Comment::new(Uuid::from_u128(13));
        let user = actor(2, Role::User);
        assert!(new.add(&user, &post, Some(&top), "re".into()).is_ok());
        assert!(matches!(
            new.add(&user, &post, Some(&reply), "re re".into()),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            new.add(&user, &post, Some(&elsewhere), "x".into()),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn the_author_edits_moderators_and_admins_delete() {
        let comment = existing(10, None, Uuid::from_u128(50));
        assert!(matches!(
            comment.edit(&actor(3, Role::Moderator), "x".into()),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(
            comment
                .edit(&actor(2, Role::User), "edited".into())
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            comment.delete(&actor(5, Role::User)),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(comment.delete(&actor(3, Role::Moderator)).unwrap().len(), 1);
        assert_eq!(comment.delete(&actor(4, Role::Admin)).unwrap().len(), 1);
        assert_eq!(comment.delete(&actor(2, Role::User)).unwrap().len(), 1);
    }

    #[test]
    fn a_deleted_comment_has_no_body_and_takes_no_edit() {
        let mut comment = existing(10, None, Uuid::from_u128(50));
        comment.apply(&CommentEvent::Deleted(CommentDeleted {}));
        assert!(comment.body.is_empty());
        assert_eq!(
            comment.edit(&actor(2, Role::User), "again".into()),
            Err(Rejection::NotFound("comment"))
        );
        assert_eq!(
            comment.delete(&actor(2, Role::User)),
            Err(Rejection::NotFound("comment"))
        );
    }

    proptest! {
        /// However comments are chained, an accepted one is never more than
        /// one level below the post.
        #[test]
        fn no_accepted_comment_is_nested_deeper_than_one_level(parents in proptest::collection::vec(proptest::option::of(0usize..20), 1..20)) {
            let post = post(true);
            let user = actor(2, Role::User);
            let mut accepted: Vec<Comment> = Vec::new();
            for (index, parent) in parents.into_iter().enumerate() {
                let parent = parent.and_then(|parent| accepted.get(parent % accepted.len().max(1))).cloned();
                let mut comment = Comment::new(Uuid::from_u128(1000 + index as u128));
                if let Ok(events) = comment.add(&user, &post, parent.as_ref(), "x".into()) {
                    for event in &events {
                        comment.apply(event);
                    }
                    if let Some(parent_id) = comment.parent_id {
                        let parent = accepted.iter().find(|c| c.id == parent_id).unwrap();
                        prop_assert!(parent.parent_id.is_none());
                    }
                    accepted.push(comment);
                }
            }
        }
    }
}
