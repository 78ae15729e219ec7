//! REST beside GraphQL: `GET /search`, `GET /me/export` (a data export,
//! streamed) and their OpenAPI document.

mod images;
mod search;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::graphql::Services;

pub fn router(services: Services) -> Router {
    Router::new()
        .route("/search", get(search::search))
        .route("/me/export", get(crate::export::download))
        .route("/openapi.json", get(openapi))
        .route(
            "/images",
            // The body is read (and limited) by the handler itself.
            post(images::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/images/{hash}/{rendition}", get(images::rendition))
        .with_state(services)
}

/// The OpenAPI 3.1 description of the REST endpoints.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
