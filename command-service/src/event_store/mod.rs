//! Appending to and reading streams of `event_store.events`.
//!
//! Optimistic concurrency is the database's `UNIQUE (stream_id, version)`: two
//! writers that decided on the same version cannot both commit; the loser gets
//! `StoreError::Conflict`. There is no global lock on the append path: an
//! append checks what its decision read and writes, in one statement
//! (`append_decision`), and concurrent appends share one transaction
//! (`group_commit`).

mod group_commit;

pub use group_commit::{GroupCommit, append_batch};

use chronicle_schema::events::{DecodeError, StoredEventRow};
use chronicle_schema::privacy::{self, Keyring, SubjectKey};
use chronicle_schema::{DomainEvent, EventMetadata, RecordedEvent, StreamType};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregates::Aggregate;

pub(crate) const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";
const CLAIM_CONSTRAINT: &str = "unique_claims_pkey";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the stream is at version {current}")]
    Conflict { current: i32 },
    /// A unique value was claimed by a transaction that committed meanwhile.
    #[error("a unique value was claimed concurrently")]
    ClaimRace,
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An aggregate rebuilt from its stream, and the version it was rebuilt at.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i32,
}

/// Context stored beside the events that is not part of their meaning.
#[derive(Clone, Debug, Default)]
pub struct AppendContext {
    pub request_id: Option<String>,
}

pub async fn read_stream(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                  schema_version, payload, command_id, correlation_id, causation_id,
                  actor_id, metadata, recorded_at
           FROM event_store.events
           WHERE stream_id = $1
           ORDER BY version"#,
        stream_id
    )
    .fetch_all(&mut *connection)
    .await?;
    let keys = Keyring::for_payloads(&mut *connection, rows.iter().map(|row| &row.payload)).await?;
    rows.into_iter()
        .map(|row| RecordedEvent::open(row, &keys).map_err(StoreError::from))
        .collect()
}

pub async fn load<A: Aggregate>(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    let mut state = A::new(stream_id);
    let mut version = 0;
    for recorded in read_stream(connection, stream_id).await? {
        if let Some(event) = A::own_event(recorded.event) {
            state.apply(&event);
        }
        version = recorded.version;
    }
    Ok(Loaded { state, version })
}

/// A stream a decision read, at the version it read, and the lock the
/// append takes on it first (before checking the version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub stream_id: Uuid,
    pub version: i32,
    pub lock: Lock,
}

/// Locks that order decisions on one stream (see `commands::posts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    None = 0,
    Shared = 1,
    Exclusive = 2,
}

/// A value unique across streams (an email, a handle, a slug), claimed for
/// the appended stream: the first of `candidates` that is free. With `field`,
/// the chosen value is written into the first event's payload there.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Claim {
    pub kind: &'static str,
    pub candidates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl Claim {
    /// This claim with its first candidate alone, when it has others: that
    /// one is free in the common case, and the others would each be sealed,
    /// sent and locked for nothing. Answers `None` when there is nothing to drop.
    pub fn first_candidate(&self) -> Option<Claim> {
        (self.candidates.len() > 1).then(|| Claim {
            candidates: self.candidates[..1].to_vec(),
            ..self.clone()
        })
    }
}

/// An idempotency key's record: who sent it, the key, the request's fingerprint.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub caller: String,
    pub key: String,
    pub fingerprint: String,
    pub ttl_seconds: u64,
}

/// Everything one append checks and writes, in one statement.
#[derive(Clone, Debug)]
pub struct Append {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    /// The version the decision was made on.
    pub base_version: i32,
    pub events: Vec<DomainEvent>,
    pub metadata: EventMetadata,
    pub request_id: Option<String>,
    /// The signed-in actor's session, which must still be open.
    pub session: Option<Uuid>,
    /// The streams the decision read (sorted by stream id, one entry each).
    /// The target is locked exclusively whether listed or not; list it with
    /// `Lock::Exclusive` when it was read, so every lock is taken in order.
    pub reads: Vec<Read>,
    pub claims: Vec<Claim>,
    pub idempotency: Option<Idempotency>,
    /// Whose key seals the events' personal values (and a claimed value the
    /// statement writes into them); `None` stores them as they are.
    pub sealing: Option<Sealing>,
}

/// The person whose values an append carries, and their key.
#[derive(Clone, Debug)]
pub struct Sealing {
    pub subject: Uuid,
    pub key: SubjectKey,
}

