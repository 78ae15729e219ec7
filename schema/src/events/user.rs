use serde::{Deserialize, Serialize};

use super::event_enum;
use crate::role::Role;

event_enum!(UserEvent {
    Registered(UserRegistered) = "UserRegistered", version 1,
    ProfileUpdated(UserProfileUpdated) = "UserProfileUpdated", version 1,
    RoleChanged(UserRoleChanged) = "UserRoleChanged", version 1,
    Deactivated(UserDeactivated) = "UserDeactivated", version 1,
    Erased(UserErased) = "UserErased", version 1,
});

/// A new account. The password hash is not here: secrets never enter events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    pub email: String,
    pub handle: String,
    pub display_name: String,
    pub role: Role,
}

/// The profile as it is after the change (not a diff), so handlers converge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserProfileUpdated {
    pub display_name: String,
    pub bio: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRoleChanged {
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeactivated {}

/// The person's key was destroyed: what they wrote no longer opens, and
/// every read model forgets them (docs/privacy.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserErased {}
