//! The search index as query-service reads it: the live generation named by
//! `CURRENT`, reopened when a rebuild swaps generations, and reloaded when the
//! projector announces a commit (not on a timer), so a query sees new posts
//! without a restart.

use std::sync::{Arc, RwLock};

use chronicle_schema::search_schema::{IndexLayout, PostIndexSchema};

use super::statistics::{Statistics, StatisticsCache};
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};
use uuid::Uuid;

struct Opened {
    generation: u64,
    reader: IndexReader,
}

#[derive(Clone)]
pub struct SearchIndex {
    layout: IndexLayout,
    schema: PostIndexSchema,
    opened: Arc<RwLock<Option<Opened>>>,
    statistics: StatisticsCache,
}

impl SearchIndex {
    pub fn new(layout: IndexLayout) -> SearchIndex {
        let index = SearchIndex {
            layout,
            schema: PostIndexSchema::build(),
            opened: Arc::default(),
            statistics: StatisticsCache::default(),
        };
        index.refresh();
        index
    }

    pub fn schema(&self) -> &PostIndexSchema {
        &self.schema
    }

    /// BM25 statistics of `searcher`'s generation, over live public posts.
    pub fn statistics(&self, searcher: &Searcher) -> tantivy::Result<Arc<Statistics>> {
        self.statistics.of(searcher, &self.schema)
    }

    /// Picks up new commits, and a new generation if one went live.
    pub fn refresh(&self) {
        let current = match self.layout.current() {
            Ok(Some(generation)) => generation,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the search index's CURRENT file");
                return;
            }
        };
        {
            let opened = self.opened.read().expect("never poisoned");
            if let Some(opened) = opened
                .as_ref()
                .filter(|opened| opened.generation == current)
            {
                if let Err(error) = opened.reader.reload() {
                    tracing::warn!(%error, "cannot reload the search index");
                }
                return;
            }
        }
        match self.open(current) {
            Ok(reader) => {
                *self.opened.write().expect("never poisoned") = Some(Opened {
                    generation: current,
                    reader,
                });
                tracing::info!(generation = current, "search index opened");
            }
            Err(error) => {
                tracing::warn!(%error, generation = current, "cannot open the search index")
            }
        }
    }

    fn open(&self, generation: u64) -> tantivy::Result<IndexReader> {
        let index = Index::open_in_dir(self.layout.generation_dir(generation))?;
        chronicle_schema::prose_tokenizer::register(&index);
        index
            .reader_builder()
            // Announcements reload it at once; the file watch is a fallback.
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
    }

    /// A searcher on the latest loaded commit; none before the first build.
    pub fn searcher(&self) -> Option<Searcher> {
        if self.opened.read().expect("never poisoned").is_none() {
            self.refresh();
        }
        self.opened
            .read()
            .expect("never poisoned")
            .as_ref()
            .map(|opened| opened.reader.searcher())
    }

    /// The post stream version the index has for `post_id`.
    pub fn indexed_version(&self, post_id: Uuid) -> Option<i32> {
        let searcher = self.searcher()?;
        let term = Term::from_field_text(self.schema.id, &post_id.to_string());
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .ok()?;
        let (_, address) = top.first()?;
        let document: TantivyDocument = searcher.doc(*address).ok()?;
        document
            .get_first(self.schema.version)
            .and_then(|value| value.as_u64())
            .and_then(|version| i32::try_from(version).ok())
    }
}
