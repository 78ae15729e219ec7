//! Sealing and opening the personal fields of event payloads.
//!
//! A sealed field's value is replaced, in the stored payload, by
//! `{"sealed": "xchacha20poly1305", "subject": <uuid>, "nonce": <base64>,
//! "data": <base64>}`: the field's JSON value encrypted under the subject's
//! key, with the subject and the field's name as associated data (a sealed
//! value cannot be moved to another person or field unnoticed). Only events
//! stored before sealing existed have plain values; they are read as they are.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Keyring, SubjectKey};

const CIPHER: &str = "xchacha20poly1305";

/// What an erased field reads as, so the event keeps its shape.
#[derive(Clone, Copy)]
enum Blank {
    Text,
    List,
    Null,
}

impl Blank {
    fn value(self) -> Value {
        match self {
            Blank::Text => Value::String(String::new()),
            Blank::List => Value::Array(Vec::new()),
            Blank::Null => Value::Null,
        }
    }
}

/// The personal fields of each event type: everything a person wrote or
/// chose that names or describes them. Ids, timestamps, roles and statuses
/// are not: the log needs them to stay whole after an erasure, and alone
/// they say nothing about anyone. docs/privacy.md explains each choice.
const PERSONAL: &[(&str, &[(&str, Blank)])] = &[
    (
        "UserRegistered",
        &[
            ("email", Blank::Text),
            ("handle", Blank::Text),
            ("displayName", Blank::Text),
        ],
    ),
    (
        "UserProfileUpdated",
        &[("displayName", Blank::Text), ("bio", Blank::Null)],
    ),
    (
        "PostCreated",
        &[
            ("authorHandle", Blank::Text),
            ("slug", Blank::Text),
            ("title", Blank::Text),
            ("body", Blank::Text),
            ("tags", Blank::List),
        ],
    ),
    (
        "PostEdited",
        &[
            ("title", Blank::Text),
            ("body", Blank::Text),
            ("tags", Blank::List),
        ],
    ),
    ("CommentAdded", &[("body", Blank::Text)]),
    ("CommentEdited", &[("body", Blank::Text)]),
];

/// Whether events of this type carry personal values.
pub fn is_personal(event_type: &str) -> bool {
    !personal_fields(event_type).is_empty()
}

fn personal_fields(event_type: &str) -> &'static [(&'static str, Blank)] {
    PERSONAL
        .iter()
        .find(|(name, _)| *name == event_type)
        .map_or(&[], |(_, fields)| fields)
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key is there but the value does not open with it: altered or
    /// corrupt, never silently read as erased.
    #[error("the sealed field {field} does not open with its subject's key (altered or corrupt)")]
    Tampered { field: String },
    #[error("the sealed field {field} is malformed: {reason}")]
    Malformed { field: String, reason: &'static str },
}

/// Whether an opened payload's personal values could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Every personal value is plain now (or the event has none).
    Readable,
    /// Its subject was erased: personal values read as blanks.
    Erased,
}

/// Seals the personal fields of an `event_type` payload for `subject`.
pub fn seal(event_type: &str, payload: &mut Value, subject: Uuid, key: &SubjectKey) {
    let Value::Object(fields) = payload else {
        return;
    };
    for (field, _) in personal_fields(event_type) {
        if let Some(value) = fields.get_mut(*field)
            && !is_sealed(value)
        {
            *value = seal_value(field, value, subject, key);
        }
    }
}

/// One field's value, sealed for `subject`.
pub fn seal_value(field: &str, value: &Value, subject: Uuid, key: &SubjectKey) -> Value {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let plain = serde_json::to_vec(value).expect("JSON values serialize");
    let aad = associated_data(subject, field);
    let data = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .expect("encryption of an in-memory buffer does not fail");
    json!({
        "sealed": CIPHER,
        "subject": subject,
        "nonce": BASE64.encode(nonce),
        "data": BASE64.encode(data),
    })
}

/// The people whose keys open this payload.
pub fn subjects(payload: &Value) -> Vec<Uuid> {
    let Value::Object(fields) = payload else {
        return Vec::new();
    };
    let mut found: Vec<Uuid> = fields
        .values()
        .filter(|value| is_sealed(value))
        .filter_map(|value| value.get("subject")?.as_str()?.parse().ok())
        .collect();
    found.dedup();
    found
}