/// An append's events as the statement takes them.
struct Encoded {
    event_ids: Vec<Uuid>,
    event_types: Vec<&'static str>,
    schema_versions: Vec<i16>,
    payloads: Vec<serde_json::Value>,
    metadata: serde_json::Value,
    claims: serde_json::Value,
}

impl Append {
    fn encode(&self) -> Encoded {
        let mut metadata = json!({});
        if let Some(traceparent) = &self.metadata.traceparent {
            metadata["traceparent"] = json!(traceparent);
        }
        if let Some(request_id) = &self.request_id {
            metadata["requestId"] = json!(request_id);
        }
        Encoded {
            event_ids: self.events.iter().map(|_| Uuid::now_v7()).collect(),
            event_types: self.events.iter().map(DomainEvent::event_type).collect(),
            schema_versions: self
                .events
                .iter()
                .map(DomainEvent::schema_version)
                .collect(),
            payloads: self.sealed_payloads(),
            metadata,
            claims: self.sealed_claims(),
        }
    }

    fn sealed_payloads(&self) -> Vec<serde_json::Value> {
        let mut payloads: Vec<serde_json::Value> =
            self.events.iter().map(DomainEvent::to_payload).collect();
        if let Some(sealing) = &self.sealing {
            // A value the statement writes (a claimed candidate) is sealed
            // apart, in place: it replaces this one there.
            if let Some(first) = payloads.first_mut() {
                for field in self.claims.iter().filter_map(|claim| claim.field) {
                    if let Some(value) = first.get_mut(field) {
                        *value = privacy::seal_value(field, value, sealing.subject, &sealing.key);
                    }
                }
            }
            for (event, payload) in self.events.iter().zip(&mut payloads) {
                privacy::seal(event.event_type(), payload, sealing.subject, &sealing.key);
            }
        }
        payloads
    }

    /// The claims; one the statement writes into the event carries each
    /// candidate sealed too (`values`), so what is stored is sealed.
    fn sealed_claims(&self) -> serde_json::Value {
        let mut claims = serde_json::to_value(&self.claims).expect("claims serialize");
        if let (Some(sealing), serde_json::Value::Array(claims)) = (&self.sealing, &mut claims) {
            for (claim, json) in self.claims.iter().zip(claims) {
                if let Some(field) = claim.field {
                    let values: Vec<serde_json::Value> = claim
                        .candidates
                        .iter()
                        .map(|candidate| {
                            privacy::seal_value(
                                field,
                                &json!(candidate),
                                sealing.subject,
                                &sealing.key,
                            )
                        })
                        .collect();
                    json["values"] = json!(values);
                }
            }
        }
        claims
    }

    /// Counts what was appended.
    fn record_appended(&self) {
        for event in &self.events {
            metrics::counter!("chronicle_events_appended_total", "event_type" => event.event_type())
                .increment(1);
        }
    }
}

/// What an append answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Appended {
    Appended {
        version: i32,
    },
    /// The idempotency key's first outcome.
    Replayed(StoredOutcome),
    /// The idempotency key was used with another request.
    KeyReused,
    SessionEnded,
    /// A stream read (or the target) moved on since the decision.
    Stale {
        stream_id: Uuid,
        version: i32,
    },
    /// These claim kinds' values are taken.
    Taken(Vec<String>),
}

/// An idempotency key's stored outcome.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredOutcome {
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    pub version: i32,
}

/// Checks what the decision read and appends its events, in one statement
/// (`event_store.append`, schema/migrations 0008, 0010 and 0012): one round
/// trip, whatever the command. See that function for what is checked, and in
/// which order.
pub async fn append_decision(
    executor: impl sqlx::PgExecutor<'_>,
    append: &Append,
) -> Result<Appended, StoreError> {
    let encoded = append.encode();
    let read_streams: Vec<Uuid> = append.reads.iter().map(|read| read.stream_id).collect();
    let read_versions: Vec<i32> = append.reads.iter().map(|read| read.version).collect();
    let read_locks: Vec<i32> = append.reads.iter().map(|read| read.lock as i32).collect();
    let idempotency = append.idempotency.as_ref();
    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!", version, detail, stored
           FROM event_store.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                   $15, $16, $17, $18, $19, $20)"#,
        append.stream_id,
        append.stream_type.as_str(),
        append.base_version,
        &encoded.event_ids,
        &encoded.event_types as &[&str],
        &encoded.schema_versions,
        &encoded.payloads,
        append.metadata.command_id,
        append.metadata.correlation_id,
        append.metadata.actor_id,
        encoded.metadata,
        append.session,
        &read_streams,
        &read_versions,
        &read_locks,
        encoded.claims,
        idempotency.map(|key| key.caller.as_str()),
        idempotency.map(|key| key.key.as_str()),
        idempotency.map(|key| key.fingerprint.as_str()),
        idempotency.map(|key| key.ttl_seconds as f64),
    )
    .fetch_one(executor)
    .await
    .map_err(|error| store_error(error, append.base_version))?;
    outcome(
        append,
        &OutcomeRow {
            outcome: row.outcome,
            version: row.version,
            detail: row.detail,
            stored: row.stored,
        },
    )
}

