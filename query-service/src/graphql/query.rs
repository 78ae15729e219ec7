use async_graphql::{Context, Enum, ID, InputObject, Object};
use chronicle_schema::ErrorCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pagination::{Counted, Listing, PageArgs, connection, empty, encode_cursor, position};
use super::types::{Node, Post, PostStatusValue, Tag, User, visible_comment, visible_post};
use super::{RequestContext, loaders, request, services};
use crate::error::ApiError;
use crate::read_models::lists::{self, Order, PostScope, SortKey};
use crate::read_models::{posts, users};

#[derive(Default)]
pub struct CoreQuery;

pub(crate) fn parse_id(field: &str, id: &ID) -> Result<Uuid, ApiError> {
    id.parse::<Uuid>()
        .map_err(|_| ApiError::bad_input(field, "is not a valid id"))
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum PostOrder {
    #[default]
    PublishedAtDesc,
    PublishedAtAsc,
    UpdatedAtDesc,
    CommentCountDesc,
}

#[derive(InputObject, Default)]
pub struct PostFilter {
    pub author_handle: Option<String>,
    pub tag: Option<String>,
    /// DRAFT only returns what the caller may see.
    pub status: Option<PostStatusValue>,
    pub published_after: Option<DateTime<Utc>>,
    pub published_before: Option<DateTime<Utc>>,
}

impl PostOrder {
    pub fn order(self) -> Order {
        match self {
            PostOrder::PublishedAtDesc => Order {
                column: "published_at",
                descending: true,
            },
            PostOrder::PublishedAtAsc => Order {
                column: "published_at",
                descending: false,
            },
            PostOrder::UpdatedAtDesc => Order {
                column: "updated_at",
                descending: true,
            },
            PostOrder::CommentCountDesc => Order {
                column: "comment_count",
                descending: true,
            },
        }
    }

    fn key(self, post: &posts::PostRow) -> SortKey {
        match self {
            PostOrder::PublishedAtDesc | PostOrder::PublishedAtAsc => {
                SortKey::Time(post.published_at)
            }
            PostOrder::UpdatedAtDesc => SortKey::Time(Some(post.updated_at)),
            PostOrder::CommentCountDesc => SortKey::Count(post.comment_count),
        }
    }

    /// Cursors of one order mean nothing in another.
    fn cursor_kind(self) -> &'static str {
        match self {
            PostOrder::PublishedAtDesc => "posts.pd",
            PostOrder::PublishedAtAsc => "posts.pa",
            PostOrder::UpdatedAtDesc => "posts.ud",
            PostOrder::CommentCountDesc => "posts.cd",
        }
    }
}

/// A page of posts in `scope`, as a connection.
pub async fn post_listing(
    context: &Context<'_>,
    scope: PostScope,
    order: PostOrder,
    args: PageArgs,
) -> Result<Listing<Post>, ApiError> {
    // Drafts have no publication time to sort by: newest change first.
    let order = if scope.drafts
        && matches!(
            order,
            PostOrder::PublishedAtDesc | PostOrder::PublishedAtAsc
        ) {
        PostOrder::UpdatedAtDesc
    } else {
        order
    };
    let page = args.page(order.cursor_kind())?;
    let pool = request(context).pool(services(context));
    let fetched = lists::posts(pool, &scope, order.order(), &page).await?;
    Ok(connection(
        &page,
        fetched,
        Counted::Posts(scope),
        |post| encode_cursor(order.cursor_kind(), &position(&order.key(post), post.id)),
        Post,
    ))
}

#[Object]
impl CoreQuery {
    /// The signed-in user, or null.
    async fn viewer(&self, context: &Context<'_>) -> Result<Option<User>, ApiError> {
        let Some(viewer) = context.data_unchecked::<RequestContext>().viewer else {
            return Ok(None);
        };
        Ok(request(context)
            .loader()
            .load_one(viewer.id)
            .await?
            .map(User))
    }

