//! The command API's wire format: what query-service (or any trusted client)
//! sends to command-service, and what it answers.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::consistency::ConsistencyToken;
use crate::role::Role;

/// One command and the context it travels with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEnvelope {
    /// Identifies this attempt; becomes the causation id of the events.
    pub command_id: Uuid,
    /// Ties together everything caused by one user action.
    pub correlation_id: Uuid,
    /// A retried command with the same key (per caller) returns the first outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub command: Command,
}

/// A password or token that must never be printed, logged or echoed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Command {
    RegisterUser {
        email: String,
        handle: String,
        display_name: String,
        password: Secret,
    },
    Login {
        email: String,
        password: Secret,
    },
    RefreshToken {
        refresh_token: Secret,
    },
    Logout {
        refresh_token: Secret,
    },
    UpdateProfile {
        display_name: Option<String>,
        /// `Some("")` clears the bio; `None` leaves it.
        bio: Option<String>,
        expected_version: Option<i32>,
    },
    ChangeRole {
        user_id: Uuid,
        role: Role,
        expected_version: Option<i32>,
    },
    DeactivateUser {
        user_id: Uuid,
        expected_version: Option<i32>,
    },
    CreatePost {
        title: String,
        body: String,
        tags: Option<Vec<String>>,
        slug: Option<String>,
    },
    EditPost {
        post_id: Uuid,
        title: Option<String>,
        body: Option<String>,
        tags: Option<Vec<String>>,
        expected_version: Option<i32>,
    },
    PublishPost {
        post_id: Uuid,
        expected_version: Option<i32>,
    },
    UnpublishPost {
        post_id: Uuid,
        expected_version: Option<i32>,
    },
    DeletePost {
        post_id: Uuid,
        expected_version: Option<i32>,
    },
    AddComment {
        post_id: Uuid,
        body: String,
        parent_id: Option<Uuid>,
    },
    EditComment {
        comment_id: Uuid,
        body: String,
        expected_version: Option<i32>,
    },
    DeleteComment {
        comment_id: Uuid,
        expected_version: Option<i32>,
    },
    /// Crypto-shreds a person: the person themself, or an admin.
    EraseUser {
        user_id: Uuid,
    },
    /// An uploaded image, attached to its post. Only the upload endpoint
    /// sends it, with what it read from the bytes it stored.
    AttachImage {
        post_id: Uuid,
        image: crate::images::UploadedImage,
        alt: String,
    },
    /// The image worker's outcome for an image (no user acts).
    RecordImageOutcome {
        post_id: Uuid,
        image_id: Uuid,
        outcome: crate::images::ImageOutcome,
    },
}

impl Command {
    /// The command with every secret blanked: all of it that may be
    /// fingerprinted, stored or compared (an idempotency record keeps no
    /// password, not even hashed). Exhaustive on purpose: a new command
    /// decides here whether it carries a secret.
    pub fn without_secrets(&self) -> Command {
        let mut command = self.clone();
        match &mut command {
            Command::RegisterUser { password, .. } | Command::Login { password, .. } => {
                *password = Secret::new("");
            }
            Command::RefreshToken { refresh_token } | Command::Logout { refresh_token } => {
                *refresh_token = Secret::new("");
            }
            Command::UpdateProfile { .. }
            | Command::ChangeRole { .. }
            | Command::DeactivateUser { .. }
            | Command::CreatePost { .. }
            | Command::EditPost { .. }
            | Command::PublishPost { .. }
            | Command::UnpublishPost { .. }
            | Command::DeletePost { .. }
            | Command::AddComment { .. }
            | Command::EditComment { .. }
            | Command::DeleteComment { .. }
            | Command::EraseUser { .. }
            | Command::AttachImage { .. }
            | Command::RecordImageOutcome { .. } => {}
        }
        command
    }

    /// The command's name, for logs and metrics (never its content).
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterUser { .. } => "RegisterUser",
            Command::Login { .. } => "Login",
            Command::RefreshToken { .. } => "RefreshToken",
            Command::Logout { .. } => "Logout",
            Command::UpdateProfile { .. } => "UpdateProfile",
            Command::ChangeRole { .. } => "ChangeRole",
            Command::DeactivateUser { .. } => "DeactivateUser",
            Command::CreatePost { .. } => "CreatePost",
            Command::EditPost { .. } => "EditPost",
            Command::PublishPost { .. } => "PublishPost",
            Command::UnpublishPost { .. } => "UnpublishPost",
            Command::DeletePost { .. } => "DeletePost",
            Command::AddComment { .. } => "AddComment",
            Command::EditComment { .. } => "EditComment",
            Command::DeleteComment { .. } => "DeleteComment",
            Command::EraseUser { .. } => "EraseUser",
            Command::AttachImage { .. } => "AttachImage",
            Command::RecordImageOutcome { .. } => "RecordImageOutcome",
        }
    }
}

/// What a successful command answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandReply {
    /// The stream the command wrote to (or, for auth commands, the user).
    pub stream_id: Uuid,
    /// The stream's version after the command.
    pub version: i32,
    /// Hand this to a query to read this write back.
    pub consistency_token: ConsistencyToken,
    /// Set by the commands that sign a user in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// Tokens issued by `Login` and `RefreshToken`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub token_type: String,
    pub expires_in: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let command = Command::Login {
            email: "ada@example.com".into(),
            password: Secret::new("correct horse battery staple"),
        };
        let printed = format!("{command:?}");
        assert!(!printed.contains("correct horse"), "{printed}");
        assert!(printed.contains("Secret(***)"));
    }

    #[test]
    fn without_secrets_keeps_everything_but_the_secret() {
        let command = Command::RegisterUser {
            email: "ada@example.com".into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            password: Secret::new("correct horse battery staple"),
        };
        let json = serde_json::to_string(&command.without_secrets()).unwrap();
        assert!(!json.contains("correct horse"), "{json}");
        assert!(json.contains("ada@example.com"));
    }

    #[test]
    fn commands_are_tagged_by_type_with_camel_case_fields() {
        let json = serde_json::json!({
            "type": "RegisterUser",
            "email": "ada@example.com",
            "handle": "ada",
            "displayName": "Ada",
            "password": "pw",
        });
        let command: Command = serde_json::from_value(json).unwrap();
        assert_eq!(command.name(), "RegisterUser");
    }
}
