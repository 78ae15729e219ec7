//! Rows into a table by `COPY … FROM STDIN (FORMAT binary)`, a chunk per
//! statement: each chunk is its own short transaction, so a rebuild never
//! holds a transaction id for long. Binary, not CSV: a field is its length
//! and its bytes, so neither side scans a post's body for quotes, and
//! Postgres parses no text into uuids, times or integers (CSV's parse was
//! a third of the writer backend's time).

use std::sync::Arc;

use chronicle_schema::read_models::comments::CommentRow;
use chronicle_schema::read_models::posts::PostRow;
use chronicle_schema::read_models::users::UserRow;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Rows gathered before a chunk is sent.
const CHUNK_ROWS: usize = 5_000;

/// The binary format's signature, flags and header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the data.
const TRAILER: &[u8] = &(-1i16).to_be_bytes();
/// `text`'s type oid, which an array names for its elements.
const TEXT_OID: u32 = 25;

/// One row's fields in Postgres's binary format: each a length and the
/// type's binary representation (a length of -1 is NULL).
pub struct Line {
    bytes: Vec<u8>,
    fields: i16,
}

impl Default for Line {
    fn default() -> Line {
        // The field count, filled in as fields are added.
        Line {
            bytes: vec![0, 0],
            fields: 0,
        }
    }
}

impl Line {
    fn field(self, value: &[u8]) -> Line {
        let length = i32::try_from(value.len()).expect("a field is under 2 GiB");
        self.with(length, value)
    }

    /// Appends a field's length (-1: NULL) and bytes, and counts it.
    fn with(mut self, length: i32, value: &[u8]) -> Line {
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(value);
        self.fields += 1;
        self.bytes[..2].copy_from_slice(&self.fields.to_be_bytes());
        self
    }

    pub fn text(self, value: &str) -> Line {
        self.field(value.as_bytes())
    }