/// An append statement's failure: a lost race, or the database's.
fn store_error(error: sqlx::Error, base_version: i32) -> StoreError {
    match error {
        sqlx::Error::Database(error) if error.constraint() == Some(STREAM_VERSION_CONSTRAINT) => {
            // Another writer appended the same version between the check and ours.
            StoreError::Conflict {
                current: base_version + 1,
            }
        }
        sqlx::Error::Database(error) if error.constraint() == Some(CLAIM_CONSTRAINT) => {
            StoreError::ClaimRace
        }
        error => error.into(),
    }
}

/// One row of what `event_store.append` answers.
struct OutcomeRow {
    outcome: String,
    version: Option<i32>,
    detail: Option<String>,
    stored: Option<serde_json::Value>,
}

fn outcome(append: &Append, row: &OutcomeRow) -> Result<Appended, StoreError> {
    let outcome = match row.outcome.as_str() {
        "appended" => {
            append.record_appended();
            Appended::Appended {
                version: row.version.unwrap_or(append.base_version),
            }
        }
        "replayed" => Appended::Replayed(
            serde_json::from_value(row.stored.clone().unwrap_or_default()).map_err(|error| {
                StoreError::Malformed(format!("stored idempotent outcome: {error}"))
            })?,
        ),
        "key_reused" => Appended::KeyReused,
        "session_ended" => Appended::SessionEnded,
        "stale" => Appended::Stale {
            stream_id: row
                .detail
                .as_deref()
                .and_then(|id| id.parse().ok())
                .unwrap_or(append.stream_id),
            version: row.version.unwrap_or_default(),
        },
        "taken" => Appended::Taken(
            row.detail
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
        other => return Err(StoreError::Malformed(format!("append outcome {other}"))),
    };
    Ok(outcome)
}

/// Appends `events` after `base_version`, checking nothing else: for
/// operators and tests that write streams directly.
pub async fn append(
    connection: &mut PgConnection,
    stream_id: Uuid,
    stream_type: StreamType,
    base_version: i32,
    events: &[DomainEvent],
    metadata: &EventMetadata,
    context: &AppendContext,
) -> Result<i32, StoreError> {
    let appended = append_decision(
        connection,
        &Append {
            stream_id,
            stream_type,
            base_version,
            events: events.to_vec(),
            metadata: metadata.clone(),
            request_id: context.request_id.clone(),
            session: None,
            reads: Vec::new(),
            claims: Vec::new(),
            idempotency: None,
            sealing: None,
        },
    )
    .await?;
    match appended {
        Appended::Appended { version } => Ok(version),
        Appended::Stale { version, .. } => Err(StoreError::Conflict { current: version }),
        other => Err(StoreError::Malformed(format!(
            "unexpected append outcome {other:?}"
        ))),
    }
}

/// Takes a stream's lock exclusively until the transaction ends, as an
/// append that asks `Lock::Exclusive` does: commands that read the stream
/// with a shared lock (every command of the user it names, as its actor)
/// append before this transaction, or after it and see what it changed.
pub async fn lock_stream(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))",
        stream_id.to_string()
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Takes a stream's lock shared until the transaction ends, as a command
/// that reads the stream with `Lock::Shared` does (its actor's stream).
pub async fn lock_stream_shared(
    connection: &mut PgConnection,
    stream_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1::text, 7))",
        stream_id.to_string()
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The stream's current version (0 when it does not exist).
pub async fn current_version(
    executor: impl sqlx::PgExecutor<'_>,
    stream_id: Uuid,
) -> Result<i32, sqlx::Error> {
    let version = sqlx::query_scalar!(
        r#"SELECT COALESCE(MAX(version), 0) AS "version!" FROM event_store.events WHERE stream_id = $1"#,
        stream_id
    )
    .fetch_one(executor)
    .await?;
    Ok(version)
}
