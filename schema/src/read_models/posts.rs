//! `posts`: the post view, with its author's handle, name and standing, its
//! tags, excerpt and comment count.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{FoldError, column};
use crate::RecordedEvent;
use crate::events::PostEvent;
use crate::images::{ImageFormat, Rendition};
use crate::markdown::excerpt;
pub use sqlx::types::Json;

/// Where a post is in its life (deletion is a flag beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PostStatus {
    Draft,
    Published,
}

impl PostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PostStatus::Draft => "DRAFT",
            PostStatus::Published => "PUBLISHED",
        }
    }

    pub fn parse(value: &str) -> Option<PostStatus> {
        match value {
            "DRAFT" => Some(PostStatus::Draft),
            "PUBLISHED" => Some(PostStatus::Published),
            _ => None,
        }
    }
}

crate::sql_text::text_enum!(PostStatus);

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct PostRow {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub excerpt: String,
    pub status: PostStatus,
    pub deleted: bool,
    /// Derived: whether the author's account is active (see [`Author`]).
    pub author_active: bool,
    pub tags: Vec<String>,
    pub author_id: Uuid,
    pub author_handle: String,
    /// Derived: the author's display name (see [`Author`]).
    pub author_display_name: String,
    /// Derived: the post's comments and replies that are not deleted.
    pub comment_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub version: i32,
    /// Its images, in upload order (a JSONB array of [`PostImage`]).
    pub images: Json<Vec<PostImage>>,
}

/// Every column a reader selects (`public`, generated from these, is not one).
pub const COLUMNS: &str = "id, slug, title, body, excerpt, status, deleted, author_active, tags, \
     author_id, author_handle, author_display_name, comment_count, created_at, updated_at, \
     published_at, version, images";

/// Where an image is in its processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageStatus {
    Processing,
    Ready,
    Failed,
}

/// One image of a post, as readers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostImage {
    pub id: Uuid,
    pub hash: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub alt: String,
    pub status: ImageStatus,
    #[serde(default)]
    pub renditions: Vec<Rendition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a post copies from its author's row.
#[derive(Clone, Debug, PartialEq)]
pub struct Author {
    pub display_name: String,
    pub active: bool,
}

impl PostRow {
    /// What everyone may see: published, not deleted, by an active author.
    /// The same rule is the table's generated column `public`
    /// (`schema/read_models.sql`), which every SQL count and list uses.
    pub fn is_public(&self) -> bool {
        self.status == PostStatus::Published && !self.deleted && self.author_active
    }

    /// The copied author fields: their row's, or (before their registration
    /// is projected) the handle and active.
    pub fn copy_author(&mut self, author: Option<&Author>) {
        match author {
            Some(author) => {
                self.author_display_name.clone_from(&author.display_name);
                self.author_active = author.active;
            }
            None => {
                self.author_display_name.clone_from(&self.author_handle);
                self.author_active = true;
            }
        }
    }

    /// Forgets its text and its author's name: what is left is a deleted
    /// post that only its ids name (the slug placeholder is never a slug).
    pub fn erase(&mut self) {
        self.slug = super::erased_placeholder(self.id);
        self.title.clear();
        self.body.clear();
        self.excerpt.clear();
        self.tags.clear();
        self.author_handle.clear();
        self.author_display_name.clear();
        self.images.0.clear();
        self.deleted = true;
    }

    fn image_mut(&mut self, id: Uuid) -> Option<&mut PostImage> {
        self.images.0.iter_mut().find(|image| image.id == id)
    }

    /// Its tags, each once (a post's tag counts once for the tag).
    pub fn distinct_tags(&self) -> impl Iterator<Item = &String> {
        self.tags
            .iter()
            .enumerate()
            .filter(|(index, tag)| !self.tags[..*index].contains(tag))
            .map(|(_, tag)| tag)
    }