/// Opens the sealed fields of a payload in place with `keys`. A field whose
/// subject has no key reads as a blank, and the payload as erased.
pub fn open(event_type: &str, payload: &mut Value, keys: &Keyring) -> Result<Opened, SealError> {
    let Value::Object(fields) = payload else {
        return Ok(Opened::Readable);
    };
    let mut opened = Opened::Readable;
    for (field, value) in fields.iter_mut() {
        if !is_sealed(value) {
            continue;
        }
        let malformed = |reason| SealError::Malformed {
            field: field.clone(),
            reason,
        };
        let subject: Uuid = value
            .get("subject")
            .and_then(Value::as_str)
            .and_then(|subject| subject.parse().ok())
            .ok_or_else(|| malformed("no subject"))?;
        let Some(key) = keys.get(&subject) else {
            let blank = personal_fields(event_type)
                .iter()
                .find(|(name, _)| name == field)
                .map_or(Blank::Null, |(_, blank)| *blank);
            *value = blank.value();
            opened = Opened::Erased;
            continue;
        };
        let decode = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .and_then(|text| BASE64.decode(text).ok())
        };
        let nonce: [u8; 24] = decode("nonce")
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or_else(|| malformed("no 24-byte nonce"))?;
        let data = decode("data").ok_or_else(|| malformed("no data"))?;
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        let aad = associated_data(subject, field);
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &data,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Tampered {
                field: field.clone(),
            })?;
        *value = serde_json::from_slice(&plain).map_err(|_| malformed("not JSON inside"))?;
    }
    Ok(opened)
}

fn is_sealed(value: &Value) -> bool {
    value.get("sealed").and_then(Value::as_str) == Some(CIPHER)
}

fn associated_data(subject: Uuid, field: &str) -> Vec<u8> {
    let mut aad = subject.as_bytes().to_vec();
    aad.extend_from_slice(field.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Value {
        json!({"email": "ada@example.com", "handle": "ada", "displayName": "Ada L", "role": "USER"})
    }

    #[test]
    fn sealed_fields_hide_their_values_and_open_with_the_key() {
        let (subject, key) = (Uuid::now_v7(), SubjectKey::generate());
        let mut payload = registered();
        seal("UserRegistered", &mut payload, subject, &key);

        let stored = payload.to_string();
        assert!(!stored.contains("ada@example.com") && !stored.contains("Ada L"));
        assert_eq!(payload["role"], "USER", "what is not personal stays plain");
        assert_eq!(subjects(&payload), vec![subject]);

        let mut keys = Keyring::none();
        keys.insert(subject, key);
        assert_eq!(
            open("UserRegistered", &mut payload, &keys).unwrap(),
            Opened::Readable
        );
        assert_eq!(payload, registered());
    }

    #[test]
    fn without_the_key_the_values_read_as_blanks_of_their_shape() {
        let subject = Uuid::now_v7();
        let mut payload = json!({"authorId": subject, "authorHandle": "ada", "slug": "s",
                                 "title": "T", "body": "B", "tags": ["x"]});
        seal(
            "PostCreated",
            &mut payload,
            subject,
            &SubjectKey::generate(),
        );

        let opened = open("PostCreated", &mut payload, &Keyring::none()).unwrap();

        assert_eq!(opened, Opened::Erased);
        assert_eq!(
            payload,
            json!({"authorId": subject, "authorHandle": "", "slug": "", "title": "", "body": "", "tags": []})
        );
    }

    #[test]
    fn a_value_moved_to_another_field_or_person_does_not_open() {
        let (subject, key) = (Uuid::now_v7(), SubjectKey::generate());
        let mut payload = registered();
        seal("UserRegistered", &mut payload, subject, &key);
        payload["displayName"] = payload["email"].clone();
        let mut keys = Keyring::none();
        keys.insert(subject, key);

        let error = open("UserRegistered", &mut payload, &keys).unwrap_err();

        assert!(matches!(error, SealError::Tampered { field } if field == "displayName"));
    }

    #[test]
    fn plain_payloads_from_before_sealing_are_read_as_they_are() {
        let mut payload = registered();
        assert_eq!(
            open("UserRegistered", &mut payload, &Keyring::none()).unwrap(),
            Opened::Readable
        );
        assert_eq!(payload, registered());
    }
}
