//! Sealing and opening the personal fields of event payloads.
//!
//! An event's personal fields leave its stored payload and travel together
//! in one envelope under `"personal"`: `{"sealed": "xchacha20poly1305",
//! "subject": <uuid>, "nonce": <base64>, "data": <base64>}`, the fields as
//! one JSON object, LZ4-compressed (ciphertext does not compress, and the
//! store's own compression then finds nothing to do), then encrypted under
//! the subject's key with the subject and the event type as associated data
//! (an envelope cannot be moved to another person or event unnoticed).
//!
//! A value the store chooses as it appends (the free slug candidate) is
//! sealed apart, in place, by `seal_value`: the same envelope with the field's
//! name as associated data. Events stored before sealing existed have plain
//! values; they are read as they are.

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
    ("PostImageAdded", &[("alt", Blank::Text)]),
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

/// Where an event's sealed fields travel in its payload.
const ENVELOPE: &str = "personal";

/// Seals the personal fields of an `event_type` payload for `subject` (a
/// field already sealed in place stays as it is).
pub fn seal(event_type: &str, payload: &mut Value, subject: Uuid, key: &SubjectKey) {
    let Value::Object(fields) = payload else {
        return;
    };
    let mut personal = serde_json::Map::new();
    for (field, _) in personal_fields(event_type) {
        if let Some(value) = fields.get(*field)
            && !is_sealed(value)
        {
            personal.insert((*field).to_owned(), fields.remove(*field).expect("present"));
        }
    }
    if personal.is_empty() {
        return;
    }
    let plain = serde_json::to_vec(&Value::Object(personal)).expect("JSON values serialize");
    let envelope = encrypt(
        &lz4_flex::compress_prepend_size(&plain),
        subject,
        &associated_data(subject, event_type),
        key,
    );
    fields.insert(ENVELOPE.to_owned(), envelope);
}

/// One field's value, sealed in place for `subject`.
pub fn seal_value(field: &str, value: &Value, subject: Uuid, key: &SubjectKey) -> Value {
    let plain = serde_json::to_vec(value).expect("JSON values serialize");
    encrypt(&plain, subject, &associated_data(subject, field), key)
}

fn encrypt(plain: &[u8], subject: Uuid, aad: &[u8], key: &SubjectKey) -> Value {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let data = cipher
        .encrypt(&nonce, Payload { msg: plain, aad })
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
    found.sort_unstable();
    found.dedup();
    found
}

/// Opens the sealed fields of a payload in place with `keys`. Where the
/// subject has no key, every personal field reads as a blank of its shape,
/// and the payload as erased.
pub fn open(event_type: &str, payload: &mut Value, keys: &Keyring) -> Result<Opened, SealError> {
    let Value::Object(fields) = payload else {
        return Ok(Opened::Readable);
    };
    let mut opened = Opened::Readable;
    let sealed: Vec<String> = fields
        .iter()
        .filter(|(_, value)| is_sealed(value))
        .map(|(name, _)| name.clone())
        .collect();
    for name in sealed {
        let envelope = fields.remove(&name).expect("present");
        let subject = subject_of(&name, &envelope)?;
        let Some(key) = keys.get(&subject) else {
            opened = Opened::Erased;
            continue;
        };
        if name == ENVELOPE {
            let packed = decrypt(&name, &envelope, &associated_data(subject, event_type), key)?;
            let plain = decompress(&packed).ok_or_else(|| SealError::Malformed {
                field: name.clone(),
                reason: "not LZ4 inside",
            })?;
            let Ok(Value::Object(personal)) = serde_json::from_slice(&plain) else {
                return Err(SealError::Malformed {
                    field: name,
                    reason: "not a JSON object inside",
                });
            };
            fields.extend(personal);
        } else {
            let plain = decrypt(&name, &envelope, &associated_data(subject, &name), key)?;
            let value = serde_json::from_slice(&plain).map_err(|_| SealError::Malformed {
                field: name.clone(),
                reason: "not JSON inside",
            })?;
            fields.insert(name, value);
        }
    }
    if opened == Opened::Erased {
        // Every personal field blank, whichever envelope it was in.
        for (field, blank) in personal_fields(event_type) {
            fields.insert((*field).to_owned(), blank.value());
        }
    }
    Ok(opened)
}

/// LZ4 expands at most 255 times: a size prefix claiming more is not LZ4
/// (another format's magic number read as a size once asked for 4 GiB,
/// zeroed, per event), and is refused before anything is allocated.
const LZ4_MAX_RATIO: usize = 255;

