//! Pages of read-model rows in a stable order, by keyset (never OFFSET): a
//! page starts after (or ends before) a cursor's (sort key, id), so it costs
//! one index range scan however deep it is.
//!
//! The WHERE and ORDER BY vary with the list, so these are built with
//! `QueryBuilder`; every value is a bound parameter.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::comments::CommentRow;
use super::posts::PostRow;
use super::users::UserRow;

/// A position in a list: the row's sort key and its id (the tie-breaker).
#[derive(Clone, Debug, PartialEq)]
pub enum SortKey {
    Time(Option<DateTime<Utc>>),
    Count(i32),
    Text(String),
}

/// Which way a page goes from its cursor.
#[derive(Clone, Debug)]
pub struct Page {
    /// `first`/`after` (forward) or `last`/`before` (backward).
    pub forward: bool,
    pub size: usize,
    pub cursor: Option<(SortKey, Uuid)>,
}

/// One key column and its direction in the list's natural order.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub column: &'static str,
    pub descending: bool,
}

/// Appends `AND (key, id) >|< (cursor)` and the ORDER BY and LIMIT for `page`.
/// Rows come back in the page's direction; `fetch_page` puts them in order.
fn push_page(query: &mut QueryBuilder<Postgres>, order: Order, id_column: &str, page: &Page) {
    // Walking backward is walking the reversed order forward.
    let descending = order.descending == page.forward;
    if let Some((key, id)) = &page.cursor {
        query.push(format!(
            " AND ({}, {id_column}) {} (",
            order.column,
            if descending { "<" } else { ">" }
        ));
        match key {
            SortKey::Time(at) => query.push_bind(*at),
            SortKey::Count(count) => query.push_bind(*count),
            SortKey::Text(text) => query.push_bind(text.clone()),
        };
        query.push(", ").push_bind(*id).push(")");
    }
    // No NULLS LAST: a list's key is never null in its scope (a public post
    // has been published), and with it a descending page could not walk its
    // index backward but sorted every row of the scope, page after page.
    let direction = if descending { "DESC" } else { "ASC" };
    query.push(format!(
        " ORDER BY {} {direction}, {id_column} {direction} LIMIT ",
        order.column
    ));
    // One more than asked: whether there is a next page.
    query.push_bind((page.size + 1) as i64);
}

/// A page of rows in natural order, and whether more lie beyond it.
pub struct Fetched<T> {
    pub rows: Vec<T>,
    pub more: bool,
}

/// Runs a page's statement (public so that a test can run each list in a
/// transaction of its own and count what it read).
///
/// Lists are planned for their own arguments each time, never prepared: a
/// prepared statement's plan, made after a few runs for any arguments,
/// guesses how common a tag is, and for a rare one walks every public post
/// by date looking for a page of them.
pub async fn fetch_page<'e, T>(
    executor: impl PgExecutor<'e>,
    mut query: QueryBuilder<Postgres>,
    page: &Page,
) -> Result<Fetched<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut rows: Vec<T> = query
        .build_query_as()
        .persistent(false)
        .fetch_all(executor)
        .await?;
    let more = rows.len() > page.size;
    rows.truncate(page.size);
    if !page.forward {
        rows.reverse();
    }
    Ok(Fetched { rows, more })
}

async fn count(pool: &PgPool, mut query: QueryBuilder<Postgres>) -> Result<i64, sqlx::Error> {
    // Planned for its arguments, as a page is (`fetch_page`).
    query
        .build_query_scalar()
        .persistent(false)
        .fetch_one(pool)
        .await
}

use chronicle_schema::read_models::comments::COLUMNS as COMMENT_COLUMNS;
use chronicle_schema::read_models::posts::{COLUMNS as POST_COLUMNS, PostStatus};
use chronicle_schema::read_models::users::{COLUMNS as USER_COLUMNS, NOT_ERASED};

pub const USERS_ORDER: Order = Order {
    column: "joined_at",
    descending: false,
};

pub async fn users(pool: &PgPool, page: &Page) -> Result<Fetched<UserRow>, sqlx::Error> {
    // An erased person's row stays (their id is still an author's), unlisted.
    let mut query = QueryBuilder::new(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {NOT_ERASED}"
    ));
    push_page(&mut query, USERS_ORDER, "id", page);
    fetch_page(pool, query, page).await
}

pub async fn count_users(pool: &PgPool) -> Result<i64, sqlx::Error> {
    count(
        pool,
        QueryBuilder::new(format!("SELECT count(*) FROM users WHERE {NOT_ERASED}")),
    )
    .await
}

/// Which posts a list shows.
#[derive(Clone, Debug, Default)]
pub struct PostScope {
    pub author_handle: Option<String>,
    pub author_id: Option<Uuid>,
    pub tag: Option<String>,
    /// Drafts instead of published posts; `drafts_of` limits them to one author.
    pub drafts: bool,
    pub drafts_of: Option<Uuid>,
    pub published_after: Option<DateTime<Utc>>,
    pub published_before: Option<DateTime<Utc>>,
}

