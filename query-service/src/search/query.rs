//! Running a search: the user's words, "phrases" and -exclusions, ranked by
//! BM25 with titles and tags weighing more, restricted to published posts and
//! the filters, with HTML-escaped `<mark>` highlights.

use std::ops::Bound;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{TantivyDocument, Term};
use uuid::Uuid;

use chronicle_schema::search_schema::STATUS_PUBLISHED;

use super::{SearchIndex, syntax};

/// The deepest a search pages (as search engines do: Elasticsearch's
/// `max_result_window` is 10,000): ranking deeper costs memory per request.
pub const MAX_SEARCH_OFFSET: usize = 10_000;
const BODY_SNIPPET_CHARS: usize = 200;

#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    pub text: String,
    pub tags: Vec<String>,
    pub author_handle: Option<String>,
    pub published_after: Option<DateTime<Utc>>,
    pub published_before: Option<DateTime<Utc>>,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Clone, Debug)]
pub struct SearchHit {
    pub id: Uuid,
    pub score: f32,
    pub slug: String,
    pub title: String,
    pub tags: Vec<String>,
    pub author_handle: String,
    pub published_at: Option<DateTime<Utc>>,
    /// HTML-escaped, matches in `<mark>`; none when the field has no match.
    pub title_highlight: Option<String>,
    pub body_highlight: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    pub total: usize,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query cannot be understood; the message says why.
    #[error("{0}")]
    Malformed(String),
    #[error("the search index is not available yet")]
    Unavailable,
    #[error("search failed: {0}")]
    Failed(#[from] tantivy::TantivyError),
}

impl SearchIndex {
    /// Runs on the calling thread: call it off the async runtime.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResults, SearchError> {
        let started = Instant::now();
        let parts = syntax::parse(&request.text).map_err(SearchError::Malformed)?;
        if request.offset > MAX_SEARCH_OFFSET {
            return Err(SearchError::Malformed(format!(
                "a search reaches its first {MAX_SEARCH_OFFSET} results; narrow the query to see others"
            )));
        }
        let searcher = self.searcher().ok_or(SearchError::Unavailable)?;
        let schema = self.schema();
        let mut analyzer = chronicle_schema::prose_tokenizer::analyzer();
        let words = syntax::build(&parts, schema, &mut analyzer).map_err(SearchError::Malformed)?;

        let term = |field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, words.box_clone()),
            (Occur::Must, term(schema.status, STATUS_PUBLISHED)),
        ];
        for tag in &request.tags {
            clauses.push((Occur::Must, term(schema.tag, &tag.trim().to_lowercase())));
        }
        if let Some(author) = &request.author_handle {
            clauses.push((
                Occur::Must,
                term(schema.author_handle, &author.trim().to_lowercase()),
            ));
        }
        if request.published_after.is_some() || request.published_before.is_some() {
            let bound = |at: Option<DateTime<Utc>>, inclusive: bool| match at {
                None => Bound::Unbounded,
                Some(at) => {
                    let term = Term::from_field_date(schema.published_at, index_date(at));
                    if inclusive {
                        Bound::Included(term)
                    } else {
                        Bound::Excluded(term)
                    }
                }
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(request.published_after, false),
                    bound(request.published_before, false),
                )),
            ));
        }
        let query = BooleanQuery::new(clauses);

        let statistics = self.statistics(&searcher)?;
        let (top, total) = searcher.search_with_statistics_provider(
            &query,
            &(
                TopDocs::with_limit(request.limit.max(1))
                    .and_offset(request.offset)
                    .order_by_score(),
                Count,
            ),
            &*statistics,
        )?;
        let mut title_snippets = SnippetGenerator::create(&searcher, &*words, schema.title)?;
        title_snippets.set_max_num_chars(300);
        let mut body_snippets = SnippetGenerator::create(&searcher, &*words, schema.body)?;
        body_snippets.set_max_num_chars(BODY_SNIPPET_CHARS);

        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address)?;
            let text_of = |field| {
                document
                    .get_first(field)
                    .and_then(|value| value.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let highlight = |generator: &SnippetGenerator| {
                let mut snippet = generator.snippet_from_doc(&document);
                snippet.set_snippet_prefix_postfix("<mark>", "</mark>");
                (!snippet.highlighted().is_empty()).then(|| snippet.to_html())
            };
            let Ok(id) = text_of(schema.id).parse() else {
                continue;
            };
            hits.push(SearchHit {
                id,
                score,
                slug: text_of(schema.slug),
                title: text_of(schema.title),
                tags: document
                    .get_all(schema.tag)
                    .filter_map(|value| value.as_str().map(str::to_owned))
                    .collect(),
                author_handle: text_of(schema.author_handle),
                published_at: document
                    .get_first(schema.published_at)
                    .and_then(|value| value.as_datetime())
                    .and_then(|at| DateTime::from_timestamp_micros(at.into_timestamp_micros())),
                title_highlight: highlight(&title_snippets),
                body_highlight: highlight(&body_snippets),
            });
        }
        let took = started.elapsed();
        metrics::histogram!("chronicle_search_duration_seconds").record(took.as_secs_f64());
        Ok(SearchResults { hits, total, took })
    }
}

/// tantivy keeps dates as i64 nanoseconds (years 1677 to 2262): a filter date
/// beyond is clamped, which selects the same posts.
fn index_date(at: DateTime<Utc>) -> tantivy::DateTime {
    const MIN_SECONDS: i64 = -9_200_000_000; // 1678
    const MAX_SECONDS: i64 = 9_200_000_000; // 2261
    let seconds = at.timestamp().clamp(MIN_SECONDS, MAX_SECONDS);
    tantivy::DateTime::from_timestamp_secs(seconds)
}
