//! Mutations: each maps its input to a typed command, hands it with the
//! caller's token to the command-service, and reads the written entity back
//! once the projections include it.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, SimpleObject};
use chronicle_schema::commands::Secret;
use chronicle_schema::{Command, CommandReply};
use uuid::Uuid;

use super::query::parse_id;
use super::types::{Comment, Post, RoleValue, User, visible_comment, visible_post};
use super::{loaders, request, services};
use crate::error::ApiError;

pub struct Mutation;

#[derive(InputObject)]
pub struct RegisterUserInput {
    pub email: String,
    pub handle: String,
    pub display_name: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct UpdateProfileInput {
    pub display_name: Option<String>,
    /// null clears the bio; leaving it out keeps it.
    pub bio: MaybeUndefined<String>,
    pub expected_version: Option<i32>,
}

#[derive(InputObject)]
pub struct ChangeRoleInput {
    pub user_id: ID,
    pub role: RoleValue,
    pub expected_version: Option<i32>,
}

#[derive(InputObject)]
pub struct CreatePostInput {
    pub title: String,
    pub body: String,
    pub tags: Option<Vec<String>>,
    pub slug: Option<String>,
}

#[derive(InputObject)]
pub struct EditPostInput {
    pub id: ID,
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
    pub expected_version: Option<i32>,
}

#[derive(InputObject)]
pub struct AddCommentInput {
    pub post_id: ID,
    pub body: String,
    pub parent_id: Option<ID>,
}

#[derive(InputObject)]
pub struct EditCommentInput {
    pub id: ID,
    pub body: String,
    pub expected_version: Option<i32>,
}

/// Every write payload carries the new stream version and a consistency
/// token; its entity is read from the projections once they include the write
/// (null if they did not within the wait; `extensions.consistency` says so).
#[derive(SimpleObject)]
pub struct UserPayload {
    pub user: Option<User>,
    pub version: i32,
    pub consistency_token: String,
}

#[derive(SimpleObject)]
pub struct PostPayload {
    pub post: Option<Post>,
    pub version: i32,
    pub consistency_token: String,
}

#[derive(SimpleObject)]
pub struct CommentPayload {
    pub comment: Option<Comment>,
    pub version: i32,
    pub consistency_token: String,
}

#[derive(SimpleObject)]
pub struct DeletePayload {
    pub id: ID,
    pub version: i32,
    pub consistency_token: String,
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: i32,
    pub user: Option<User>,
}

#[Object]
impl Mutation {
    async fn register_user(
        &self,
        context: &Context<'_>,
        input: RegisterUserInput,
    ) -> Result<UserPayload, ApiError> {
        let command = Command::RegisterUser {
            email: input.email,
            handle: input.handle,
            display_name: input.display_name,
            password: Secret::new(input.password),
        };
        user_payload(context, send(context, command).await?).await
    }

    async fn login(
        &self,
        context: &Context<'_>,
        input: LoginInput,
    ) -> Result<AuthPayload, ApiError> {
        let command = Command::Login {
            email: input.email,
            password: Secret::new(input.password),
        };
        auth_payload(context, send_only(context, command).await?).await
    }

    /// Rotates: the presented token is spent; presenting it again revokes the session.
    async fn refresh_token(
        &self,
        context: &Context<'_>,
        refresh_token: String,
    ) -> Result<AuthPayload, ApiError> {
        let command = Command::RefreshToken {
            refresh_token: Secret::new(refresh_token),
        };
        auth_payload(context, send_only(context, command).await?).await
    }

    async fn logout(&self, context: &Context<'_>, refresh_token: String) -> Result<bool, ApiError> {
        let command = Command::Logout {
            refresh_token: Secret::new(refresh_token),
        };
        send_only(context, command).await?;
        Ok(true)
    }

    async fn update_profile(
        &self,
        context: &Context<'_>,
        input: UpdateProfileInput,
    ) -> Result<UserPayload, ApiError> {
        let bio = match input.bio {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(String::new()),
            MaybeUndefined::Value(bio) => Some(bio),
        };
        let command = Command::UpdateProfile {
            display_name: input.display_name,
            bio,
            expected_version: input.expected_version,
        };
        user_payload(context, send(context, command).await?).await
    }