fn push_post_scope(query: &mut QueryBuilder<Postgres>, scope: &PostScope) {
    if scope.drafts {
        // The status as a literal, not a parameter: a plan made for any
        // value could not use the drafts' partial index.
        query.push(format!(
            " WHERE NOT deleted AND status = '{}'",
            PostStatus::Draft.as_str()
        ));
        if let Some(author) = scope.drafts_of {
            query.push(" AND author_id = ").push_bind(author);
        }
    } else {
        // What everyone sees (`PostRow::is_public`).
        query.push(" WHERE public");
    }
    if let Some(handle) = &scope.author_handle {
        // Through the author's id, which the posts are indexed by (a handle
        // is never changed).
        query
            .push(" AND author_id = (SELECT id FROM users WHERE handle = lower(")
            .push_bind(handle.clone())
            .push("))");
    }
    if let Some(author) = scope.author_id {
        query.push(" AND author_id = ").push_bind(author);
    }
    if let Some(tag) = &scope.tag {
        query
            .push(" AND tags @> ARRAY[lower(")
            .push_bind(tag.clone())
            .push(")]");
    }
    if let Some(after) = scope.published_after {
        query.push(" AND published_at > ").push_bind(after);
    }
    if let Some(before) = scope.published_before {
        query.push(" AND published_at < ").push_bind(before);
    }
}

pub async fn posts(
    pool: &PgPool,
    scope: &PostScope,
    order: Order,
    page: &Page,
) -> Result<Fetched<PostRow>, sqlx::Error> {
    let query = posts_statement(&format!("SELECT {POST_COLUMNS}"), scope, order, page);
    fetch_page(pool, query, page).await
}

/// The statement of a page of posts, selecting `select`.
pub fn posts_statement(
    select: &str,
    scope: &PostScope,
    order: Order,
    page: &Page,
) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(format!("{select} FROM posts"));
    push_post_scope(&mut query, scope);
    push_page(&mut query, order, "id", page);
    query
}

pub async fn count_posts(pool: &PgPool, scope: &PostScope) -> Result<i64, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT count(*) FROM posts");
    push_post_scope(&mut query, scope);
    count(pool, query).await
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TagRow {
    pub name: String,
    pub post_count: i32,
}

/// A page of tags, most used first, then by name. Their cursor is
/// (post count, name): tags have no id.
pub async fn tags(
    pool: &PgPool,
    forward: bool,
    size: usize,
    cursor: Option<(i32, String)>,
) -> Result<Fetched<TagRow>, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT name, post_count FROM tags WHERE TRUE");
    // Mixed directions (count down, name up), so the keyset condition is spelled out.
    if let Some((count, name)) = cursor {
        let (count_beyond, name_beyond) = if forward { ("<", ">") } else { (">", "<") };
        query
            .push(format!(" AND (post_count {count_beyond} "))
            .push_bind(count);
        query.push(" OR (post_count = ").push_bind(count);
        query
            .push(format!(" AND name {name_beyond} "))
            .push_bind(name)
            .push("))");
    }
    query.push(if forward {
        " ORDER BY post_count DESC, name ASC LIMIT "
    } else {
        " ORDER BY post_count ASC, name DESC LIMIT "
    });
    query.push_bind((size + 1) as i64);
    let mut rows: Vec<TagRow> = query.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > size;
    rows.truncate(size);
    if !forward {
        rows.reverse();
    }
    Ok(Fetched { rows, more })
}

pub async fn count_tags(pool: &PgPool) -> Result<i64, sqlx::Error> {
    count(pool, QueryBuilder::new("SELECT count(*) FROM tags")).await
}

pub const THREAD_ORDER: Order = Order {
    column: "created_at",
    descending: false,
};

/// Top-level comments of a post, or replies to a comment, oldest first.
pub async fn comments(
    pool: &PgPool,
    post_id: Option<Uuid>,
    parent_id: Option<Uuid>,
    page: &Page,
) -> Result<Fetched<CommentRow>, sqlx::Error> {
    let mut query = QueryBuilder::new(format!("SELECT {COMMENT_COLUMNS} FROM comments"));
    push_thread_scope(&mut query, post_id, parent_id);
    push_page(&mut query, THREAD_ORDER, "id", page);
    fetch_page(pool, query, page).await
}

fn push_thread_scope(
    query: &mut QueryBuilder<Postgres>,
    post_id: Option<Uuid>,
    parent_id: Option<Uuid>,
) {
    match (post_id, parent_id) {
        (_, Some(parent)) => query.push(" WHERE parent_id = ").push_bind(parent),
        (Some(post), None) => query
            .push(" WHERE parent_id IS NULL AND post_id = ")
            .push_bind(post),
        (None, None) => query.push(" WHERE FALSE"),
    };
}

pub async fn count_comments(
    pool: &PgPool,
    post_id: Option<Uuid>,
    parent_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT count(*) FROM comments");
    push_thread_scope(&mut query, post_id, parent_id);
    count(pool, query).await
}
