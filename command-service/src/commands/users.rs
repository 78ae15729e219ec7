//! User commands: registration, profile, role, deactivation.

use chronicle_schema::Role;
use uuid::Uuid;

use super::{AlsoWrite, Attempt, Decided, Handle};
use crate::aggregates::User;
use crate::aggregates::user::Registration;
use crate::auth::password;
use crate::error::CommandError;
use crate::event_store::Claim;
use crate::validation::{
    DisplayName, Email, FieldErrors, Handle as UserHandle, Password, parse_bio,
};

pub(super) struct Register {
    email: Email,
    handle: UserHandle,
    display_name: DisplayName,
    password_hash: String,
    user_id: Uuid,
}

impl Register {
    /// Checks every field, then hashes the password (slow by design), before
    /// anything is read or written.
    pub async fn parse(
        email: &str,
        handle: &str,
        display_name: &str,
        raw_password: &str,
    ) -> Result<Register, CommandError> {
        let mut errors = FieldErrors::new();
        let email = errors.check("email", Email::parse(email));
        let handle = errors.check("handle", UserHandle::parse(handle));
        let display_name = errors.check("displayName", DisplayName::parse(display_name));
        let password = errors.check(
            "password",
            Password::parse(
                raw_password,
                email.as_ref().map_or("", Email::as_str),
                handle.as_ref().map_or("", UserHandle::as_str),
            ),
        );
        let (Some(email), Some(handle), Some(display_name), Some(password)) =
            (email, handle, display_name, password)
        else {
            return Err(CommandError::Invalid(errors));
        };
        Ok(Register {
            password_hash: password::hash(password.expose()).await?,
            email,
            handle,
            display_name,
            user_id: Uuid::now_v7(),
        })
    }
}

impl Handle for Register {
    async fn decide(&self, _attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let registration = Registration {
            email: self.email.clone(),
            handle: self.handle.clone(),
            display_name: self.display_name.clone(),
        };
        let events =
            <User as crate::aggregates::Aggregate>::new(self.user_id).register(registration)?;
        let mut decided = Decided::new::<User>(self.user_id, 0, events);
        decided.claims = vec![
            Claim {
                kind: "email",
                candidates: vec![self.email.as_str().to_owned()],
                field: None,
            },
            Claim {
                kind: "handle",
                candidates: vec![self.handle.as_str().to_owned()],
                field: None,
            },
        ];
        decided.also = Some(AlsoWrite::Credentials {
            user_id: self.user_id,
            password_hash: self.password_hash.clone(),
        });
        Ok(decided)
    }
}

/// Changes the signed-in user's own profile. `bio: Some("")` clears it.
pub(super) struct UpdateProfile {
    display_name: Option<DisplayName>,
    /// Whether to change the bio, and to what (none clears it).
    bio: Option<Option<String>>,
    expected_version: Option<i32>,
}

impl UpdateProfile {
    pub fn parse(
        display_name: Option<&str>,
        bio: Option<&str>,
        expected_version: Option<i32>,
    ) -> Result<UpdateProfile, CommandError> {
        let mut errors = FieldErrors::new();
        let display_name = match display_name {
            Some(name) => errors.check("displayName", DisplayName::parse(name)),
            None => None,
        };
        let bio: Option<Option<String>> = match bio {
            Some(bio) => errors.check("bio", parse_bio(bio)),
            None => None,
        };
        if !errors.is_empty() {
            return Err(CommandError::Invalid(errors));
        }
        Ok(UpdateProfile {
            display_name,
            bio,
            expected_version,
        })
    }
}

impl Handle for UpdateProfile {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let user = attempt
            .target::<User>(actor.id, self.expected_version)
            .await?;
        let events =
            user.state
                .update_profile(&actor, self.display_name.clone(), self.bio.clone())?;
        Ok(Decided::new::<User>(actor.id, user.version, events))
    }
}

/// Takes the user's lock exclusively: a command of theirs racing it
/// appends before it, or is decided again on the new role.
pub(super) struct ChangeRole {
    pub user_id: Uuid,
    pub role: Role,
    pub expected_version: Option<i32>,
}

impl Handle for ChangeRole {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let user = attempt
            .target::<User>(self.user_id, self.expected_version)
            .await?;
        let events = user.state.change_role(&actor, self.role)?;
        Ok(Decided::new::<User>(self.user_id, user.version, events))
    }
}

pub(super) struct Deactivate {
    pub user_id: Uuid,
    pub expected_version: Option<i32>,
}

impl Handle for Deactivate {
    fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }

    async fn decide(&self, attempt: &mut Attempt<'_>) -> Result<Decided, CommandError> {
        let actor = attempt.require_actor().await?;
        let user = attempt
            .target::<User>(self.user_id, self.expected_version)
            .await?;
        let events = user.state.deactivate(&actor)?;
        let mut decided = Decided::new::<User>(self.user_id, user.version, events);
        // A deactivated account's sessions end with it.
        decided.also = Some(AlsoWrite::EndSessions {
            user_id: self.user_id,
        });
        Ok(decided)
    }
}
