//! A user account: registration, profile, role and deactivation.

use chronicle_schema::events::{
    UserDeactivated, UserEvent, UserProfileUpdated, UserRegistered, UserRoleChanged,
};
use chronicle_schema::{DomainEvent, Role, StreamType};
use uuid::Uuid;

use super::{Actor, Aggregate, Decision, Rejection};
use crate::validation::{DisplayName, Email, Handle};

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: Uuid,
    pub registered: bool,
    pub email: String,
    pub handle: String,
    pub display_name: String,
    pub bio: Option<String>,
    pub role: Role,
    pub active: bool,
}

/// A registration whose fields have been parsed.
pub struct Registration {
    pub email: Email,
    pub handle: Handle,
    pub display_name: DisplayName,
}

impl Aggregate for User {
    const STREAM_TYPE: StreamType = StreamType::User;
    type Event = UserEvent;

    fn new(id: Uuid) -> Self {
        User {
            id,
            registered: false,
            email: String::new(),
            handle: String::new(),
            display_name: String::new(),
            bio: None,
            role: Role::User,
            active: false,
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Registered(registered) => {
                self.registered = true;
                self.active = true;
                self.email.clone_from(&registered.email);
                self.handle.clone_from(&registered.handle);
                self.display_name.clone_from(&registered.display_name);
                self.role = registered.role;
            }
            UserEvent::ProfileUpdated(profile) => {
                self.display_name.clone_from(&profile.display_name);
                self.bio.clone_from(&profile.bio);
            }
            UserEvent::RoleChanged(changed) => self.role = changed.role,
            UserEvent::Deactivated(_) => self.active = false,
            // Gone for good: their token no longer names anyone.
            UserEvent::Erased(_) => *self = User::new(self.id),
        }
    }

    fn own_event(event: DomainEvent) -> Option<UserEvent> {
        match event {
            DomainEvent::User(event) => Some(event),
            _ => None,
        }
    }

    fn exists(&self) -> bool {
        self.registered
    }
}

impl User {
    pub fn register(&self, registration: Registration) -> Decision<UserEvent> {
        if self.registered {
            return Err(Rejection::Conflict("this user is already registered"));
        }
        Ok(vec![
            UserRegistered {
                email: registration.email.as_str().to_owned(),
                handle: registration.handle.as_str().to_owned(),
                display_name: registration.display_name.into_inner(),
                role: Role::User,
            }
            .into(),
        ])
    }

    /// Changes display name and/or bio (`Some(None)` clears the bio).
    pub fn update_profile(
        &self,
        actor: &Actor,
        display_name: Option<DisplayName>,
        bio: Option<Option<String>>,
    ) -> Decision<UserEvent> {
        self.ensure_registered()?;
        if actor.id != self.id && actor.role != Role::Admin {
            return Err(Rejection::Forbidden(
                "only the user themself or an admin may edit a profile",
            ));
        }
        let display_name =
            display_name.map_or_else(|| self.display_name.clone(), DisplayName::into_inner);
        let bio = bio.unwrap_or_else(|| self.bio.clone());
        if display_name == self.display_name && bio == self.bio {
            return Ok(vec![]);
        }
        Ok(vec![UserProfileUpdated { display_name, bio }.into()])
    }

    pub fn change_role(&self, actor: &Actor, role: Role) -> Decision<UserEvent> {
        if actor.role != Role::Admin {
            return Err(Rejection::Forbidden("only admins may change roles"));
        }
        self.ensure_registered()?;
        if role == self.role {
            return Ok(vec![]);
        }
        Ok(vec![UserRoleChanged { role }.into()])
    }

    pub fn deactivate(&self, actor: &Actor) -> Decision<UserEvent> {
        if actor.id != self.id && actor.role != Role::Admin {
            return Err(Rejection::Forbidden(
                "only the user themself or an admin may deactivate an account",
            ));
        }
        self.ensure_registered()?;
        if !self.active {
            return Ok(vec![]);
        }
        Ok(vec![UserDeactivated {}.into()])
    }

