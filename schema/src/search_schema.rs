//! The tantivy schema of the post index, shared by the indexer (which writes
//! it) and query-service (which reads it), and the documents, derived from the
//! read models' post rows.
//!
//! Every post has one document; only a public post's has its text. A post
//! others may not see (a draft, a deleted post, a deactivated author's) is a
//! marker with its id, status and version and nothing to match or rank, so it
//! changes neither results, counts nor scores; a user is a marker too (their
//! standing decides their posts'). So "has the index applied version v of
//! stream s?" is one term lookup, and a consistency token can wait on the
//! index exactly.

use tantivy::TantivyDocument;
use uuid::Uuid;

use crate::markdown::plain_text;
use crate::read_models::posts::PostRow;

use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING,
    Schema, TextFieldIndexing, TextOptions,
};

/// The tokenizer for prose: lower-cased, stemmed English.
pub const PROSE_TOKENIZER: &str = "en_stem";

/// A public post: the only documents searched.
pub const STATUS_PUBLISHED: &str = "published";
/// A marker: a post others may not see, or a user.
pub const STATUS_HIDDEN: &str = "hidden";

#[derive(Clone, Debug)]
pub struct PostIndexSchema {
    pub schema: Schema,
    /// Post id (UUID text); the term used to replace a post's document.
    pub id: Field,
    pub slug: Field,
    pub title: Field,
    pub body: Field,
    /// Tags as exact terms (filters) and as prose (matching).
    pub tag: Field,
    pub tags_text: Field,
    pub author_handle: Field,
    pub status: Field,
    pub published_at: Field,
    /// The post stream's version this document reflects.
    pub version: Field,
}

impl PostIndexSchema {
    pub fn build() -> PostIndexSchema {
        let mut builder = Schema::builder();
        let prose = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(PROSE_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_stored();
        let id = builder.add_text_field("id", STRING | STORED);
        let slug = builder.add_text_field("slug", STRING | STORED);
        let title = builder.add_text_field("title", prose.clone());
        let body = builder.add_text_field("body", prose.clone());
        let tag = builder.add_text_field("tag", STRING | STORED);
        let tags_text = builder.add_text_field("tags_text", prose);
        let author_handle = builder.add_text_field("author_handle", STRING | STORED | FAST);
        let status = builder.add_text_field("status", STRING | STORED);
        let published_at = builder.add_date_field(
            "published_at",
            DateOptions::from(INDEXED | STORED | FAST).set_precision(DateTimePrecision::Seconds),
        );
        let version = builder.add_u64_field("version", INDEXED | STORED | FAST);
        PostIndexSchema {
            schema: builder.build(),
            id,
            slug,
            title,
            body,
            tag,
            tags_text,
            author_handle,
            status,
            published_at,
            version,
        }
    }
}

impl PostIndexSchema {
    /// A post's document, from its read-model row: the text only when public.
    pub fn post_document(&self, post: &PostRow) -> TantivyDocument {
        if !post.is_public() {
            return self.marker(post.id, post.version);
        }
        let mut document = TantivyDocument::default();
        document.add_text(self.id, post.id.to_string());
        document.add_text(self.status, STATUS_PUBLISHED);
        document.add_u64(
            self.version,
            u64::try_from(post.version).unwrap_or_default(),
        );
        document.add_text(self.slug, &post.slug);
        document.add_text(self.title, &post.title);
        document.add_text(self.body, plain_text(&post.body));
        for tag in &post.tags {
            document.add_text(self.tag, tag);
        }
        document.add_text(self.tags_text, post.tags.join(" "));
        document.add_text(self.author_handle, &post.author_handle);
        if let Some(published_at) = post.published_at {
            document.add_date(
                self.published_at,
                tantivy::DateTime::from_timestamp_micros(published_at.timestamp_micros()),
            );
        }
        document
    }

    /// A document that only says the index has applied version `version` of
    /// stream `id`.
    pub fn marker(&self, id: Uuid, version: i32) -> TantivyDocument {
        let mut document = TantivyDocument::default();
        document.add_text(self.id, id.to_string());
        document.add_text(self.status, STATUS_HIDDEN);
        document.add_u64(self.version, u64::try_from(version).unwrap_or_default());
        document
    }
}

/// Where the index lives on disk: one directory per generation (a rebuild
/// writes a new one beside the live one) and a `CURRENT` file naming the live
/// generation, replaced atomically (write, then rename) on a swap.
#[derive(Clone, Debug)]
pub struct IndexLayout {
    root: std::path::PathBuf,
}

impl IndexLayout {
    pub fn new(root: impl Into<std::path::PathBuf>) -> IndexLayout {
        IndexLayout { root: root.into() }
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn generation_dir(&self, generation: u64) -> std::path::PathBuf {
        self.root.join("generations").join(generation.to_string())
    }

    /// The live generation, if any was made live yet.
    pub fn current(&self) -> std::io::Result<Option<u64>> {
        match std::fs::read_to_string(self.root.join("CURRENT")) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Makes `generation` the live one, atomically for readers.
    pub fn set_current(&self, generation: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let temporary = self.root.join(format!("CURRENT.{}", std::process::id()));
        std::fs::write(&temporary, format!("{generation}\n"))?;
        std::fs::rename(temporary, self.root.join("CURRENT"))
    }

    /// Generations on disk, oldest first.
    pub fn generations(&self) -> std::io::Result<Vec<u64>> {
        let mut generations = Vec::new();
        match std::fs::read_dir(self.root.join("generations")) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(generation) = entry?
                        .file_name()
                        .to_str()
                        .and_then(|name| name.parse().ok())
                    {
                        generations.push(generation);
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        generations.sort_unstable();
        Ok(generations)
    }
}

/// What a commit of the index records: where each partition of the topic was
/// consumed up to, so a restart resumes exactly there.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexCheckpoint {
    pub topic: String,
    /// Partition -> the next offset to consume.
    pub offsets: std::collections::BTreeMap<i32, i64>,
    /// The highest event position indexed, for lag.
    #[serde(default)]
    pub applied_position: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_generation_is_replaced_atomically_and_generations_are_listed() {
        let root = std::env::temp_dir().join(format!("layout-{}", uuid::Uuid::new_v4()));
        let layout = IndexLayout::new(&root);
        assert_eq!(layout.current().unwrap(), None);
        std::fs::create_dir_all(layout.generation_dir(1)).unwrap();
        std::fs::create_dir_all(layout.generation_dir(2)).unwrap();
        layout.set_current(2).unwrap();
        assert_eq!(layout.current().unwrap(), Some(2));
        assert_eq!(layout.generations().unwrap(), vec![1, 2]);
        std::fs::remove_dir_all(root).unwrap();
    }
}
