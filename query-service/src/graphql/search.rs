//! `search`: full-text search over published posts.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::pagination::{PageInfo, decode_cursor, encode_cursor, page_size};
use super::types::Post;
use super::{loaders, request, services};
use crate::error::ApiError;
use crate::search::{MAX_SEARCH_OFFSET, SearchError, SearchRequest, SearchResults};

pub const MAX_SEARCH_PAGE: usize = 50;
const CURSOR_KIND: &str = "search";

#[derive(InputObject, Default)]
pub struct SearchFilter {
    pub tags: Option<Vec<String>>,
    pub author_handle: Option<String>,
    pub published_after: Option<DateTime<Utc>>,
    pub published_before: Option<DateTime<Utc>>,
}

/// HTML-escaped snippets, matches wrapped in `<mark>`.
#[derive(SimpleObject)]
pub struct SearchHighlights {
    pub title: Option<String>,
    pub body: Option<String>,
}

#[derive(SimpleObject)]
pub struct SearchEdge {
    pub cursor: String,
    pub node: Post,
    pub score: f64,
    pub highlights: SearchHighlights,
}

#[derive(SimpleObject)]
pub struct SearchConnection {
    pub edges: Vec<SearchEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
    pub took_ms: f64,
}

#[derive(Default)]
pub struct SearchQuery;

/// A result position as a cursor, and back.
pub fn cursor_of(position: usize) -> String {
    encode_cursor(CURSOR_KIND, &position.to_string())
}

pub fn offset_after(field: &str, after: Option<&str>) -> Result<usize, ApiError> {
    match after {
        None => Ok(0),
        Some(cursor) => {
            let offset = decode_cursor(field, CURSOR_KIND, cursor)?
                .parse::<usize>()
                .ok()
                .and_then(|position| position.checked_add(1))
                .ok_or_else(|| ApiError::bad_input(field, "is not a cursor from this list"))?;
            if offset > MAX_SEARCH_OFFSET {
                return Err(ApiError::bad_input(
                    field,
                    format!(
                        "is past the first {MAX_SEARCH_OFFSET} results, the deepest a search pages"
                    ),
                ));
            }
            Ok(offset)
        }
    }
}

/// Runs the search off the async runtime, waiting first (bounded) for the
/// index to include the request's consistency token, if it has one.
pub async fn run(context: &Context<'_>, search: SearchRequest) -> Result<SearchResults, ApiError> {
    let services = services(context);
    if let Some(token) = &request(context).consistency_token {
        let consistency = &services.consistency;
        consistency
            .wait_for_search(token, consistency.max_wait)
            .await?
            .into_result("the search index", consistency.max_wait)?;
    }
    request(context)
        .notes
        .lock()
        .expect("notes are never poisoned")
        .touched_search = true;
    let index = services.consistency.search_index().clone();
    tokio::task::spawn_blocking(move || index.search(&search))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::Malformed(message) => ApiError::bad_input("query", message),
            SearchError::Unavailable => {
                ApiError::unavailable("search is not available yet; retry shortly")
            }
            SearchError::Failed(error) => ApiError::internal(error),
        }
    }
}

#[Object]
impl SearchQuery {
    /// Full-text search over published posts: words, "phrases", -exclusions;
    /// ranked by relevance.
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, 10, MAX_SEARCH_PAGE, child_complexity)"
    )]
    async fn search(
        &self,
        context: &Context<'_>,
        query: String,
        filter: Option<SearchFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<SearchConnection, ApiError> {
        let limit = page_size("first", first, 10, MAX_SEARCH_PAGE)?;
        let offset = offset_after("after", after.as_deref())?;
        let filter = filter.unwrap_or_default();
        let results = run(
            context,
            SearchRequest {
                text: query,
                tags: filter.tags.unwrap_or_default(),
                author_handle: filter.author_handle,
                published_after: filter.published_after,
                published_before: filter.published_before,
                limit,
                offset,
            },
        )
        .await?;
        let request = request(context);
        let ids: Vec<loaders::PostId> = results
            .hits
            .iter()
            .map(|hit| loaders::PostId(hit.id))
            .collect();
        let mut rows = request.loader().load_many(ids).await?;
        let mut edges = Vec::with_capacity(results.hits.len());
        for (rank, hit) in results.hits.into_iter().enumerate() {
            // The read model is the truth for what may be shown; the index can
            // be a moment behind an unpublish or a deletion.
            let Some(row) = rows
                .remove(&loaders::PostId(hit.id))
                .filter(|row| row.is_public())
            else {
                continue;
            };
            edges.push(SearchEdge {
                cursor: cursor_of(offset + rank),
                node: Post(row),
                score: f64::from(hit.score),
                highlights: SearchHighlights {
                    title: hit.title_highlight,
                    body: hit.body_highlight,
                },
            });
        }
        let page_info = PageInfo {
            has_next_page: offset + limit < results.total,
            has_previous_page: offset > 0,
            start_cursor: edges.first().map(|edge| edge.cursor.clone()),
            end_cursor: edges.last().map(|edge| edge.cursor.clone()),
        };
        Ok(SearchConnection {
            edges,
            page_info,
            total_count: i32::try_from(results.total).unwrap_or(i32::MAX),
            took_ms: results.took.as_secs_f64() * 1000.0,
        })
    }
}
