//! `GET /search?q=&tag=&author=&publishedAfter=&publishedBefore=&after=&first=`

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;
use crate::graphql::{Services, cursor_of, offset_after};
use crate::search::{SearchRequest, SearchResults};

const MAX_PAGE: usize = 50;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hit {
    id: String,
    slug: String,
    title: String,
    score: f32,
    highlights: Highlights,
    author: Author,
    tags: Vec<String>,
    published_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct Highlights {
    title: Option<String>,
    body: Option<String>,
}

#[derive(Serialize)]
struct Author {
    handle: String,
}

pub async fn search(State(services): State<Services>, RawQuery(query): RawQuery) -> Response {
    match run(&services, query.as_deref().unwrap_or_default()).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => {
            let status = StatusCode::from_u16(error.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"code": error.code.as_str(), "message": error.message, "fields": error.fields});
            (status, Json(body)).into_response()
        }
    }
}

async fn run(services: &Services, raw_query: &str) -> Result<serde_json::Value, ApiError> {
    let mut request = SearchRequest {
        limit: 10,
        ..SearchRequest::default()
    };
    let mut after = None;
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match name.as_ref() {
            "q" => request.text = value.into_owned(),
            "tag" => request.tags.push(value.into_owned()),
            "author" => request.author_handle = Some(value.into_owned()),
            "publishedAfter" => {
                request.published_after = Some(timestamp("publishedAfter", &value)?)
            }
            "publishedBefore" => {
                request.published_before = Some(timestamp("publishedBefore", &value)?)
            }
            "after" => after = Some(value.into_owned()),
            "first" => {
                request.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|first| (1..=MAX_PAGE).contains(first))
                    .ok_or_else(|| {
                        ApiError::bad_input("first", format!("must be 1 to {MAX_PAGE}"))
                    })?;
            }
            other => return Err(ApiError::bad_input(other, "is not a search parameter")),
        }
    }
    if request.text.trim().is_empty() {
        return Err(ApiError::bad_input("q", "the query is empty"));
    }
    request.offset = offset_after("after", after.as_deref())?;
    let offset = request.offset;
    let index = services.consistency.search_index().clone();
    let results: SearchResults = tokio::task::spawn_blocking(move || index.search(&request))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| {
            let mut error = ApiError::from(error);
            // Over REST the query is the `q` parameter.
            if let Some(message) = error.fields.remove("query") {
                error.fields.insert("q".to_owned(), message);
            }
            error
        })?;
    let hits: Vec<Hit> = results
        .hits
        .into_iter()
        .map(|hit| Hit {
            id: hit.id.to_string(),
            slug: hit.slug,
            title: hit.title,
            score: hit.score,
            highlights: Highlights {
                title: hit.title_highlight,
                body: hit.body_highlight,
            },
            author: Author {
                handle: hit.author_handle,
            },
            tags: hit.tags,
            published_at: hit.published_at,
        })
        .collect();
    let end_cursor = (!hits.is_empty()).then(|| cursor_of(offset + hits.len() - 1));
    Ok(json!({
        "hits": hits,
        "totalCount": results.total,
        "endCursor": end_cursor,
        "tookMs": results.took.as_secs_f64() * 1000.0,
    }))
}

fn timestamp(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_input(
                field,
                "must be an RFC 3339 date-time, like 2026-01-31T00:00:00Z",
            )
        })
}