fn decompress(packed: &[u8]) -> Option<Vec<u8>> {
    let prefix: [u8; 4] = packed.get(..4)?.try_into().ok()?;
    let size = u32::from_le_bytes(prefix) as usize;
    if size > (packed.len() - 4).saturating_mul(LZ4_MAX_RATIO) {
        return None;
    }
    lz4_flex::decompress_size_prepended(packed).ok()
}

fn subject_of(name: &str, envelope: &Value) -> Result<Uuid, SealError> {
    envelope
        .get("subject")
        .and_then(Value::as_str)
        .and_then(|subject| subject.parse().ok())
        .ok_or_else(|| SealError::Malformed {
            field: name.to_owned(),
            reason: "no subject",
        })
}

fn decrypt(
    name: &str,
    envelope: &Value,
    aad: &[u8],
    key: &SubjectKey,
) -> Result<Vec<u8>, SealError> {
    let malformed = |reason| SealError::Malformed {
        field: name.to_owned(),
        reason,
    };
    let decode = |part: &str| {
        envelope
            .get(part)
            .and_then(Value::as_str)
            .and_then(|text| BASE64.decode(text).ok())
    };
    let nonce: [u8; 24] = decode("nonce")
        .and_then(|nonce| nonce.try_into().ok())
        .ok_or_else(|| malformed("no 24-byte nonce"))?;
    let data = decode("data").ok_or_else(|| malformed("no data"))?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: &data, aad })
        .map_err(|_| SealError::Tampered {
            field: name.to_owned(),
        })
}

fn is_sealed(value: &Value) -> bool {
    value.get("sealed").and_then(Value::as_str) == Some(CIPHER)
}

/// The subject's 16 bytes, then what the envelope seals (an event type, or
/// a field's name).
fn associated_data(subject: Uuid, sealed: &str) -> Vec<u8> {
    let mut aad = subject.as_bytes().to_vec();
    aad.extend_from_slice(sealed.as_bytes());
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
        assert!(
            payload.get("email").is_none(),
            "personal fields travel sealed together"
        );
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
    fn an_envelope_moved_to_another_event_or_field_does_not_open() {
        let (subject, key) = (Uuid::now_v7(), SubjectKey::generate());
        let mut keys = Keyring::none();
        keys.insert(subject, key.clone());
        let mut payload = registered();
        seal("UserRegistered", &mut payload, subject, &key);

        let error = open("UserProfileUpdated", &mut payload.clone(), &keys).unwrap_err();
        assert!(matches!(error, SealError::Tampered { field } if field == "personal"));

        let mut moved = json!({"slug": seal_value("title", &json!("a"), subject, &key)});
        let error = open("PostCreated", &mut moved, &keys).unwrap_err();
        assert!(matches!(error, SealError::Tampered { field } if field == "slug"));
    }

    #[test]
    fn a_value_the_store_chooses_is_sealed_apart_and_opens_with_the_rest() {
        let (subject, key) = (Uuid::now_v7(), SubjectKey::generate());
        let mut payload = json!({"authorId": subject, "authorHandle": "ada", "slug": "first",
                                 "title": "T", "body": "B", "tags": []});
        payload["slug"] = seal_value("slug", &json!("first"), subject, &key);
        seal("PostCreated", &mut payload, subject, &key);
        // The store writes the candidate it claimed.
        payload["slug"] = seal_value("slug", &json!("first-2"), subject, &key);
        let mut keys = Keyring::none();
        keys.insert(subject, key);

        open("PostCreated", &mut payload, &keys).unwrap();

        assert_eq!(payload["slug"], "first-2");
        assert_eq!(payload["title"], "T");
    }

    #[test]
    fn sealed_text_is_compressed_first() {
        let (subject, key) = (Uuid::now_v7(), SubjectKey::generate());
        let body = "the same words again and again, ".repeat(60);
        let mut payload = json!({"body": body});
        seal("CommentEdited", &mut payload, subject, &key);
        assert!(payload.to_string().len() < body.len() / 2, "{payload}");
    }

    #[test]
    fn an_envelope_whose_size_prefix_is_not_lz4_is_refused_without_allocating_it() {
        // The zstd magic number where LZ4's size prefix belongs: 4 GiB.
        let mut packed = 0xFD2F_B528_u32.to_le_bytes().to_vec();
        packed.extend_from_slice(b"not lz4 at all");
        assert_eq!(decompress(&packed), None);
        assert_eq!(decompress(&[1, 0]), None);
        let text = b"a sentence, a sentence, a sentence".repeat(100);
        assert_eq!(
            decompress(&lz4_flex::compress_prepend_size(&text)).as_deref(),
            Some(&text[..])
        );
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
