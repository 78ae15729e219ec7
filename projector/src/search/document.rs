//! A post as the index knows it, folded from the post's own stream.
//!
//! The indexer re-folds a post's whole stream from the event store whenever
//! an event of it arrives, so a document is always the post's current state:
//! applying twice, or late, changes nothing, and a replay builds the same.

use chronicle_schema::events::PostEvent;
use chronicle_schema::search_schema::{
    PostIndexSchema, STATUS_DELETED, STATUS_DRAFT, STATUS_PUBLISHED,
};
use chronicle_schema::{DomainEvent, RecordedEvent};
use chrono::{DateTime, Utc};
use tantivy::TantivyDocument;
use uuid::Uuid;

use crate::markdown::plain_text;

#[derive(Clone, Debug, PartialEq)]
pub struct SearchPost {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    /// Markdown; indexed as its prose.
    pub body: String,
    pub tags: Vec<String>,
    pub author_handle: String,
    pub published: bool,
    pub deleted: bool,
    pub published_at: Option<DateTime<Utc>>,
    pub version: i32,
}

impl SearchPost {
    /// Applies one event of the post's stream (events in version order).
    pub fn apply(post: &mut Option<SearchPost>, recorded: &RecordedEvent) {
        let DomainEvent::Post(event) = &recorded.event else {
            return;
        };
        match (post.as_mut(), event) {
            (_, PostEvent::Created(created)) => {
                *post = Some(SearchPost {
                    id: recorded.stream_id,
                    slug: created.slug.clone(),
                    title: created.title.clone(),
                    body: created.body.clone(),
                    tags: created.tags.clone(),
                    author_handle: created.author_handle.clone(),
                    published: false,
                    deleted: false,
                    published_at: None,
                    version: recorded.version,
                });
                return;
            }
            (Some(current), PostEvent::Edited(edited)) => {
                current.title.clone_from(&edited.title);
                current.body.clone_from(&edited.body);
                current.tags.clone_from(&edited.tags);
            }
            (Some(current), PostEvent::Published(_)) => {
                current.published = true;
                current.published_at.get_or_insert(recorded.recorded_at);
            }
            (Some(current), PostEvent::Unpublished(_)) => current.published = false,
            (Some(current), PostEvent::Deleted(_)) => current.deleted = true,
            (None, _) => return,
        }
        if let Some(current) = post.as_mut() {
            current.version = recorded.version;
        }
    }

    pub fn fold<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Option<SearchPost> {
        let mut post = None;
        for event in events {
            SearchPost::apply(&mut post, event);
        }
        post
    }

    pub fn status(&self) -> &'static str {
        if self.deleted {
            STATUS_DELETED
        } else if self.published {
            STATUS_PUBLISHED
        } else {
            STATUS_DRAFT
        }
    }

    /// The document: full text for drafts and published posts (queries filter
    /// by status), only the id, status and version for a deleted one.
    pub fn to_document(&self, schema: &PostIndexSchema) -> TantivyDocument {
        let mut document = TantivyDocument::default();
        document.add_text(schema.id, self.id.to_string());
        document.add_text(schema.status, self.status());
        document.add_u64(
            schema.version,
            u64::try_from(self.version).unwrap_or_default(),
        );
        if self.deleted {
            return document;
        }
        document.add_text(schema.slug, &self.slug);
        document.add_text(schema.title, &self.title);
        document.add_text(schema.body, plain_text(&self.body));
        for tag in &self.tags {
            document.add_text(schema.tag, tag);
        }
        document.add_text(schema.tags_text, self.tags.join(" "));
        document.add_text(schema.author_handle, &self.author_handle);
        if let Some(published_at) = self.published_at {
            document.add_date(
                schema.published_at,
                tantivy::DateTime::from_timestamp_micros(published_at.timestamp_micros()),
            );
        }
        document
    }
}

#[cfg(test)]
mod tests {
    use chronicle_schema::events::{
        PostCreated, PostDeleted, PostEdited, PostPublished, PostUnpublished,
    };
    use chronicle_schema::{EventMetadata, StreamType};

    use super::*;

    fn recorded(version: i32, event: PostEvent) -> RecordedEvent {
        RecordedEvent {
            position: i64::from(version),
            event_id: Uuid::now_v7(),
            stream_id: Uuid::from_u128(7),
            stream_type: StreamType::Post,
            version,
            event: DomainEvent::Post(event),
            metadata: EventMetadata {
                command_id: Uuid::nil(),
                correlation_id: Uuid::nil(),
                causation_id: Uuid::nil(),
                actor_id: None,
                traceparent: None,
            },
            recorded_at: DateTime::from_timestamp(1_700_000_000 + i64::from(version), 0).unwrap(),
        }
    }

    #[test]
    fn a_stream_folds_to_the_current_post_keeping_the_first_publication_time() {
        let events = [
            recorded(
                1,
                PostCreated {
                    author_id: Uuid::nil(),
                    author_handle: "ada".into(),
                    slug: "s".into(),
                    title: "T".into(),
                    body: "B".into(),
                    tags: vec!["a".into()],
                }
                .into(),
            ),
            recorded(2, PostPublished {}.into()),
            recorded(3, PostUnpublished {}.into()),
            recorded(
                4,
                PostEdited {
                    title: "T2".into(),
                    body: "B2".into(),
                    tags: vec![],
                }
                .into(),
            ),
            recorded(5, PostPublished {}.into()),
        ];
        let post = SearchPost::fold(&events).unwrap();
        assert_eq!(post.title, "T2");
        assert!(post.published);
        assert_eq!(post.published_at, Some(events[1].recorded_at));
        assert_eq!(post.version, 5);
        let deleted =
            SearchPost::fold(events.iter().chain([&recorded(6, PostDeleted {}.into())])).unwrap();
        assert_eq!(deleted.status(), STATUS_DELETED);
    }
}
