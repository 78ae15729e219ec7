//! Relay connections: opaque cursors, page arguments, and `totalCount`
//! computed only when a client asks for it.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{request, services};
use crate::error::ApiError;
use crate::read_models::lists::{self, Fetched, Page, PostScope, SortKey};

pub use async_graphql::connection::PageInfo;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Our cursors are far shorter; a longer one is not ours, and is not decoded.
const MAX_CURSOR_CHARS: usize = 512;

/// Opaque to clients: a kind and a position, base64url-encoded.
pub fn encode_cursor(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

/// The position inside a cursor of `kind`; BAD_USER_INPUT for anything else.
pub fn decode_cursor(field: &str, kind: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::bad_input(field, "is not a cursor from this list");
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    raw.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or_else(invalid)
}

/// `first`/`last` checked against the limits.
pub fn page_size(
    field: &str,
    requested: Option<i32>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match requested {
        None => Ok(default),
        Some(size) if size >= 0 && (size as usize) <= max => Ok(size as usize),
        Some(_) => Err(ApiError::bad_input(
            field,
            format!("must be between 0 and {max}"),
        )),
    }
}

/// The arguments of a connection field.
#[derive(Clone, Debug, Default)]
pub struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl PageArgs {
    pub fn forward(first: Option<i32>, after: Option<String>) -> PageArgs {
        PageArgs {
            first,
            after,
            ..PageArgs::default()
        }
    }

    /// The page these arguments ask for, in a list whose cursors are of `kind`.
    pub fn page(&self, kind: &str) -> Result<Page, ApiError> {
        if self.first.is_some() && self.last.is_some() {
            return Err(ApiError::bad_input(
                "first",
                "give first (with after) or last (with before), not both",
            ));
        }
        let forward = self.last.is_none() && !(self.before.is_some() && self.first.is_none());
        let (size, cursor, field) = if forward {
            (
                page_size("first", self.first, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
                &self.after,
                "after",
            )
        } else {
            (
                page_size("last", self.last, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
                &self.before,
                "before",
            )
        };
        let cursor = match cursor {
            Some(cursor) => Some(decode_position(field, kind, cursor)?),
            None => None,
        };
        Ok(Page {
            forward,
            size,
            cursor,
        })
    }
}

/// A row's position as cursor text: its sort key, then its id.
pub fn position(key: &SortKey, id: Uuid) -> String {
    let key = match key {
        SortKey::Time(Some(at)) => format!(
            "t{}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        SortKey::Time(None) => "n".to_owned(),
        SortKey::Count(count) => format!("c{count}"),
        SortKey::Text(text) => format!("s{text}"),
    };
    format!("{key}|{id}")
}

fn decode_position(field: &str, kind: &str, cursor: &str) -> Result<(SortKey, Uuid), ApiError> {
    let invalid = || ApiError::bad_input(field, "is not a cursor from this list");
    let text = decode_cursor(field, kind, cursor)?;
    let (key, id) = text.rsplit_once('|').ok_or_else(invalid)?;
    let id = id.parse().map_err(|_| invalid())?;
    let key = match key.split_at_checked(1).ok_or_else(invalid)? {
        ("t", at) => SortKey::Time(Some(
            DateTime::parse_from_rfc3339(at)
                .map_err(|_| invalid())?
                .with_timezone(&Utc),
        )),
        ("n", "") => SortKey::Time(None),
        ("c", count) => SortKey::Count(count.parse().map_err(|_| invalid())?),
        ("s", text) => SortKey::Text(text.to_owned()),
        _ => return Err(invalid()),
    };
    Ok((key, id))
}

/// What a connection's `totalCount` counts.
#[derive(Clone, Debug)]
pub enum Counted {
    Users,
    Posts(PostScope),
    Tags,
    Comments {
        post: Option<Uuid>,
        parent: Option<Uuid>,
    },
    Nothing,
}

/// The connection's own fields: `totalCount`, counted when asked for.
pub struct Total(pub Counted);

#[Object]
impl Total {
    #[graphql(complexity = "crate::graphql::cost::AGGREGATE")]
    async fn total_count(&self, context: &Context<'_>) -> Result<i32, ApiError> {
        let pool = request(context).pool(services(context));
        let count = match &self.0 {
            Counted::Users => lists::count_users(pool).await?,
            Counted::Posts(scope) => lists::count_posts(pool, scope).await?,
            Counted::Tags => lists::count_tags(pool).await?,
            Counted::Comments { post, parent } => {
                lists::count_comments(pool, *post, *parent).await?
            }
            Counted::Nothing => 0,
        };
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

pub type Listing<Node> = Connection<String, Node, Total>;

/// A connection over a fetched page: `cursor` makes each row's cursor.
pub fn connection<Row, Node>(
    page: &Page,
    fetched: Fetched<Row>,
    counted: Counted,
    cursor: impl Fn(&Row) -> String,
    node: impl Fn(Row) -> Node,
) -> Listing<Node>
where
    Node: async_graphql::OutputType,
{
    // Going forward, a page after a cursor has something before it; going
    // backward, one before a cursor has something after it.
    let (has_previous, has_next) = if page.forward {
        (page.cursor.is_some(), fetched.more)
    } else {
        (fetched.more, page.cursor.is_some())
    };
    let mut listing = Connection::with_additional_fields(has_previous, has_next, Total(counted));
    listing.edges.extend(
        fetched
            .rows
            .into_iter()
            .map(|row| Edge::new(cursor(&row), node(row))),
    );
    listing
}

/// An empty connection (nothing the caller may see).
pub fn empty<Node: async_graphql::OutputType>() -> Listing<Node> {
    Connection::with_additional_fields(false, false, Total(Counted::Nothing))
}