    pub fn optional_text(self, value: Option<&str>) -> Line {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// JSONB's binary form: version 1, then the JSON text.
    pub fn jsonb(self, value: &impl serde::Serialize) -> Line {
        let mut bytes = vec![1u8];
        serde_json::to_writer(&mut bytes, value).expect("read-model values serialize");
        self.field(&bytes)
    }

    pub fn null(self) -> Line {
        self.with(-1, &[])
    }

    pub fn integer(self, value: i32) -> Line {
        self.field(&value.to_be_bytes())
    }

    pub fn bigint(self, value: i64) -> Line {
        self.field(&value.to_be_bytes())
    }

    pub fn uuid(self, value: Uuid) -> Line {
        self.field(value.as_bytes())
    }

    pub fn optional_uuid(self, value: Option<Uuid>) -> Line {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub fn boolean(self, value: bool) -> Line {
        self.field(&[u8::from(value)])
    }

    /// Microseconds since Postgres's epoch, 2000-01-01 UTC.
    pub fn time(self, value: DateTime<Utc>) -> Line {
        const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        self.field(&(value.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes())
    }

    pub fn optional_time(self, value: Option<DateTime<Utc>>) -> Line {
        match value {
            Some(value) => self.time(value),
            None => self.null(),
        }
    }

    /// A one-dimensional text[] (an empty one has no dimensions).
    pub fn text_array(self, values: &[String]) -> Line {
        let mut array = Vec::new();
        let dimensions: i32 = if values.is_empty() { 0 } else { 1 };
        array.extend_from_slice(&dimensions.to_be_bytes());
        array.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
        array.extend_from_slice(&TEXT_OID.to_be_bytes());
        if !values.is_empty() {
            let length = i32::try_from(values.len()).expect("a tag list is short");
            array.extend_from_slice(&length.to_be_bytes());
            array.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        }
        for value in values {
            let length = i32::try_from(value.len()).expect("a tag is short");
            array.extend_from_slice(&length.to_be_bytes());
            array.extend_from_slice(value.as_bytes());
        }
        self.field(&array)
    }
}

/// Chunks in flight to the writer: enough to keep it busy while the fold
/// goes on, few enough to bound memory (a chunk of posts is ~15 MB).
const CHUNKS_IN_FLIGHT: usize = 2;

/// COPY statements run by a task of their own, on its own connection, so
/// Postgres stores one chunk while the next is folded.
pub struct CopyWriter {
    chunks: tokio::sync::mpsc::Sender<(Arc<str>, Vec<u8>)>,
    task: tokio::task::JoinHandle<Result<PgConnection, sqlx::Error>>,
}

impl CopyWriter {
    pub fn spawn(mut connection: PgConnection) -> CopyWriter {
        let (chunks, mut received) =
            tokio::sync::mpsc::channel::<(Arc<str>, Vec<u8>)>(CHUNKS_IN_FLIGHT);
        let task = tokio::spawn(async move {
            while let Some((statement, data)) = received.recv().await {
                let mut copy = connection.copy_in_raw(&statement).await?;
                if let Err(error) = copy.send(data).await {
                    let _ = copy.abort("the rebuild failed").await;
                    return Err(error);
                }
                copy.finish().await?;
            }
            Ok(connection)
        });
        CopyWriter { chunks, task }
    }

    async fn send(&mut self, statement: Arc<str>, data: Vec<u8>) -> Result<(), CopyError> {
        if self.chunks.send((statement, data)).await.is_ok() {
            return Ok(());
        }
        // Closed only when the task ended: with its error.
        match (&mut self.task).await? {
            Err(error) => Err(error.into()),
            Ok(_) => Err(CopyError::WriterStopped),
        }
    }

    /// Waits for every chunk sent to be stored; answers the connection.
    pub async fn finish(self) -> Result<PgConnection, CopyError> {
        drop(self.chunks);
        Ok(self.task.await??)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the COPY writer stopped")]
    WriterStopped,
    #[error("the COPY writer: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A table being filled by COPY, a chunk at a time.
pub struct Copier {
    statement: Arc<str>,
    buffer: Vec<u8>,
    rows: usize,
}

impl Copier {
    pub fn new(table: &str, columns: &str) -> Copier {
        Copier {
            statement: format!("COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)").into(),
            buffer: Vec::new(),
            rows: 0,
        }
    }

    pub async fn push(&mut self, writer: &mut CopyWriter, line: Line) -> Result<(), CopyError> {
        if self.buffer.is_empty() {
            self.buffer.extend_from_slice(HEADER);
        }
        self.buffer.extend_from_slice(&line.bytes);
        self.rows += 1;
        if self.rows >= CHUNK_ROWS {
            self.flush(writer).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, writer: &mut CopyWriter) -> Result<(), CopyError> {
        if self.rows == 0 {
            return Ok(());
        }
        self.rows = 0;
        self.buffer.extend_from_slice(TRAILER);
        writer
            .send(self.statement.clone(), std::mem::take(&mut self.buffer))
            .await
    }
}

/// A user's line, in the order of `users::COLUMNS`.
pub fn user_line(user: &UserRow) -> Line {
    Line::default()
        .uuid(user.id)
        .text(&user.handle)
        .text(&user.display_name)
        .optional_text(user.bio.as_deref())
        .text(&user.email)
        .text(user.role.as_str())
        .boolean(user.active)
        .integer(user.post_count)
        .integer(user.comment_count)
        .time(user.joined_at)
        .time(user.updated_at)
        .integer(user.version)
}

/// A post's line, in the order of `posts::COLUMNS`.
pub fn post_line(post: &PostRow) -> Line {
    Line::default()
        .uuid(post.id)
        .text(&post.slug)
        .text(&post.title)
        .text(&post.body)
        .text(&post.excerpt)
        .text(post.status.as_str())
        .boolean(post.deleted)
        .boolean(post.author_active)
        .text_array(&post.tags)
        .uuid(post.author_id)
        .text(&post.author_handle)
        .text(&post.author_display_name)
        .integer(post.comment_count)
        .time(post.created_at)
        .time(post.updated_at)
        .optional_time(post.published_at)
        .integer(post.version)
        .jsonb(&post.images)
}

/// A comment's line, in the order of `comments::COLUMNS`.
pub fn comment_line(comment: &CommentRow) -> Line {
    Line::default()
        .uuid(comment.id)
        .uuid(comment.post_id)
        .uuid(comment.author_id)
        .optional_uuid(comment.parent_id)
        .text(&comment.body)
        .boolean(comment.deleted)
        .integer(comment.reply_count)
        .time(comment.created_at)
        .optional_time(comment.edited_at)
        .integer(comment.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_line_is_its_field_count_then_each_field_as_length_and_bytes() {
        let line = Line::default()
            .text("é\"")
            .null()
            .integer(-2)
            .boolean(true)
            .time(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap());
        let mut expected = vec![0, 5];
        expected.extend([0, 0, 0, 3, 0xc3, 0xa9, b'"']);
        expected.extend([0xff; 4]);
        expected.extend([0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend([0, 0, 0, 1, 1]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        assert_eq!(line.bytes, expected);
    }

    #[test]
    fn an_empty_array_has_no_dimensions() {
        let line = Line::default().text_array(&[]);
        assert_eq!(line.bytes[6..], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]);
        let line = Line::default().text_array(&["ab".to_owned()]);
        assert_eq!(
            line.bytes[6..],
            [
                0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, b'a', b'b'
            ]
        );
    }
}