    /// Everything Chronicle holds about the signed-in user, as one JSON
    /// document: profile, sessions, posts (drafts and deleted ones too) and
    /// comments. A large one streams from `GET /me/export` (docs/privacy.md).
    async fn export_my_data(
        &self,
        context: &Context<'_>,
    ) -> Result<async_graphql::Json<serde_json::Value>, ApiError> {
        let Some(viewer) = context.data_unchecked::<RequestContext>().viewer else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "sign in to export your data",
            ));
        };
        let mut document = String::new();
        crate::export::write(services(context), viewer.id, &mut document).await?;
        let document = serde_json::from_str(&document)
            .map_err(|error| ApiError::internal(format!("the export is malformed: {error}")))?;
        Ok(async_graphql::Json(document))
    }

    /// Any user, post or comment by its id.
    async fn node(&self, context: &Context<'_>, id: ID) -> Result<Option<Node>, ApiError> {
        let id = parse_id("id", &id)?;
        let request = request(context);
        let loader = request.loader();
        let (user, post, comment) = futures::try_join!(
            loader.load_one(id),
            loader.load_one(loaders::PostId(id)),
            loader.load_one(loaders::CommentId(id)),
        )?;
        if let Some(user) = user {
            return Ok(Some(Node::User(User(user))));
        }
        if let Some(post) = post {
            return Ok(request.can_see(&post).then_some(Node::Post(Post(post))));
        }
        if let Some(comment) = comment {
            return Ok(visible_comment(context, comment).await?.map(Node::Comment));
        }
        Ok(None)
    }

    /// A user by id or handle (exactly one of them).
    async fn user(
        &self,
        context: &Context<'_>,
        id: Option<ID>,
        handle: Option<String>,
    ) -> Result<Option<User>, ApiError> {
        match (id, handle) {
            (Some(id), None) => Ok(request(context)
                .loader()
                .load_one(parse_id("id", &id)?)
                .await?
                .map(User)),
            (None, Some(handle)) => {
                let pool = request(context).pool(services(context));
                Ok(users::by_handle(pool, &handle).await?.map(User))
            }
            _ => Err(ApiError::bad_input(
                "id",
                "give exactly one of id and handle",
            )),
        }
    }

    /// Users in the order they joined.
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
    async fn users(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Listing<User>, ApiError> {
        const KIND: &str = "users";
        let page = PageArgs::forward(first, after).page(KIND)?;
        let pool = request(context).pool(services(context));
        let fetched = lists::users(pool, &page).await?;
        Ok(connection(
            &page,
            fetched,
            Counted::Users,
            |user| {
                encode_cursor(
                    KIND,
                    &position(&SortKey::Time(Some(user.joined_at)), user.id),
                )
            },
            User,
        ))
    }

    /// A post by id or slug (exactly one of them). Drafts only for their
    /// author, moderators and admins.
    async fn post(
        &self,
        context: &Context<'_>,
        id: Option<ID>,
        slug: Option<String>,
    ) -> Result<Option<Post>, ApiError> {
        match (id, slug) {
            (Some(id), None) => visible_post(context, parse_id("id", &id)?).await,
            (None, Some(slug)) => {
                let pool = request(context).pool(services(context));
                let row = posts::by_slug(pool, &slug).await?;
                Ok(row.filter(|row| request(context).can_see(row)).map(Post))
            }
            _ => Err(ApiError::bad_input("id", "give exactly one of id and slug")),
        }
    }

    /// Published posts (or, with `status: DRAFT`, the drafts the caller may see).
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "crate::graphql::cost::page(first, last, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
    async fn posts(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(PostOrder::PublishedAtDesc)")] order_by: Option<PostOrder>,
    ) -> Result<Listing<Post>, ApiError> {
        let filter = filter.unwrap_or_default();
        let drafts = filter.status == Some(PostStatusValue::Draft);
        let mut scope = PostScope {
            author_handle: filter.author_handle,
            tag: filter.tag,
            drafts,
            published_after: filter.published_after,
            published_before: filter.published_before,
            ..PostScope::default()
        };
        if drafts {
            match request(context).viewer {
                None => return Ok(empty()),
                Some(viewer) if !viewer.role.can_moderate() => scope.drafts_of = Some(viewer.id),
                Some(_) => {}
            }
        }
        post_listing(
            context,
            scope,
            order_by.unwrap_or_default(),
            PageArgs {
                first,
                after,
                last,
                before,
            },
        )
        .await
    }

    /// Tags by how many published posts carry them.
    #[graphql(
        complexity = "crate::graphql::cost::page(first, None, crate::graphql::pagination::DEFAULT_PAGE_SIZE, crate::graphql::pagination::MAX_PAGE_SIZE, child_complexity)"
    )]
    async fn tags(
        &self,
        context: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Listing<Tag>, ApiError> {
        const KIND: &str = "tags";
        let page = PageArgs::forward(first, None).page(KIND)?;
        let cursor = match after {
            Some(after) => {
                let text = super::pagination::decode_cursor("after", KIND, &after)?;
                let (count, name) = text
                    .split_once('|')
                    .and_then(|(count, name)| Some((count.parse::<i32>().ok()?, name.to_owned())))
                    .ok_or_else(|| {
                        ApiError::bad_input("after", "is not a cursor from this list")
                    })?;
                Some((count, name))
            }
            None => None,
        };
        let has_previous = cursor.is_some();
        let pool = request(context).pool(services(context));
        let fetched = lists::tags(pool, true, page.size, cursor).await?;
        let mut listing = async_graphql::connection::Connection::with_additional_fields(
            has_previous,
            fetched.more,
            super::pagination::Total(Counted::Tags),
        );
        listing.edges.extend(fetched.rows.into_iter().map(|tag| {
            let cursor = encode_cursor(KIND, &format!("{}|{}", tag.post_count, tag.name));
            async_graphql::connection::Edge::new(cursor, Tag(tag))
        }));
        Ok(listing)
    }

    /// How each projection is doing (moderators and admins).
    async fn projection_status(
        &self,
        context: &Context<'_>,
    ) -> Result<Vec<ProjectionStatus>, ApiError> {
        match request(context).viewer {
            None => {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "sign in to see projection status",
                ));
            }
            Some(viewer) if !viewer.role.can_moderate() => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only moderators and admins see projection status",
                ));
            }
            Some(_) => {}
        }
        let pool = request(context).pool(services(context));
        let rows = crate::read_models::status::all(pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| ProjectionStatus {
                // A projector that stopped reporting is not live, whatever it last said.
                state: if row.silent_for > SILENT_AFTER_SECONDS {
                    "FAILED".to_owned()
                } else {
                    row.state
                },
                name: row.projection,
                lag_events: i32::try_from(row.lag_events).unwrap_or(i32::MAX),
                lag_seconds: row.lag_seconds,
                dead_letters: i32::try_from(row.dead_letters).unwrap_or(i32::MAX),
                detail: row.detail,
            })
            .collect())
    }
}

/// The projector reports every second; this long without a report is a failure.
const SILENT_AFTER_SECONDS: f64 = 15.0;

#[derive(async_graphql::SimpleObject)]
pub struct ProjectionStatus {
    pub name: String,
    /// LIVE, CATCHING_UP, REBUILDING or FAILED (the outbox: LIVE, CATCHING_UP or HELD).
    pub state: String,
    pub lag_events: i32,
    pub lag_seconds: f64,
    pub dead_letters: i32,
    /// What holds it back, when something does (e.g. "held by xid 812, pid 4411, open 12 s").
    pub detail: Option<String>,
}
