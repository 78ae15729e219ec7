//! Rows into a table by `COPY … FROM STDIN (FORMAT csv)`, a chunk per
//! statement: each chunk is its own short transaction, so a rebuild never
//! holds a transaction id for long.

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

/// A table being filled by COPY, a chunk at a time.
pub struct Copier {
    statement: String,
    buffer: String,
    rows: usize,
    pub written: u64,
}

impl Copier {
    pub fn new(table: &str, columns: &str) -> Copier {
        Copier {
            statement: format!("COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"),
            buffer: String::new(),
            rows: 0,
            written: 0,
        }
    }

    pub async fn push(
        &mut self,
        connection: &mut PgConnection,
        line: Line,
    ) -> Result<(), sqlx::Error> {
        self.buffer.push_str(&line.0);
        self.buffer.push('\n');
        self.rows += 1;
        if self.rows >= CHUNK_ROWS {
            self.flush(connection).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut copy = connection.copy_in_raw(&self.statement).await?;
        let data = std::mem::take(&mut self.buffer);
        if let Err(error) = copy.send(data.into_bytes()).await {
            let _ = copy.abort("the rebuild failed").await;
            return Err(error);
        }
        self.written += copy.finish().await?;
        self.rows = 0;
        Ok(())
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
