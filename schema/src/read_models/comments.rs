//! `comments`: threads of comments and one level of replies, with reply counts.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{FoldError, column};
use crate::RecordedEvent;
use crate::events::CommentEvent;

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct CommentRow {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub parent_id: Option<Uuid>,
    /// Empty once deleted.
    pub body: String,
    pub deleted: bool,
    /// Derived: its replies that are not deleted.
    pub reply_count: i32,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub version: i32,
}

pub const COLUMNS: &str =
    "id, post_id, author_id, parent_id, body, deleted, reply_count, created_at, edited_at, version";

impl CommentRow {
    /// Whether it counts for its post, author and parent.
    pub fn counts(&self) -> bool {
        !self.deleted
    }

    /// Forgets its text: erased reads as deleted.
    pub fn erase(&mut self) {
        self.deleted = true;
        self.body.clear();
    }

    /// The row after one event of the comment's stream.
    pub fn fold(
        row: Option<CommentRow>,
        recorded: &RecordedEvent,
        event: &CommentEvent,
    ) -> Result<Option<CommentRow>, FoldError> {
        let at = recorded.recorded_at;
        let version = recorded.version;
        let erase = recorded.erased || matches!(event, CommentEvent::Erased(_));
        if let CommentEvent::Added(added) = event {
            let mut comment = CommentRow {
                id: recorded.stream_id,
                post_id: added.post_id,
                author_id: added.author_id,
                parent_id: added.parent_id,
                body: added.body.clone(),
                deleted: false,
                reply_count: 0,
                created_at: at,
                edited_at: None,
                version,
            };
            if erase {
                comment.erase();
            }
            return Ok(Some(comment));
        }
        let Some(mut comment) = row else {
            return Err(FoldError {
                event_type: event.event_type(),
                what: "comment",
                id: recorded.stream_id,
            });
        };
        match event {
            CommentEvent::Added(_) => unreachable!("handled above"),
            CommentEvent::Edited(edited) => {
                comment.body.clone_from(&edited.body);
                comment.edited_at = Some(at);
            }
            CommentEvent::Deleted(_) => comment.erase(),
            CommentEvent::Erased(_) => {}
        }
        if erase {
            comment.erase();
        }
        comment.version = version;
        Ok(Some(comment))
    }
}

pub async fn by_ids(
    executor: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<CommentRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        CommentRow,
        r#"SELECT id, post_id, author_id, parent_id, body, deleted, reply_count, created_at, edited_at, version
           FROM comments WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(executor)
    .await
}

/// Writes the rows' own columns (the reply count only when inserting).
pub async fn upsert(
    connection: &mut PgConnection,
    rows: &[&CommentRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"INSERT INTO comments (id, post_id, author_id, parent_id, body, deleted, reply_count,
                                 created_at, edited_at, version)
           SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                $6::bool[], $7::int4[], $8::timestamptz[], $9::timestamptz[],
                                $10::int4[])
           ON CONFLICT (id) DO UPDATE
             SET post_id = EXCLUDED.post_id, author_id = EXCLUDED.author_id,
                 parent_id = EXCLUDED.parent_id, body = EXCLUDED.body, deleted = EXCLUDED.deleted,
                 created_at = EXCLUDED.created_at, edited_at = EXCLUDED.edited_at,
                 version = EXCLUDED.version"#,
        &column(rows, |row| row.id),
        &column(rows, |row| row.post_id),
        &column(rows, |row| row.author_id),
        &column(rows, |row| row.parent_id) as &[Option<Uuid>],
        &column(rows, |row| row.body.clone()),
        &column(rows, |row| row.deleted),
        &column(rows, |row| row.reply_count),
        &column(rows, |row| row.created_at),
        &column(rows, |row| row.edited_at) as &[Option<DateTime<Utc>>],
        &column(rows, |row| row.version),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Recounts the replies of these comments.
pub async fn recount(connection: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE comments c SET reply_count = counted.replies
           FROM (
             SELECT id, (SELECT count(*) FROM comments WHERE parent_id = ids.id AND NOT deleted)::int AS replies
             FROM UNNEST($1::uuid[]) AS ids(id)
           ) counted
           -- Restated on `c`: without it a plan made for any array hashes the whole table.
           WHERE c.id = ANY($1) AND c.id = counted.id AND c.reply_count <> counted.replies"#,
        ids
    )
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{CommentAdded, CommentDeleted, CommentEdited};
    use crate::read_models::tests::recorded;

    #[test]
    fn a_comment_is_added_edited_and_deleted_to_an_empty_body() {
        let id = Uuid::from_u128(3);
        let events: Vec<CommentEvent> = vec![
            CommentAdded {
                post_id: Uuid::from_u128(1),
                author_id: Uuid::from_u128(2),
                parent_id: None,
                body: "first".into(),
            }
            .into(),
            CommentEdited {
                body: "second".into(),
            }
            .into(),
        ];
        let mut row = None;
        for (index, event) in events.iter().enumerate() {
            row = CommentRow::fold(
                row,
                &recorded(id, index as i32 + 1, event.clone().into()),
                event,
            )
            .unwrap();
        }
        let edited = row.clone().unwrap();
        assert_eq!(
            (edited.body.as_str(), edited.edited_at.is_some()),
            ("second", true)
        );
        let deleted_event: CommentEvent = CommentDeleted {}.into();
        let deleted = CommentRow::fold(
            row,
            &recorded(id, 3, deleted_event.clone().into()),
            &deleted_event,
        )
        .unwrap()
        .unwrap();
        assert!(deleted.deleted && deleted.body.is_empty() && !deleted.counts());
    }
}