    /// The row after one event of the post's stream (derived columns are
    /// carried over; they are set by [`PostRow::copy_author`] and counts).
    pub fn fold(
        row: Option<PostRow>,
        recorded: &RecordedEvent,
        event: &PostEvent,
    ) -> Result<Option<PostRow>, FoldError> {
        let at = recorded.recorded_at;
        let version = recorded.version;
        let erase = recorded.erased || matches!(event, PostEvent::Erased(_));
        if let PostEvent::Created(created) = event {
            let mut post = PostRow {
                id: recorded.stream_id,
                slug: created.slug.clone(),
                title: created.title.clone(),
                body: created.body.clone(),
                excerpt: excerpt(&created.body),
                status: PostStatus::Draft,
                deleted: false,
                author_active: true,
                tags: created.tags.clone(),
                author_id: created.author_id,
                author_handle: created.author_handle.clone(),
                author_display_name: created.author_handle.clone(),
                comment_count: 0,
                created_at: at,
                updated_at: at,
                published_at: None,
                version,
                images: Json(Vec::new()),
            };
            if erase {
                post.erase();
            }
            return Ok(Some(post));
        }
        let Some(mut post) = row else {
            return Err(FoldError {
                event_type: event.event_type(),
                what: "post",
                id: recorded.stream_id,
            });
        };
        match event {
            PostEvent::Created(_) => unreachable!("handled above"),
            PostEvent::Edited(edited) => {
                post.title.clone_from(&edited.title);
                post.body.clone_from(&edited.body);
                post.excerpt = excerpt(&edited.body);
                post.tags.clone_from(&edited.tags);
            }
            PostEvent::Published(_) => {
                post.status = PostStatus::Published;
                post.published_at.get_or_insert(at);
            }
            PostEvent::Unpublished(_) => post.status = PostStatus::Draft,
            PostEvent::Deleted(_) => post.deleted = true,
            PostEvent::Erased(_) => {}
            PostEvent::ImageAdded(added) => {
                if !post.images.0.iter().any(|image| image.id == added.image_id) {
                    post.images.0.push(PostImage {
                        id: added.image_id,
                        hash: added.hash.clone(),
                        format: added.format,
                        width: added.width,
                        height: added.height,
                        alt: added.alt.clone(),
                        status: ImageStatus::Processing,
                        renditions: Vec::new(),
                        reason: None,
                    });
                }
            }
            PostEvent::ImageProcessed(processed) => {
                if let Some(image) = post.image_mut(processed.image_id) {
                    image.status = ImageStatus::Ready;
                    image.renditions.clone_from(&processed.renditions);
                }
            }
            PostEvent::ImageRejected(rejected) => {
                if let Some(image) = post.image_mut(rejected.image_id) {
                    image.status = ImageStatus::Failed;
                    image.reason = Some(rejected.reason.clone());
                }
            }
        }
        if erase {
            post.erase();
        }
        post.updated_at = at;
        post.version = version;
        Ok(Some(post))
    }
}

pub async fn by_ids(
    executor: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<PostRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        PostRow,
        r#"SELECT id, slug, title, body, excerpt, status AS "status: PostStatus", deleted, author_active,
                  tags, author_id, author_handle, author_display_name, comment_count, created_at,
                  updated_at, published_at, version, images AS "images: Json<Vec<PostImage>>"
           FROM posts WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(executor)
    .await
}

pub async fn by_slug(
    executor: impl PgExecutor<'_>,
    slug: &str,
) -> Result<Option<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"SELECT id, slug, title, body, excerpt, status AS "status: PostStatus", deleted, author_active,
                  tags, author_id, author_handle, author_display_name, comment_count, created_at,
                  updated_at, published_at, version, images AS "images: Json<Vec<PostImage>>"
           FROM posts WHERE slug = lower($1)"#,
        slug
    )
    .fetch_optional(executor)
    .await
}

