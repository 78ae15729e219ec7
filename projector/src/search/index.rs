//! One generation of the post index, opened for writing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chronicle_platform::retry::Backoff;
use chronicle_schema::search_schema::{IndexCheckpoint, IndexLayout, PostIndexSchema};
use sha2::{Digest, Sha256};
use tantivy::collector::DocSetCollector;
use tantivy::directory::error::LockError;
use tantivy::query::AllQuery;
use tantivy::schema::{OwnedValue, Value};
use tantivy::{Index, IndexWriter, TantivyDocument, TantivyError, Term};
use uuid::Uuid;

/// The writer's memory budget: small, the machine runs everything on 2 cores.
const WRITER_HEAP_BYTES: usize = 64 * 1024 * 1024;

/// How long opening a writer waits for the index's lock to be let go. A
/// writer just dropped can leave it held for a moment: a process forked
/// then (the tests spawn services while others open indexes) shares the
/// lock file's descriptor until it execs. Held longer, it is another
/// writer's, and opening fails.
const LOCK_BUSY_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SearchIndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: cannot open the directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index: the commit payload is unreadable: {0}")]
    Payload(#[from] serde_json::Error),
}

pub struct PostIndex {
    index: Index,
    writer: IndexWriter,
    schema: PostIndexSchema,
    generation: u64,
    /// Changes written but not yet committed.
    pending: usize,
}

/// The index's writer, once its lock is free (see `LOCK_BUSY_PATIENCE`).
fn writer(index: &Index) -> Result<IndexWriter, SearchIndexError> {
    let deadline = Instant::now() + LOCK_BUSY_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    loop {
        match index.writer_with_num_threads(1, WRITER_HEAP_BYTES) {
            Err(TantivyError::LockFailure(LockError::LockBusy, _)) if Instant::now() < deadline => {
                backoff.sleep_blocking();
            }
            writer => return Ok(writer?),
        }
    }
}

impl PostIndex {
    /// Opens `generation` under `layout`, creating it if it does not exist.
    pub fn open(layout: &IndexLayout, generation: u64) -> Result<PostIndex, SearchIndexError> {
        let directory = layout.generation_dir(generation);
        std::fs::create_dir_all(&directory)?;
        let schema = PostIndexSchema::build();
        let mmap = tantivy::directory::MmapDirectory::open(&directory)?;
        let index = Index::open_or_create(mmap, schema.schema.clone())?;
        chronicle_schema::prose_tokenizer::register(&index);
        let writer = writer(&index)?;
        Ok(PostIndex {
            index,
            writer,
            schema,
            generation,
            pending: 0,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// The checkpoint of the last commit (empty for a new index).
    pub fn checkpoint(&self) -> Result<IndexCheckpoint, SearchIndexError> {
        match self.index.load_metas()?.payload {
            Some(payload) => Ok(serde_json::from_str(&payload)?),
            None => Ok(IndexCheckpoint::default()),
        }
    }

    pub fn schema(&self) -> &PostIndexSchema {
        &self.schema
    }

    /// Replaces the document of stream `id` (a post, or a user's marker).
    pub fn upsert(&mut self, id: Uuid, document: TantivyDocument) {
        self.writer
            .delete_term(Term::from_field_text(self.schema.id, &id.to_string()));
        self.add_new(document);
    }

    /// Adds a document for a stream this index has none for (a new
    /// generation, built once per stream): no delete to look up in every
    /// segment flushed so far.
    pub fn add_new(&mut self, document: TantivyDocument) {
        // An add only fails when the writer has already failed; commit reports that.
        let _ = self.writer.add_document(document);
        self.pending += 1;
    }

    /// Makes the changes durable and visible, with the checkpoint they reach.
    pub fn commit(&mut self, checkpoint: &IndexCheckpoint) -> Result<(), SearchIndexError> {
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&serde_json::to_string(checkpoint)?);
        prepared.commit()?;
        self.pending = 0;
        Ok(())
    }

    /// Rewrites every segment that holds deleted documents without them, and
    /// removes the old files: a deleted document's text stays in its segment
    /// until then. Run after an erasure, so the person's words leave the
    /// index's files, not only its results.
    pub fn purge_deleted(&mut self) -> Result<(), SearchIndexError> {
        let segments: Vec<tantivy::index::SegmentId> = self
            .index
            .searchable_segment_metas()?
            .into_iter()
            .filter(tantivy::index::SegmentMeta::has_deletes)
            .map(|meta| meta.id())
            .collect();
        if !segments.is_empty() {
            self.writer.merge(&segments).wait()?;
        }
        self.writer.garbage_collect_files().wait()?;
        Ok(())
    }

    /// Every committed document, as sorted `(id, stored fields)` text: for
    /// comparing a rebuilt index with a live one.
    pub fn documents(&self) -> Result<BTreeMap<Uuid, String>, SearchIndexError> {
        let reader = self.index.reader()?;
        let searcher = reader.searcher();
        let addresses = searcher.search(&AllQuery, &DocSetCollector)?;
        let mut documents = BTreeMap::new();
        for address in addresses {
            let document: TantivyDocument = searcher.doc(address)?;
            let mut fields: Vec<String> = document
                .field_values()
                .map(|(field, value)| {
                    let name = self.schema.schema.get_field_name(field);
                    let value: OwnedValue = value.as_value().into();
                    format!("{name}={value:?}")
                })
                .collect();
            fields.sort();
            let id = document
                .get_first(self.schema.id)
                .and_then(|value| value.as_str())
                .and_then(|id| id.parse().ok())
                .unwrap_or_default();
            documents.insert(id, fields.join("\u{1f}"));
        }
        Ok(documents)
    }

    pub fn digest(&self) -> Result<String, SearchIndexError> {
        let mut hasher = Sha256::new();
        for (id, fields) in self.documents()? {
            hasher.update(id.as_bytes());
            hasher.update(fields.as_bytes());
        }
        Ok(format!("{:x}", hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_waits_for_a_writer_let_go_a_moment_later_but_not_for_one_still_held() {
        let directory = std::env::temp_dir().join(format!("chronicle-lock-{}", Uuid::new_v4()));
        let layout = IndexLayout::new(&directory);
        let held = PostIndex::open(&layout, 1).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        assert!(PostIndex::open(&layout, 1).is_ok());
        letting_go.join().unwrap();

        let _held = PostIndex::open(&layout, 1).unwrap();
        assert!(matches!(
            PostIndex::open(&layout, 1),
            Err(SearchIndexError::Tantivy(TantivyError::LockFailure(
                LockError::LockBusy,
                _
            )))
        ));
        let _ = std::fs::remove_dir_all(&directory);
    }
}
