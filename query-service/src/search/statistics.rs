//! BM25's corpus statistics over the live public posts alone.
//!
//! tantivy's own count every document in the segments, deleted ones included
//! until a merge drops them, and the index also holds markers (drafts,
//! deleted posts, users) without text. Counted, they would move every score
//! whenever someone saves a draft, or whenever segments happen to merge. Here
//! a document counts only if it is alive and public; the numbers are the same
//! for the same set of posts whatever the segments look like. A searcher's
//! segments never change, so they are computed once per searcher generation
//! (per commit), the term counts as queries ask for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chronicle_schema::search_schema::{PostIndexSchema, STATUS_PUBLISHED};
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocSet, Searcher, TERMINATED, Term};

/// Statistics of one searcher generation.
pub struct Statistics {
    generation: u64,
    searcher: Searcher,
    public: Term,
    public_docs: u64,
    tokens: Mutex<HashMap<Field, u64>>,
    doc_freqs: Mutex<HashMap<Term, u64>>,
}

/// The statistics of the latest generation, shared by the searches on it.
#[derive(Clone, Default)]
pub struct StatisticsCache(Arc<Mutex<Option<Arc<Statistics>>>>);

impl StatisticsCache {
    pub fn of(
        &self,
        searcher: &Searcher,
        schema: &PostIndexSchema,
    ) -> tantivy::Result<Arc<Statistics>> {
        let generation = searcher.generation().generation_id();
        if let Some(statistics) = self
            .0
            .lock()
            .expect("never poisoned")
            .as_ref()
            .filter(|statistics| statistics.generation == generation)
        {
            return Ok(statistics.clone());
        }
        let public = Term::from_field_text(schema.status, STATUS_PUBLISHED);
        let statistics = Arc::new(Statistics {
            generation,
            searcher: searcher.clone(),
            public_docs: alive_with(searcher, &public)?,
            public,
            tokens: Mutex::default(),
            doc_freqs: Mutex::default(),
        });
        *self.0.lock().expect("never poisoned") = Some(statistics.clone());
        Ok(statistics)
    }
}

/// Alive documents that have `term`.
fn alive_with(searcher: &Searcher, term: &Term) -> tantivy::Result<u64> {
    let mut count = 0;
    for segment in searcher.segment_readers() {
        for_each_alive(segment, term, |_| count += 1)?;
    }
    Ok(count)
}

fn for_each_alive(
    segment: &tantivy::SegmentReader,
    term: &Term,
    mut visit: impl FnMut(tantivy::DocId),
) -> tantivy::Result<()> {
    let inverted = segment.inverted_index(term.field())?;
    let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? else {
        return Ok(());
    };
    let alive = segment.alive_bitset();
    let mut doc = postings.doc();
    while doc != TERMINATED {
        if alive.is_none_or(|alive| alive.is_alive(doc)) {
            visit(doc);
        }
        doc = postings.advance();
    }
    Ok(())
}

impl Bm25StatisticsProvider for Statistics {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        if let Some(tokens) = self.tokens.lock().expect("never poisoned").get(&field) {
            return Ok(*tokens);
        }
        // Over the public documents only: a segment without text (markers
        // alone) answers a norm of 1 for every document.
        let mut tokens = 0u64;
        for segment in self.searcher.segment_readers() {
            let norms = segment.get_fieldnorms_reader(field)?;
            for_each_alive(segment, &self.public, |doc| {
                tokens += u64::from(norms.fieldnorm(doc));
            })?;
        }
        self.tokens
            .lock()
            .expect("never poisoned")
            .insert(field, tokens);
        Ok(tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.public_docs.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        if let Some(count) = self.doc_freqs.lock().expect("never poisoned").get(term) {
            return Ok(*count);
        }
        let count = alive_with(&self.searcher, term)?;
        let mut doc_freqs = self.doc_freqs.lock().expect("never poisoned");
        // A generation lives a second or so under writes; its memo stays small.
        if doc_freqs.len() > 10_000 {
            doc_freqs.clear();
        }
        doc_freqs.insert(term.clone(), count);
        Ok(count)
    }
}
