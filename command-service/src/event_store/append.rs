//! The append statement: what one command's decision checks and writes,
//! and `event_store.append_set`, which checks and writes many of them in
//! one statement (one command's alone, or a group commit's).

use chronicle_schema::privacy::{self, SubjectKey};
use chronicle_schema::{DomainEvent, EventMetadata, StreamType};
use serde_json::json;
use uuid::Uuid;

use super::{STREAM_VERSION_CONSTRAINT, StoreError};

const CLAIM_CONSTRAINT: &str = "unique_claims_pkey";

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
    /// The streams the decision read, at most one entry each. The statement
    /// takes their locks in stream order, the target's exclusively whether
    /// listed or not.
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

/// Checks what the decision read and appends its events, in one statement:
/// one round trip, whatever the command. It is a batch of one, so every
/// append takes its locks in the one order and is checked by the same code
/// (`event_store.append_set`, schema/migrations 0015, and `append_locked`,
/// 0012, which says what is checked, and in which order).
pub async fn append_decision(
    executor: impl sqlx::PgExecutor<'_>,
    append: &Append,
) -> Result<Appended, StoreError> {
    append_batch(executor, &[append])
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Malformed("the append answered nothing".into())))
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

/// One append's row of what `event_store.append_set` answers.
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

/// The appends, flattened into the columns `event_store.append_set` takes.
#[derive(Default)]
struct Columns {
    stream: Vec<Uuid>,
    stream_type: Vec<&'static str>,
    base: Vec<i32>,
    command: Vec<Uuid>,
    correlation: Vec<Uuid>,
    actor: Vec<Option<Uuid>>,
    metadata: Vec<serde_json::Value>,
    session: Vec<Option<Uuid>>,
    claims: Vec<serde_json::Value>,
    caller: Vec<Option<String>>,
    key: Vec<Option<String>>,
    fingerprint: Vec<Option<String>>,
    ttl: Vec<Option<f64>>,
    event_command: Vec<i32>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'static str>,
    schema_version: Vec<i16>,
    payload: Vec<serde_json::Value>,
    read_command: Vec<i32>,
    read_stream: Vec<Uuid>,
    read_version: Vec<i32>,
    read_lock: Vec<i32>,
}

impl Columns {
    fn of(appends: &[&Append]) -> Columns {
        let mut columns = Columns::default();
        for (index, append) in appends.iter().enumerate() {
            let command = index as i32 + 1;
            let encoded = append.encode();
            columns.stream.push(append.stream_id);
            columns.stream_type.push(append.stream_type.as_str());
            columns.base.push(append.base_version);
            columns.command.push(append.metadata.command_id);
            columns.correlation.push(append.metadata.correlation_id);
            columns.actor.push(append.metadata.actor_id);
            columns.metadata.push(encoded.metadata);
            columns.session.push(append.session);
            columns.claims.push(encoded.claims);
            let idempotency = append.idempotency.as_ref();
            columns
                .caller
                .push(idempotency.map(|key| key.caller.clone()));
            columns.key.push(idempotency.map(|key| key.key.clone()));
            columns
                .fingerprint
                .push(idempotency.map(|key| key.fingerprint.clone()));
            columns
                .ttl
                .push(idempotency.map(|key| key.ttl_seconds as f64));
            for (((id, event_type), schema_version), payload) in encoded
                .event_ids
                .into_iter()
                .zip(encoded.event_types)
                .zip(encoded.schema_versions)
                .zip(encoded.payloads)
            {
                columns.event_command.push(command);
                columns.event_id.push(id);
                columns.event_type.push(event_type);
                columns.schema_version.push(schema_version);
                columns.payload.push(payload);
            }
            for read in &append.reads {
                columns.read_command.push(command);
                columns.read_stream.push(read.stream_id);
                columns.read_version.push(read.version);
                columns.read_lock.push(read.lock as i32);
            }
        }
        columns
    }
}

/// A batch outcome: the append's position, then its row.
type BatchRow = (
    i32,
    String,
    Option<i32>,
    Option<String>,
    Option<serde_json::Value>,
);

/// One statement for all of `appends`; an outcome for each, in order, as if
/// they were appended one after another. An error fails them all (nothing
/// is written). Commands that cannot see each other's writes are checked
/// and written as one set; a batch where one may is run in turn
/// (`event_store.append_set`).
pub async fn append_batch(
    executor: impl sqlx::PgExecutor<'_>,
    appends: &[&Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    batch_statement(executor, appends, "append_set").await
}

/// As `append_batch`, each command checked and written in turn
/// (`event_store.append_batch`, which the previous release calls): the
/// reference the set-based statement is tested against.
pub async fn append_in_turn(
    executor: impl sqlx::PgExecutor<'_>,
    appends: &[&Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    batch_statement(executor, appends, "append_batch").await
}

async fn batch_statement(
    executor: impl sqlx::PgExecutor<'_>,
    appends: &[&Append],
    function: &'static str,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let columns = Columns::of(appends);
    // Not `query!`: arrays with NULL elements are bound as `Vec<Option<_>>`.
    // `function` is one of two names fixed above, never input.
    let statement = format!(
        "SELECT command, outcome, version, detail, stored
             FROM event_store.{function}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
    );
    let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(&columns.stream)
        .bind(&columns.stream_type)
        .bind(&columns.base)
        .bind(&columns.command)
        .bind(&columns.correlation)
        .bind(&columns.actor)
        .bind(&columns.metadata)
        .bind(&columns.session)
        .bind(&columns.claims)
        .bind(&columns.caller)
        .bind(&columns.key)
        .bind(&columns.fingerprint)
        .bind(&columns.ttl)
        .bind(&columns.event_command)
        .bind(&columns.event_id)
        .bind(&columns.event_type)
        .bind(&columns.schema_version)
        .bind(&columns.payload)
        .bind(&columns.read_command)
        .bind(&columns.read_stream)
        .bind(&columns.read_version)
        .bind(&columns.read_lock)
        .fetch_all(executor)
        .await
        .map_err(|error| match appends {
            // Alone, a lost race is this append's own: its caller decides again.
            [append] => store_error(error, append.base_version),
            _ => error.into(),
        })?;
    if rows.len() != appends.len() {
        return Err(StoreError::Malformed(format!(
            "a batch of {} appends answered {} outcomes",
            appends.len(),
            rows.len()
        )));
    }
    let mut outcomes: Vec<Option<Result<Appended, StoreError>>> =
        appends.iter().map(|_| None).collect();
    for (command, outcome_text, version, detail, stored) in rows {
        let index = usize::try_from(command - 1)
            .ok()
            .filter(|index| *index < appends.len())
            .ok_or_else(|| StoreError::Malformed(format!("batch outcome for command {command}")))?;
        let row = OutcomeRow {
            outcome: outcome_text,
            version,
            detail,
            stored,
        };
        outcomes[index] = Some(outcome(appends[index], &row));
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            outcome
                .unwrap_or_else(|| Err(StoreError::Malformed("a batch outcome is missing".into())))
        })
        .collect())
}
