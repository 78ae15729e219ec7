//! The tantivy schema of the post index, shared by the projector (which writes
//! it) and query-service (which reads it).
//!
//! Every post has one document, drafts and deleted posts included (they are
//! filtered at query time): so "has the index applied version v of post p?" is
//! one term lookup, and a consistency token can wait on the index exactly.

use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING,
    Schema, TextFieldIndexing, TextOptions,
};

/// The tokenizer for prose: lower-cased, stemmed English.
pub const PROSE_TOKENIZER: &str = "en_stem";

pub const STATUS_PUBLISHED: &str = "published";
pub const STATUS_DRAFT: &str = "draft";
pub const STATUS_DELETED: &str = "deleted";

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
