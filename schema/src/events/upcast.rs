//! Upcasters: stored payloads of older schema versions, rewritten step by step
//! into the current version when read. Stored events are never rewritten.

use serde_json::Value;

use super::DecodeError;

/// Returns the payload at the newest schema version this build knows for its type.
pub(crate) fn to_current(
    event_type: &str,
    mut schema_version: i16,
    mut payload: Value,
) -> Result<(i16, Value), DecodeError> {
    // Each arm lifts one version; the loop lifts as many as needed.
    loop {
        match (event_type, schema_version) {
            ("PostCreated", 1) => {
                payload = post_created_v1_to_v2(payload);
                schema_version = 2;
            }
            _ => return Ok((schema_version, payload)),
        }
    }
}

/// v1 of PostCreated predates tags: a post created then had none.
fn post_created_v1_to_v2(mut payload: Value) -> Value {
    if let Value::Object(fields) = &mut payload {
        fields
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use crate::events::{DomainEvent, PostCreated, PostEvent};

    #[test]
    fn a_stored_v1_post_created_is_read_as_the_current_type_with_no_tags() {
        let author_id = Uuid::now_v7();
        let stored_v1 = json!({
            "authorId": author_id,
            "authorHandle": "ada",
            "slug": "hello",
            "title": "Hello",
            "body": "First post",
        });

        let event = DomainEvent::decode("PostCreated", 1, stored_v1).unwrap();

        assert_eq!(
            event,
            DomainEvent::Post(PostEvent::Created(PostCreated {
                author_id,
                author_handle: "ada".into(),
                slug: "hello".into(),
                title: "Hello".into(),
                body: "First post".into(),
                tags: vec![],
            }))
        );
        assert_eq!(event.schema_version(), 2);
    }

    #[test]
    fn a_payload_from_a_newer_build_is_refused_not_misread() {
        let error = DomainEvent::decode("UserDeactivated", 9, json!({})).unwrap_err();
        assert!(error.to_string().contains("newer than this build knows"));
    }

    #[test]
    fn an_unknown_event_type_is_an_error() {
        let error = DomainEvent::decode("PostLiked", 1, json!({})).unwrap_err();
        assert!(matches!(error, super::DecodeError::UnknownType(_)));
    }
}
