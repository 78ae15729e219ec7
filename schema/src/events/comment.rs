use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event_enum;

event_enum!(CommentEvent {
    Added(CommentAdded) = "CommentAdded", version 1,
    Edited(CommentEdited) = "CommentEdited", version 1,
    Deleted(CommentDeleted) = "CommentDeleted", version 1,
    Erased(CommentErased) = "CommentErased", version 1,
});

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentAdded {
    pub post_id: Uuid,
    pub author_id: Uuid,
    /// Set for a reply; replies are one level deep.
    pub parent_id: Option<Uuid>,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentEdited {
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentDeleted {}

/// Its author was erased: the comment's text is gone for good.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentErased {}