/// Before new posts are written: a slug they take that a row of someone
/// else still holds was freed by that author's erasure, whose `PostErased`
/// is not applied yet; that row gives it up now, as `PostRow::erase` will.
pub async fn release_slugs(
    connection: &mut PgConnection,
    rows: &[&PostRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE posts SET slug = '~' || replace(id::text, '-', '')
           WHERE slug = ANY($1) AND NOT (id = ANY($2))"#,
        &column(rows, |row| row.slug.clone()),
        &column(rows, |row| row.id),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Writes the rows' own columns. The derived columns of a row `created`
/// now are set as [`refresh`] would set them, from the rows they derive
/// from: a post is written once, not inserted and then updated (a second
/// version of a freshly filled page lands on another, with an entry in
/// every index). An existing row's derived columns are left as they are.
pub async fn upsert(
    connection: &mut PgConnection,
    rows: &[&PostRow],
    created: impl Fn(Uuid) -> bool,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"INSERT INTO posts (id, slug, title, body, excerpt, status, deleted, author_active, tags,
                              author_id, author_handle, author_display_name, comment_count,
                              created_at, updated_at, published_at, version, images)
           SELECT new.id, slug, title, body, excerpt, status, deleted, COALESCE(u.active, TRUE),
                  -- Tags are [a-z0-9-]: a comma never occurs inside one.
                  CASE WHEN tags = '' THEN '{}'::text[] ELSE string_to_array(tags, ',') END,
                  author_id, author_handle, COALESCE(u.display_name, author_handle),
                  -- Comments projected before their post (from another partition).
                  CASE WHEN new.created
                       THEN (SELECT count(*) FROM comments c
                             WHERE c.post_id = new.id AND NOT c.deleted)::int
                       ELSE 0 END,
                  created_at, updated_at, published_at, version, images
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::bool[], $8::text[], $9::uuid[], $10::text[], $11::timestamptz[],
                       $12::timestamptz[], $13::timestamptz[], $14::int4[], $15::jsonb[],
                       $16::bool[])
                AS new(id, slug, title, body, excerpt, status, deleted, tags, author_id,
                       author_handle, created_at, updated_at, published_at, version, images,
                       created)
           -- One probe per new post, as in `refresh`; none for an update,
           -- whose derived columns the conflict leaves alone.
           LEFT JOIN LATERAL (
             SELECT display_name, active FROM users
             WHERE new.created AND id = new.author_id OFFSET 0
           ) u ON TRUE
           ON CONFLICT (id) DO UPDATE
             SET slug = EXCLUDED.slug, title = EXCLUDED.title, body = EXCLUDED.body,
                 excerpt = EXCLUDED.excerpt, status = EXCLUDED.status, deleted = EXCLUDED.deleted,
                 tags = EXCLUDED.tags, author_id = EXCLUDED.author_id,
                 author_handle = EXCLUDED.author_handle, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at, published_at = EXCLUDED.published_at,
                 version = EXCLUDED.version, images = EXCLUDED.images"#,
        &column(rows, |row| row.id),
        &column(rows, |row| row.slug.clone()),
        &column(rows, |row| row.title.clone()),
        &column(rows, |row| row.body.clone()),
        &column(rows, |row| row.excerpt.clone()),
        &column(rows, |row| row.status.as_str().to_owned()),
        &column(rows, |row| row.deleted),
        &column(rows, |row| row.tags.join(",")),
        &column(rows, |row| row.author_id),
        &column(rows, |row| row.author_handle.clone()),
        &column(rows, |row| row.created_at),
        &column(rows, |row| row.updated_at),
        &column(rows, |row| row.published_at) as &[Option<DateTime<Utc>>],
        &column(rows, |row| row.version),
        &column(rows, |row| row.images.clone()) as &[Json<Vec<PostImage>>],
        &column(rows, |row| created(row.id)),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets the posts' derived columns again from the rows they derive from, in
/// one statement: the names and standing of `authors` onto all their posts
/// and of their authors onto `copy_to` (the rule of
/// [`PostRow::copy_author`], in SQL), and the comments of `recount`. Rows are
/// locked in id order, as by every other writer of many post rows.
pub async fn refresh(
    connection: &mut PgConnection,
    authors: &[Uuid],
    copy_to: &[Uuid],
    recount: &[Uuid],
) -> Result<(), sqlx::Error> {
    if authors.is_empty() && copy_to.is_empty() && recount.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"WITH locked AS (
             SELECT p.id,
                    CASE WHEN p.author_id = ANY($1) OR p.id = ANY($2)
                         THEN COALESCE(u.display_name, p.author_handle)
                         ELSE p.author_display_name END AS display_name,
                    CASE WHEN p.author_id = ANY($1) OR p.id = ANY($2)
                         THEN COALESCE(u.active, TRUE)
                         ELSE p.author_active END AS active,
                    CASE WHEN p.id = ANY($3)
                         THEN (SELECT count(*) FROM comments c
                               WHERE c.post_id = p.id AND NOT c.deleted)::int
                         ELSE p.comment_count END AS comments
             -- One probe per post: a plan made for any arrays (as a
             -- statement run often gets) otherwise hashes every user.
             FROM posts p LEFT JOIN LATERAL (
               SELECT display_name, active FROM users WHERE id = p.author_id OFFSET 0
             ) u ON TRUE
             WHERE p.author_id = ANY($1) OR p.id = ANY($2) OR p.id = ANY($3)
             ORDER BY p.id
             FOR NO KEY UPDATE OF p
           )
           UPDATE posts SET author_display_name = locked.display_name,
                            author_active = locked.active,
                            comment_count = locked.comments
           FROM locked
           -- Restated on `posts`, so the join reads only these rows there too.
           WHERE (posts.author_id = ANY($1) OR posts.id = ANY($2) OR posts.id = ANY($3))
             AND posts.id = locked.id
             AND (posts.author_display_name, posts.author_active, posts.comment_count)
                 IS DISTINCT FROM (locked.display_name, locked.active, locked.comments)"#,
        authors,
        copy_to,
        recount
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Recounts the comments of these posts.
pub async fn recount(connection: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    refresh(connection, &[], &[], ids).await
}

/// The distinct tags of the posts of these authors (whose standing counts
/// for those tags).
pub async fn tags_of_authors(
    executor: impl PgExecutor<'_>,
    authors: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    if authors.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!(
        r#"SELECT DISTINCT UNNEST(tags) AS "tag!" FROM posts WHERE author_id = ANY($1)"#,
        authors
    )
    .fetch_all(executor)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{PostCreated, PostDeleted, PostEdited, PostPublished, PostUnpublished};
    use crate::read_models::tests::recorded;

    fn history() -> Vec<PostEvent> {
        vec![
            PostCreated {
                author_id: Uuid::from_u128(9),
                author_handle: "ada".into(),
                slug: "s".into(),
                title: "T".into(),
                body: "**B**".into(),
                tags: vec!["a".into(), "a".into(), "b".into()],
            }
            .into(),
            PostPublished {}.into(),
            PostUnpublished {}.into(),
            PostEdited {
                title: "T2".into(),
                body: "B2".into(),
                tags: vec!["c".into()],
            }
            .into(),
            PostPublished {}.into(),
        ]
    }

    fn fold_all(id: Uuid, events: &[PostEvent]) -> (Option<PostRow>, Vec<RecordedEvent>) {
        let mut row = None;
        let mut recorded_events = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let at = recorded(id, index as i32 + 1, event.clone().into());
            row = PostRow::fold(row, &at, event).unwrap();
            recorded_events.push(at);
        }
        (row, recorded_events)
    }

    #[test]
    fn a_post_is_drafted_published_edited_and_keeps_its_first_publication_time() {
        let id = Uuid::from_u128(7);
        let (row, recorded_events) = fold_all(id, &history());
        let post = row.unwrap();
        assert_eq!((post.title.as_str(), post.excerpt.as_str()), ("T2", "B2"));
        assert_eq!(post.status, PostStatus::Published);
        assert_eq!(post.published_at, Some(recorded_events[1].recorded_at));
        assert_eq!(post.version, 5);
        assert!(post.is_public());
    }

    #[test]
    fn a_deleted_post_or_a_deactivated_authors_post_is_not_public() {
        let id = Uuid::from_u128(7);
        let mut events = history();
        events.push(PostDeleted {}.into());
        let (row, _) = fold_all(id, &events);
        assert!(!row.unwrap().is_public());
        let (row, _) = fold_all(id, &history());
        let mut post = row.unwrap();
        post.copy_author(Some(&Author {
            display_name: "Ada".into(),
            active: false,
        }));
        assert!(!post.is_public());
        assert_eq!(post.author_display_name, "Ada");
        post.copy_author(None);
        assert_eq!(
            (post.author_display_name.as_str(), post.author_active),
            ("ada", true)
        );
    }

    #[test]
    fn a_tag_given_twice_counts_once() {
        let id = Uuid::from_u128(7);
        let (row, _) = fold_all(id, &history()[..1]);
        let post = row.unwrap();
        assert_eq!(post.distinct_tags().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn an_event_for_a_post_never_created_is_refused() {
        let event: PostEvent = PostPublished {}.into();
        let error = PostRow::fold(
            None,
            &recorded(Uuid::nil(), 1, event.clone().into()),
            &event,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "PostPublished for post {} which the read model does not have",
                Uuid::nil()
            )
        );
    }
}
