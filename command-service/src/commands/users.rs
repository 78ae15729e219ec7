//! User commands: registration, profile, role, deactivation.

use chronicle_schema::{CommandReply, Role};
use uuid::Uuid;

use super::unique_claims::{ClaimKind, claim};
use super::{Execution, transact};
use crate::aggregates::User;
use crate::aggregates::user::Registration;
use crate::auth::{password, require};
use crate::error::CommandError;
use crate::validation::{DisplayName, Email, FieldErrors, Handle, Password, parse_bio};

pub(super) async fn register(
    execution: &Execution<'_>,
    email: &str,
    handle: &str,
    display_name: &str,
    raw_password: &str,
) -> Result<CommandReply, CommandError> {
    let mut errors = FieldErrors::new();
    let email = errors.check("email", Email::parse(email));
    let handle = errors.check("handle", Handle::parse(handle));
    let display_name = errors.check("displayName", DisplayName::parse(display_name));
    let password = errors.check(
        "password",
        Password::parse(
            raw_password,
            email.as_ref().map_or("", Email::as_str),
            handle.as_ref().map_or("", Handle::as_str),
        ),
    );
    let (Some(email), Some(handle), Some(display_name), Some(password)) =
        (email, handle, display_name, password)
    else {
        return Err(CommandError::Invalid(errors));
    };
    // Hashing is slow by design: do it before the transaction opens.
    let password_hash = password::hash(password.expose()).await?;
    let user_id = Uuid::now_v7();

    transact!(execution, retry_on_race: false, |connection| {
        let registration = Registration {
            email: email.clone(),
            handle: handle.clone(),
            display_name: display_name.clone(),
        };
        let written = execution
            .decide_and_append::<User>(connection, None, user_id, None, |user| {
                user.register(registration)
            })
            .await?;
        let mut taken = FieldErrors::new();
        if !claim(connection, ClaimKind::Email, email.as_str(), user_id).await? {
            taken.add("email", "is already registered");
        }
        if !claim(connection, ClaimKind::Handle, handle.as_str(), user_id).await? {
            taken.add("handle", "is already taken");
        }
        if !taken.is_empty() {
            return Err(CommandError::Conflict {
                message: "a user with this email or handle already exists".into(),
                fields: taken,
            });
        }
        sqlx::query!(
            "INSERT INTO auth.credentials (user_id, password_hash) VALUES ($1, $2)",
            user_id,
            password_hash
        )
        .execute(&mut *connection)
        .await?;
        Ok(written)
    })
}

/// Changes the signed-in user's own profile. `bio: Some("")` clears it.
pub(super) async fn update_profile(
    execution: &Execution<'_>,
    display_name: Option<&str>,
    bio: Option<&str>,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    let mut errors = FieldErrors::new();
    let display_name = match display_name {
        Some(name) => errors.check("displayName", DisplayName::parse(name)),
        None => None,
    };
    // Outer option: whether to change the bio; inner: the new bio (none clears it).
    let bio: Option<Option<String>> = match bio {
        Some(bio) => errors.check("bio", parse_bio(bio)),
        None => None,
    };
    if !errors.is_empty() {
        return Err(CommandError::Invalid(errors));
    }
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        execution
            .decide_and_append::<User>(connection, Some(&actor), actor.id, expected_version, |user| {
                user.update_profile(&actor, display_name.clone(), bio.clone())
            })
            .await
    })
}

pub(super) async fn change_role(
    execution: &Execution<'_>,
    user_id: Uuid,
    role: Role,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        execution
            .decide_and_append::<User>(connection, Some(&actor), user_id, expected_version, |user| {
                user.change_role(&actor, role)
            })
            .await
    })
}

pub(super) async fn deactivate(
    execution: &Execution<'_>,
    user_id: Uuid,
    expected_version: Option<i32>,
    retry_on_race: bool,
) -> Result<CommandReply, CommandError> {
    transact!(execution, retry_on_race: retry_on_race, |connection| {
        let actor = require(execution.actor(connection).await?)?;
        let written = execution
            .decide_and_append::<User>(connection, Some(&actor), user_id, expected_version, |user| {
                user.deactivate(&actor)
            })
            .await?;
        // A deactivated account's sessions end with it.
        crate::auth::refresh_tokens::revoke_all(connection, user_id).await?;
        Ok(written)
    })
}
