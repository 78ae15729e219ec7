use serde::{Deserialize, Serialize};

/// A user's role. Permissions are checked on the server against the role the
/// event store says the user has now, never against a role claimed in a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Moderator => "MODERATOR",
            Role::Admin => "ADMIN",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "USER" => Some(Role::User),
            "MODERATOR" => Some(Role::Moderator),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Moderators and admins may moderate other people's content.
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Moderator | Role::Admin)
    }
}

crate::sql_text::text_enum!(Role);
