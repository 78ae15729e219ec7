//! Rows into a table by `COPY … FROM STDIN (FORMAT csv)`, a chunk per
//! statement: each chunk is its own short transaction, so a rebuild never
//! holds a transaction id for long.

use std::sync::Arc;

use chronicle_schema::read_models::comments::CommentRow;
use chronicle_schema::read_models::posts::PostRow;
use chronicle_schema::read_models::users::UserRow;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Rows gathered before a chunk is sent.
const CHUNK_ROWS: usize = 5_000;

/// One CSV line's fields.
#[derive(Default)]
pub struct Line(String);

impl Line {
    fn separate(&mut self) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
    }

    pub fn text(mut self, value: &str) -> Line {
        self.separate();
        self.0.push('"');
        for character in value.chars() {
            if character == '"' {
                self.0.push('"');
            }
            self.0.push(character);
        }
        self.0.push('"');
        self
    }

    pub fn optional_text(self, value: Option<&str>) -> Line {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// An unquoted empty field: NULL in CSV (an empty string is quoted).
    pub fn null(mut self) -> Line {
        self.separate();
        self
    }

    pub fn plain(mut self, value: impl std::fmt::Display) -> Line {
        self.separate();
        self.0.push_str(&value.to_string());
        self
    }

    pub fn uuid(self, value: Uuid) -> Line {
        self.plain(value)
    }

    pub fn optional_uuid(self, value: Option<Uuid>) -> Line {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub fn boolean(self, value: bool) -> Line {
        self.plain(if value { "t" } else { "f" })
    }

    pub fn time(self, value: DateTime<Utc>) -> Line {
        self.plain(value.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }

    pub fn optional_time(self, value: Option<DateTime<Utc>>) -> Line {
        match value {
            Some(value) => self.time(value),
            None => self.null(),
        }
    }

    /// A text[] literal, every element quoted.
    pub fn text_array(self, values: &[String]) -> Line {
        let mut literal = String::from("{");
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                literal.push(',');
            }
            literal.push('"');
            for character in value.chars() {
                if character == '"' || character == '\\' {
                    literal.push('\\');
                }
                literal.push(character);
            }
            literal.push('"');
        }
        literal.push('}');
        self.text(&literal)
    }
}

/// Chunks in flight to the writer: enough to keep it busy while the fold
/// goes on, few enough to bound memory (a chunk of posts is ~15 MB).
const CHUNKS_IN_FLIGHT: usize = 2;

/// COPY statements run by a task of their own, on its own connection, so
/// Postgres stores one chunk while the next is folded.
pub struct CopyWriter {
    chunks: tokio::sync::mpsc::Sender<(Arc<str>, String)>,
    task: tokio::task::JoinHandle<Result<PgConnection, sqlx::Error>>,
}

impl CopyWriter {
    pub fn spawn(mut connection: PgConnection) -> CopyWriter {
        let (chunks, mut received) =
            tokio::sync::mpsc::channel::<(Arc<str>, String)>(CHUNKS_IN_FLIGHT);
        let task = tokio::spawn(async move {
            while let Some((statement, data)) = received.recv().await {
                let mut copy = connection.copy_in_raw(&statement).await?;
                if let Err(error) = copy.send(data.into_bytes()).await {
                    let _ = copy.abort("the rebuild failed").await;
                    return Err(error);
                }
                copy.finish().await?;
            }
            Ok(connection)
        });
        CopyWriter { chunks, task }
    }

    async fn send(&mut self, statement: Arc<str>, data: String) -> Result<(), CopyError> {
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
    buffer: String,
    rows: usize,
}

impl Copier {
    pub fn new(table: &str, columns: &str) -> Copier {
        Copier {
            statement: format!("COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)").into(),
            buffer: String::new(),
            rows: 0,
        }
    }

    pub async fn push(&mut self, writer: &mut CopyWriter, line: Line) -> Result<(), CopyError> {
        self.buffer.push_str(&line.0);
        self.buffer.push('\n');
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
        .plain(user.post_count)
        .plain(user.comment_count)
        .time(user.joined_at)
        .time(user.updated_at)
        .plain(user.version)
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
        .plain(post.comment_count)
        .time(post.created_at)
        .time(post.updated_at)
        .optional_time(post.published_at)
        .plain(post.version)
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
        .plain(comment.reply_count)
        .time(comment.created_at)
        .optional_time(comment.edited_at)
        .plain(comment.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_nulls_are_empty() {
        let line = Line::default()
            .text("say \"hi\", then\nleave")
            .null()
            .text("")
            .text_array(&["a".into(), "b\"c".into()])
            .boolean(true);
        assert_eq!(
            line.0,
            "\"say \"\"hi\"\", then\nleave\",,\"\",\"{\"\"a\"\",\"\"b\\\"\"c\"\"}\",t"
        );
    }
}