    fn ensure_registered(&self) -> Result<(), Rejection> {
        if self.registered {
            Ok(())
        } else {
            Err(Rejection::NotFound("user"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: &[UserEvent]) -> User {
        let mut user = User::new(Uuid::from_u128(1));
        for event in events {
            user.apply(event);
        }
        user
    }

    fn registered(role: Role) -> UserEvent {
        UserRegistered {
            email: "ada@example.com".into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            role,
        }
        .into()
    }

    fn registration() -> Registration {
        Registration {
            email: Email::parse("ada@example.com").unwrap(),
            handle: Handle::parse("ada").unwrap(),
            display_name: DisplayName::parse("Ada Lovelace").unwrap(),
        }
    }

    fn myself() -> Actor {
        Actor {
            id: Uuid::from_u128(1),
            role: Role::User,
            handle: "ada".into(),
        }
    }

    fn someone(role: Role) -> Actor {
        Actor {
            id: Uuid::from_u128(2),
            role,
            handle: "other".into(),
        }
    }

    #[test]
    fn registering_a_new_user_records_it_with_the_user_role() {
        let events = given(&[]).register(registration()).unwrap();
        assert_eq!(
            events,
            vec![UserEvent::Registered(UserRegistered {
                email: "ada@example.com".into(),
                handle: "ada".into(),
                display_name: "Ada Lovelace".into(),
                role: Role::User,
            })]
        );
    }

    #[test]
    fn registering_twice_is_a_conflict() {
        let result = given(&[registered(Role::User)]).register(registration());
        assert!(matches!(result, Err(Rejection::Conflict(_))));
    }

    #[test]
    fn a_user_edits_their_own_profile_and_clears_the_bio() {
        let user = given(&[
            registered(Role::User),
            UserProfileUpdated {
                display_name: "Ada".into(),
                bio: Some("hi".into()),
            }
            .into(),
        ]);
        let events = user
            .update_profile(
                &myself(),
                Some(DisplayName::parse("Countess").unwrap()),
                Some(None),
            )
            .unwrap();
        assert_eq!(
            events,
            vec![UserEvent::ProfileUpdated(UserProfileUpdated {
                display_name: "Countess".into(),
                bio: None,
            })]
        );
    }

    #[test]
    fn an_unchanged_profile_appends_nothing() {
        let user = given(&[registered(Role::User)]);
        let events = user
            .update_profile(&myself(), Some(DisplayName::parse("Ada").unwrap()), None)
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn only_the_user_or_an_admin_edits_a_profile() {
        let user = given(&[registered(Role::User)]);
        let name = || Some(DisplayName::parse("X").unwrap());
        assert!(matches!(
            user.update_profile(&someone(Role::User), name(), None),
            Err(Rejection::Forbidden(_))
        ));
        assert!(matches!(
            user.update_profile(&someone(Role::Moderator), name(), None),
            Err(Rejection::Forbidden(_))
        ));
        assert!(
            user.update_profile(&someone(Role::Admin), name(), None)
                .is_ok()
        );
    }

    #[test]
    fn only_admins_change_roles() {
        let user = given(&[registered(Role::User)]);
        assert!(matches!(
            user.change_role(&myself(), Role::Admin),
            Err(Rejection::Forbidden(_))
        ));
        assert!(matches!(
            user.change_role(&someone(Role::Moderator), Role::Moderator),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(
            user.change_role(&someone(Role::Admin), Role::Moderator)
                .unwrap(),
            vec![UserEvent::RoleChanged(UserRoleChanged {
                role: Role::Moderator
            })]
        );
    }

    #[test]
    fn changing_an_unknown_users_role_is_not_found() {
        assert_eq!(
            given(&[]).change_role(&someone(Role::Admin), Role::Moderator),
            Err(Rejection::NotFound("user"))
        );
    }

    #[test]
    fn deactivation_is_for_self_or_admin_and_happens_once() {
        let user = given(&[registered(Role::User)]);
        assert!(matches!(
            user.deactivate(&someone(Role::Moderator)),
            Err(Rejection::Forbidden(_))
        ));
        assert_eq!(user.deactivate(&myself()).unwrap().len(), 1);
        assert_eq!(user.deactivate(&someone(Role::Admin)).unwrap().len(), 1);
        let deactivated = given(&[registered(Role::User), UserDeactivated {}.into()]);
        assert!(!deactivated.active);
        assert!(deactivated.deactivate(&myself()).unwrap().is_empty());
    }
}