    /// Admins only.
    async fn change_role(
        &self,
        context: &Context<'_>,
        input: ChangeRoleInput,
    ) -> Result<UserPayload, ApiError> {
        let command = Command::ChangeRole {
            user_id: parse_id("userId", &input.user_id)?,
            role: input.role.into(),
            expected_version: input.expected_version,
        };
        user_payload(context, send(context, command).await?).await
    }

    /// The user themself, or an admin.
    async fn deactivate_user(
        &self,
        context: &Context<'_>,
        id: ID,
        expected_version: Option<i32>,
    ) -> Result<UserPayload, ApiError> {
        let command = Command::DeactivateUser {
            user_id: parse_id("id", &id)?,
            expected_version,
        };
        user_payload(context, send(context, command).await?).await
    }

    /// Erases a person for good (crypto-shredding, docs/privacy.md): their
    /// key is destroyed, their posts and comments leave every read model and
    /// the search index, their sessions end, their email and handle are free
    /// again. The person themself, or an admin; an admin asking again gets
    /// the same answer.
    async fn erase_user(&self, context: &Context<'_>, id: ID) -> Result<DeletePayload, ApiError> {
        let command = Command::EraseUser {
            user_id: parse_id("id", &id)?,
        };
        Ok(delete_payload(send(context, command).await?))
    }

    /// Creates a draft.
    async fn create_post(
        &self,
        context: &Context<'_>,
        input: CreatePostInput,
    ) -> Result<PostPayload, ApiError> {
        let command = Command::CreatePost {
            title: input.title,
            body: input.body,
            tags: input.tags,
            slug: input.slug,
        };
        post_payload(context, send(context, command).await?).await
    }

    async fn edit_post(
        &self,
        context: &Context<'_>,
        input: EditPostInput,
    ) -> Result<PostPayload, ApiError> {
        let command = Command::EditPost {
            post_id: parse_id("id", &input.id)?,
            title: input.title,
            body: input.body,
            tags: input.tags,
            expected_version: input.expected_version,
        };
        post_payload(context, send(context, command).await?).await
    }

    async fn publish_post(
        &self,
        context: &Context<'_>,
        id: ID,
        expected_version: Option<i32>,
    ) -> Result<PostPayload, ApiError> {
        let command = Command::PublishPost {
            post_id: parse_id("id", &id)?,
            expected_version,
        };
        post_payload(context, send(context, command).await?).await
    }

    /// The author, a moderator or an admin.
    async fn unpublish_post(
        &self,
        context: &Context<'_>,
        id: ID,
        expected_version: Option<i32>,
    ) -> Result<PostPayload, ApiError> {
        let command = Command::UnpublishPost {
            post_id: parse_id("id", &id)?,
            expected_version,
        };
        post_payload(context, send(context, command).await?).await
    }

    /// The author or an admin.
    async fn delete_post(
        &self,
        context: &Context<'_>,
        id: ID,
        expected_version: Option<i32>,
    ) -> Result<DeletePayload, ApiError> {
        let command = Command::DeletePost {
            post_id: parse_id("id", &id)?,
            expected_version,
        };
        Ok(delete_payload(send(context, command).await?))
    }

    /// Published posts only; replies are one level deep.
    async fn add_comment(
        &self,
        context: &Context<'_>,
        input: AddCommentInput,
    ) -> Result<CommentPayload, ApiError> {
        let command = Command::AddComment {
            post_id: parse_id("postId", &input.post_id)?,
            body: input.body,
            parent_id: input
                .parent_id
                .as_ref()
                .map(|id| parse_id("parentId", id))
                .transpose()?,
        };
        comment_payload(context, send(context, command).await?).await
    }

