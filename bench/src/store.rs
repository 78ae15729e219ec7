//! Writing a generated history into the event store, in bulk.

use std::collections::HashMap;

use chronicle_schema::DomainEvent;
use chronicle_schema::events::{CommentEvent, PostEvent};
use chronicle_schema::privacy::{self, SubjectKey};
use sqlx::PgPool;
use uuid::Uuid;

use crate::generator::{Generated, History};

const CHUNK: usize = 5_000;
/// Every seeded user can sign in with this password.
pub const SEEDED_PASSWORD: &str = "chronicle demo password";

/// Appends the history (in its order), its personal values sealed for
/// their people as the command-service seals them, claims its unique values,
/// and gives every user the demo password. Answers the number of events written.
pub async fn write(
    pool: &PgPool,
    history: &History,
    mut progress: impl FnMut(usize),
) -> Result<usize, sqlx::Error> {
    let mut sealing = Sealing::new(&history.users);
    for chunk in history.users.chunks(CHUNK) {
        sqlx::query(
            r#"INSERT INTO privacy.subject_keys (subject_id, key)
               SELECT * FROM UNNEST($1::uuid[], $2::bytea[]) ON CONFLICT DO NOTHING"#,
        )
        .bind(chunk)
        .bind(
            chunk
                .iter()
                .map(|user| sealing.keys[user].as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await?;
    }
    let mut written = 0;
    for chunk in history.events.chunks(CHUNK) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            r#"INSERT INTO event_store.events
                   (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                    command_id, correlation_id, causation_id, actor_id, recorded_at)
               SELECT event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                      event_id, event_id, event_id, actor_id, recorded_at
               FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::text[], $6::int2[],
                           $7::jsonb[], $8::uuid[], $9::timestamptz[])
                    AS new(event_id, stream_id, stream_type, version, event_type, schema_version,
                           payload, actor_id, recorded_at)
               ORDER BY recorded_at"#,
        )
        .bind(&ids)
        .bind(chunk.iter().map(|event| event.stream_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.stream_type.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.version).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.event.event_type()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.event.schema_version()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| sealing.payload(event)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.actor_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|event| event.at).collect::<Vec<_>>())
        .execute(pool)
        .await?;
        written += chunk.len();
        progress(written);
    }
    for chunk in history.claims.chunks(CHUNK) {
        sqlx::query(
            r#"INSERT INTO event_store.unique_claims (kind, value, stream_id)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[]) ON CONFLICT DO NOTHING"#,
        )
        .bind(chunk.iter().map(|claim| claim.kind).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|claim| claim.value.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            chunk
                .iter()
                .map(|claim| claim.stream_id)
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await?;
    }
    // One hash for all: hashing is slow by design.
    let hash = command_service::auth::password::hash(SEEDED_PASSWORD)
        .await
        .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
    for chunk in history.users.chunks(CHUNK) {
        sqlx::query(
            r#"INSERT INTO auth.credentials (user_id, password_hash)
               SELECT id, $2 FROM UNNEST($1::uuid[]) AS users(id) ON CONFLICT DO NOTHING"#,
        )
        .bind(chunk)
        .bind(&hash)
        .execute(pool)
        .await?;
    }
    Ok(written)
}

/// Everyone's key, and who each stream's personal values belong to.
struct Sealing {
    keys: HashMap<Uuid, SubjectKey>,
    authors: HashMap<Uuid, Uuid>,
}

impl Sealing {
    fn new(users: &[Uuid]) -> Sealing {
        Sealing {
            keys: users
                .iter()
                .map(|user| (*user, SubjectKey::generate()))
                .collect(),
            authors: HashMap::new(),
        }
    }

    /// The event's payload, sealed for its author (events come in order:
    /// a stream's creation before its edits).
    fn payload(&mut self, generated: &Generated) -> serde_json::Value {
        let subject = match &generated.event {
            DomainEvent::User(_) => Some(generated.stream_id),
            DomainEvent::Post(PostEvent::Created(created)) => Some(created.author_id),
            DomainEvent::Comment(CommentEvent::Added(added)) => Some(added.author_id),
            _ => self.authors.get(&generated.stream_id).copied(),
        };
        let mut payload = generated.event.to_payload();
        if let Some(subject) = subject {
            self.authors.insert(generated.stream_id, subject);
            if let Some(key) = self.keys.get(&subject) {
                privacy::seal(generated.event.event_type(), &mut payload, subject, key);
            }
        }
        payload
    }
}