    async fn edit_comment(
        &self,
        context: &Context<'_>,
        input: EditCommentInput,
    ) -> Result<CommentPayload, ApiError> {
        let command = Command::EditComment {
            comment_id: parse_id("id", &input.id)?,
            body: input.body,
            expected_version: input.expected_version,
        };
        comment_payload(context, send(context, command).await?).await
    }

    /// The author, a moderator or an admin.
    async fn delete_comment(
        &self,
        context: &Context<'_>,
        id: ID,
        expected_version: Option<i32>,
    ) -> Result<DeletePayload, ApiError> {
        let command = Command::DeleteComment {
            comment_id: parse_id("id", &id)?,
            expected_version,
        };
        Ok(delete_payload(send(context, command).await?))
    }
}

/// A command the command-service accepted, and whether the projections
/// included it within the wait (if not, the payload's entity is null and the
/// response's `extensions.consistency` lists the pending write).
struct Accepted {
    reply: CommandReply,
    projected: bool,
}

async fn send_only(context: &Context<'_>, command: Command) -> Result<CommandReply, ApiError> {
    services(context)
        .commands
        .send(&request(context).caller, command)
        .await
}

async fn send(context: &Context<'_>, command: Command) -> Result<Accepted, ApiError> {
    let reply = send_only(context, command).await?;
    let consistency = &services(context).consistency;
    let projected = consistency
        .wait_for(&reply.consistency_token, consistency.max_wait)
        .await?
        == crate::consistency::Wait::Reached;
    if !projected {
        request(context).note_pending_write(&reply.consistency_token);
    }
    Ok(Accepted { reply, projected })
}

fn token(reply: &CommandReply) -> String {
    reply.consistency_token.to_string()
}

async fn user_payload(context: &Context<'_>, accepted: Accepted) -> Result<UserPayload, ApiError> {
    let user = if accepted.projected {
        load_user(context, accepted.reply.stream_id).await?
    } else {
        None
    };
    Ok(UserPayload {
        user,
        version: accepted.reply.version,
        consistency_token: token(&accepted.reply),
    })
}

async fn load_user(context: &Context<'_>, id: Uuid) -> Result<Option<User>, ApiError> {
    Ok(request(context).loader().load_one(id).await?.map(User))
}

async fn post_payload(context: &Context<'_>, accepted: Accepted) -> Result<PostPayload, ApiError> {
    // The writer reads back what they wrote as anyone reads it: a draft only
    // if they are its author or a moderator.
    let post = if accepted.projected {
        visible_post(context, accepted.reply.stream_id).await?
    } else {
        None
    };
    Ok(PostPayload {
        post,
        version: accepted.reply.version,
        consistency_token: token(&accepted.reply),
    })
}

async fn comment_payload(
    context: &Context<'_>,
    accepted: Accepted,
) -> Result<CommentPayload, ApiError> {
    // A comment on a post the writer may no longer see (unpublished or
    // deleted since) is accepted, and not shown with that post.
    let comment = match accepted.projected {
        true => match request(context)
            .loader()
            .load_one(loaders::CommentId(accepted.reply.stream_id))
            .await?
        {
            Some(row) => visible_comment(context, row).await?,
            None => None,
        },
        false => None,
    };
    Ok(CommentPayload {
        comment,
        version: accepted.reply.version,
        consistency_token: token(&accepted.reply),
    })
}

fn delete_payload(accepted: Accepted) -> DeletePayload {
    DeletePayload {
        id: ID(accepted.reply.stream_id.to_string()),
        version: accepted.reply.version,
        consistency_token: token(&accepted.reply),
    }
}

async fn auth_payload(context: &Context<'_>, reply: CommandReply) -> Result<AuthPayload, ApiError> {
    let session = reply
        .session
        .ok_or_else(|| ApiError::internal("the command-service issued no session"))?;
    Ok(AuthPayload {
        access_token: session.access_token.expose().to_owned(),
        refresh_token: session.refresh_token.expose().to_owned(),
        token_type: session.token_type,
        expires_in: i32::try_from(session.expires_in).unwrap_or(i32::MAX),
        user: load_user(context, reply.stream_id).await?,
    })
}
