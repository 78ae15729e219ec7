//! The event store's optimistic concurrency, against real Postgres.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chronicle_schema::events::{UserDeactivated, UserEvent, UserProfileUpdated};
use chronicle_schema::{DomainEvent, EventMetadata, StreamType};
use chronicle_tests::{TestApp, TestDatabase, TestOptions};
use command_service::event_store::{self, AppendContext, StoreError};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::Barrier;
use uuid::Uuid;

fn metadata() -> EventMetadata {
    let command_id = Uuid::now_v7();
    EventMetadata {
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        actor_id: None,
        traceparent: None,
    }
}

fn two_events(writer: usize) -> Vec<DomainEvent> {
    vec![
        DomainEvent::User(UserEvent::ProfileUpdated(UserProfileUpdated {
            display_name: format!("writer {writer}"),
            bio: None,
        })),
        DomainEvent::User(UserEvent::Deactivated(UserDeactivated {})),
    ]
}

/// Writers that all read the stream at the same version, then append.
async fn race(
    app: &TestApp,
    stream_id: Uuid,
    writers: usize,
) -> Vec<Result<(Uuid, i32), StoreError>> {
    let barrier = Arc::new(Barrier::new(writers));
    let tasks = (0..writers).map(|writer| {
        let (pool, barrier) = (app.pool.clone(), barrier.clone());
        tokio::spawn(async move {
            let mut transaction = pool.begin().await.unwrap();
            let base = event_store::current_version(&mut *transaction, stream_id)
                .await
                .unwrap();
            barrier.wait().await;
            let metadata = metadata();
            let appended = event_store::append(
                &mut transaction,
                stream_id,
                StreamType::User,
                base,
                &two_events(writer),
                &metadata,
                &AppendContext::default(),
            )
            .await;
            match appended {
                Ok(version) => {
                    transaction.commit().await.unwrap();
                    Ok((metadata.command_id, version))
                }
                Err(error) => Err(error),
            }
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_stream_exactly_one_wins_each_version_and_nothing_is_half_written()
 {
    let app = TestApp::spawn_with(chronicle_tests::TestOptions {
        projector: false,
        relay: false,
        ..Default::default()
    })
    .await;
    let stream_id = Uuid::now_v7();

    for round in 0..5 {
        let outcomes = race(&app, stream_id, 12).await;

        let winners: Vec<&(Uuid, i32)> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        assert_eq!(
            winners[0].1,
            (round + 1) * 2,
            "the winner appended both its events"
        );
        for outcome in &outcomes {
            if let Err(error) = outcome {
                assert!(
                    matches!(error, StoreError::Conflict { .. }),
                    "losers get a conflict, not {error}"
                );
            }
        }
        // Every version is written once, and each command's events are all there or none are.
        let rows: Vec<(i32, Uuid)> = sqlx::query_as(
            "SELECT version, command_id FROM event_store.events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(stream_id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(rows.len() as i32, (round + 1) * 2);
        for pair in rows.chunks(2) {
            assert_eq!(
                pair[0].1, pair[1].1,
                "both events of a command commit together"
            );
        }
        assert!(
            rows.iter()
                .enumerate()
                .all(|(index, (version, _))| *version == index as i32 + 1)
        );
    }
}

/// Transaction ids are numbers: the store is read in their numeric order even
/// where their decimal text sorts otherwise (9 before 10), so a cursor that
/// pages through it never passes over an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_read_in_numeric_transaction_order_one_event_at_a_time() {
    let app = TestApp::spawn_with(chronicle_tests::TestOptions {
        projector: false,
        relay: false,
        ..Default::default()
    })
    .await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    for (stream_id, transaction_id) in [(first, "9"), (second, "10")] {
        let mut connection = app.pool.acquire().await.unwrap();
        event_store::append(
            &mut connection,
            stream_id,
            StreamType::User,
            0,
            &two_events(0)[..1],
            &metadata(),
            &AppendContext::default(),
        )
        .await
        .unwrap();
        // As if these transactions had had the ids 9 and 10.
        sqlx::query(
            "UPDATE event_store.events SET transaction_id = $1::text::xid8 WHERE stream_id = $2",
        )
        .bind(transaction_id)
        .bind(stream_id)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let mut cursor = chronicle_schema::events::StoreCursor::start();
    let mut read = Vec::new();
    loop {
        let batch = chronicle_schema::events::read_committed(&app.pool, &cursor, "1000", 1)
            .await
            .unwrap();
        let Some((next, row)) = batch.into_iter().next() else {
            break;
        };
        if [first, second].contains(&row.stream_id) {
            read.push(row.stream_id);
        }
        cursor = next;
    }
    assert_eq!(read, vec![first, second]);
}

fn renamed_by(stream_id: Uuid, base_version: i32, name: &str) -> event_store::Append {
    let command_id = Uuid::now_v7();
    event_store::Append {
        stream_id,
        stream_type: StreamType::User,
        base_version,
        events: vec![DomainEvent::User(UserEvent::ProfileUpdated(
            UserProfileUpdated {
                display_name: name.to_owned(),
                bio: None,
            },
        ))],
        metadata: EventMetadata {
            command_id,
            correlation_id: command_id,
            causation_id: command_id,
            actor_id: None,
            traceparent: None,
        },
        request_id: None,
        session: None,
        reads: Vec::new(),
        claims: Vec::new(),
        idempotency: None,
        sealing: None,
    }
}

/// Appends committed together (group commit) behave as if made one after
/// another: the second of two decided on one version finds it moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_committed_together_behave_as_if_made_one_after_another() {
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let (shared, other) = (Uuid::now_v7(), Uuid::now_v7());
    let batch = [
        renamed_by(shared, 0, "first"),
        renamed_by(other, 0, "elsewhere"),
        renamed_by(shared, 0, "second, on the same version"),
    ];
    let outcomes = event_store::append_batch(&app.pool, &batch.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(matches!(
        outcomes[0],
        Ok(event_store::Appended::Appended { version: 1 })
    ));
    assert!(matches!(
        outcomes[1],
        Ok(event_store::Appended::Appended { version: 1 })
    ));
    assert!(
        matches!(outcomes[2], Ok(event_store::Appended::Stale { stream_id, version: 1 }) if stream_id == shared),
        "{:?}",
        outcomes[2]
    );
    // One transaction: one transaction id for all they appended.
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT transaction_id) FROM event_store.events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(transactions, 1);
}

/// Batches claiming the same unique values in opposite orders never wait on
/// each other's claims in a cycle (Postgres would abort one after its
/// deadlock timeout, and every command of that batch would wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_claiming_the_same_values_in_opposite_orders_never_deadlock() {
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..TestOptions::default()
    })
    .await;
    let claiming = |value: String| {
        let mut append = renamed_by(Uuid::now_v7(), 0, "claimant");
        append.claims = vec![event_store::Claim {
            kind: "drill",
            candidates: vec![value],
            field: None,
        }];
        append
    };
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let forward = [claiming(a.clone()), claiming(b.clone())];
        let backward = [claiming(b), claiming(a)];
        let (forward, backward): (Vec<_>, Vec<_>) =
            (forward.iter().collect(), backward.iter().collect());
        let (one, other) = tokio::join!(
            event_store::append_batch(&app.pool, &forward),
            event_store::append_batch(&app.pool, &backward),
        );
        // Each value goes to one batch; neither batch fails as a whole.
        let (one, other) = (one.expect("no deadlock"), other.expect("no deadlock"));
        let won = one
            .iter()
            .chain(&other)
            .filter(|outcome| matches!(outcome, Ok(event_store::Appended::Appended { .. })))
            .count();
        assert_eq!(won, 2, "round {round}: {one:?} {other:?}");
    }
}

/// During a rolling deploy, instances of the previous release append alone
/// through `event_store.append`, which is now a batch of one: it still
/// appends, checks the version it was given, and answers as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_single_append_still_appends_and_checks_its_version() {
    let app = TestApp::spawn_with(TestOptions {
        projector: false,
        relay: false,
        ..Default::default()
    })
    .await;
    let stream_id = Uuid::now_v7();
    let old_append = |base_version: i32| {
        let command_id = Uuid::now_v7();
        sqlx::query_as::<_, (String, Option<i32>, Option<String>)>(
            "SELECT outcome, version, detail FROM event_store.append(
                 $1, 'user', $2, ARRAY[$3::uuid], ARRAY['UserProfileUpdated'], ARRAY[1::int2],
                 ARRAY['{\"displayName\": \"Ada\", \"bio\": null}'::jsonb],
                 $4, $4, NULL, '{}'::jsonb, NULL, '{}', '{}', '{}', '[]'::jsonb,
                 NULL, NULL, NULL, NULL)",
        )
        .bind(stream_id)
        .bind(base_version)
        .bind(Uuid::now_v7())
        .bind(command_id)
        .fetch_one(&app.pool)
    };
    assert_eq!(
        old_append(0).await.unwrap(),
        ("appended".to_owned(), Some(1), None)
    );
    assert_eq!(
        old_append(0).await.unwrap(),
        ("stale".to_owned(), Some(1), Some(stream_id.to_string()))
    );
    assert_eq!(
        old_append(1).await.unwrap(),
        ("appended".to_owned(), Some(2), None)
    );
    let versions: Vec<i32> = sqlx::query_scalar(
        "SELECT version FROM event_store.events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(stream_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(versions, vec![1, 2]);
}

/// What a random batch may draw from: few streams, values and keys, so that
/// commands of one batch often meet (one stream, one value, one key) and
/// often do not.
struct Pools {
    streams: Vec<Uuid>,
    actor: Uuid,
    open_session: Uuid,
    ended_session: Uuid,
}

const VALUES: &[&str] = &["a", "b", "c", "d", "e"];
const KEYS: &[&str] = &["k1", "k2", "k3"];

/// Where the commands of a random batch may meet; they meet nowhere else.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Meeting {
    Nowhere,
    /// Two append to one stream.
    Streams,
    /// One reads a stream another appends to.
    Reads,
    /// One unique value is a candidate of two.
    Values,
    /// Two send one idempotency key.
    Keys,
}

/// A random append on `pools`, at the stream's current version mostly. It
/// avoids what `taken` holds (streams appended to or read, values and keys
/// of the batch so far) except where `meeting` allows, and records its own.
fn random_append(
    rng: &mut StdRng,
    pools: &Pools,
    versions: &HashMap<Uuid, i32>,
    taken: &mut HashSet<String>,
    meeting: Meeting,
    round: usize,
) -> Option<event_store::Append> {
    // Values and keys are new every five rounds (once claimed or used they
    // can only be taken or replayed), and now and then from the five before.
    let epoch = |rng: &mut StdRng| round / 5 - usize::from(round >= 5 && rng.random_ratio(1, 4));
    let free = |taken: &HashSet<String>, allowed: Meeting, name: String| {
        meeting == allowed || !taken.contains(&name)
    };
    let version_of = |rng: &mut StdRng, stream: Uuid| {
        let current = versions.get(&stream).copied().unwrap_or(0);
        if rng.random_ratio(4, 5) {
            current
        } else {
            rng.random_range(0..=current + 1)
        }
    };
    let stream = **pools
        .streams
        .iter()
        .filter(|stream| {
            free(taken, Meeting::Streams, format!("stream {stream}"))
                && free(taken, Meeting::Reads, format!("read {stream}"))
        })
        .collect::<Vec<_>>()
        .choose(rng)?;
    let mut append = renamed_by(stream, version_of(rng, stream), "random");
    for _ in 0..rng.random_range(0..3) {
        // Where reads may meet appends, mostly a stream appended to already.
        let appended: Vec<Uuid> = pools
            .streams
            .iter()
            .copied()
            .filter(|stream| taken.contains(&format!("stream {stream}")))
            .collect();
        let read = match appended.choose(rng) {
            Some(appended) if meeting == Meeting::Reads && rng.random_ratio(3, 4) => *appended,
            _ => *pools.streams.choose(rng).expect("streams"),
        };
        if read == stream || !free(taken, Meeting::Reads, format!("stream {read}")) {
            continue;
        }
        if append.reads.iter().all(|known| known.stream_id != read) {
            append.reads.push(event_store::Read {
                stream_id: read,
                version: version_of(rng, read),
                lock: *[
                    event_store::Lock::Shared,
                    event_store::Lock::Exclusive,
                    event_store::Lock::None,
                ]
                .choose(rng)
                .expect("locks"),
            });
        }
    }
    // A command that read its target lists it, at the version it decided on.
    if rng.random_ratio(1, 4) {
        append.reads.push(event_store::Read {
            stream_id: stream,
            version: append.base_version,
            lock: event_store::Lock::Exclusive,
        });
    }
    taken.insert(format!("stream {stream}"));
    // Many may read a stream; none may read one another appends to.
    append.reads.sort_by_key(|read| read.stream_id);
    for read in &append.reads {
        taken.insert(format!("read {}", read.stream_id));
    }
    // Where they may meet, every command claims a value or sends a key.
    if meeting == Meeting::Values || rng.random_ratio(1, 2) {
        let (count, epoch) = (rng.random_range(1..=3), epoch(rng));
        let candidates: Vec<String> = VALUES
            .choose_multiple(rng, count)
            .map(|value| format!("{epoch}{value}"))
            .filter(|value| free(taken, Meeting::Values, format!("value {value}")))
            .collect();
        if !candidates.is_empty() {
            taken.extend(candidates.iter().map(|value| format!("value {value}")));
            // Now and then a second kind, of its own values, written
            // into the event too.
            if rng.random_ratio(1, 4) {
                append.claims.push(event_store::Claim {
                    kind: "other",
                    candidates: candidates.iter().map(|value| format!("{value}!")).collect(),
                    field: rng.random_ratio(1, 2).then_some("bio"),
                });
            }
            append.claims.push(event_store::Claim {
                kind: "random",
                candidates,
                field: rng.random_ratio(1, 2).then_some("displayName"),
            });
        }
    }
    if meeting == Meeting::Keys || rng.random_ratio(1, 2) {
        let key = format!("{}{}", epoch(rng), KEYS.choose(rng).expect("keys"));
        if free(taken, Meeting::Keys, format!("key {key}")) {
            taken.insert(format!("key {key}"));
            append.idempotency = Some(event_store::Idempotency {
                caller: "random".into(),
                key,
                fingerprint: ["one", "two"].choose(rng).expect("two").to_string(),
                // Now and then expired as soon as it is written.
                ttl_seconds: if rng.random_ratio(1, 5) { 0 } else { 3600 },
            });
        }
    }
    append.metadata.actor_id = Some(pools.actor);
    append.session = match rng.random_range(0..10) {
        0 => Some(pools.ended_session),
        1..5 => Some(pools.open_session),
        _ => None,
    };
    if rng.random_ratio(1, 3) {
        append.events.push(DomainEvent::User(UserEvent::Deactivated(
            UserDeactivated {},
        )));
    }
    Some(append)
}

/// Everything an append writes, in a comparable form (event ids are drawn
/// per call). Each stream's events must be in version order on the bus, so
/// in the store's position order.
async fn written(pool: &sqlx::PgPool) -> Vec<String> {
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT position, lag(position) OVER (PARTITION BY stream_id ORDER BY version) AS before
             FROM event_store.events) e
         WHERE e.before > e.position",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(out_of_order, 0, "a stream's events out of position order");
    sqlx::query_scalar(
        "SELECT format('event %s v%s %s %s %s', stream_id, version, event_type, payload, command_id)
             FROM event_store.events
         UNION ALL
         SELECT format('claim %s %s %s', kind, value, stream_id) FROM event_store.unique_claims
         UNION ALL
         SELECT format('key %s %s %s %s', caller, key, request_hash, response)
             FROM event_store.idempotency_keys
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Random batches committed together end exactly as the same appends made
/// one after another, in the same order: each outcome (appended, stale,
/// taken, replayed, key reused, session ended) and everything written
/// (events, claims, idempotency records). A fifth of the batches are
/// commands that cannot see each other's writes (checked and written as one
/// set); in each other fifth they meet in one way (checked in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_batches_end_as_the_same_appends_made_one_after_another() {
    let seed = chronicle_tests::random_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let (together, alone) = (TestDatabase::create().await, TestDatabase::create().await);
    let (together, alone) = (together.pool(), alone.pool());
    let pools = Pools {
        streams: (0..8).map(|_| Uuid::now_v7()).collect(),
        actor: Uuid::now_v7(),
        open_session: Uuid::now_v7(),
        ended_session: Uuid::now_v7(),
    };
    for pool in [&together, &alone] {
        sqlx::query(
            "INSERT INTO auth.sessions (id, user_id, revoked_at)
             VALUES ($1, $3, NULL), ($2, $3, now())",
        )
        .bind(pools.open_session)
        .bind(pools.ended_session)
        .bind(pools.actor)
        .execute(pool)
        .await
        .unwrap();
    }
    let mut outcomes_seen = HashSet::new();
    for round in 0..150 {
        let versions: HashMap<Uuid, i32> = sqlx::query_as(
            "SELECT stream_id, max(version) FROM event_store.events GROUP BY stream_id",
        )
        .fetch_all(&alone)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let meeting = [
            Meeting::Nowhere,
            Meeting::Streams,
            Meeting::Reads,
            Meeting::Values,
            Meeting::Keys,
        ][round % 5];
        let mut taken = HashSet::new();
        let batch: Vec<event_store::Append> = (0..rng.random_range(1..=6))
            .filter_map(|_| random_append(&mut rng, &pools, &versions, &mut taken, meeting, round))
            .collect();
        let batch: Vec<&event_store::Append> = batch.iter().collect();

        let committed_together = event_store::append_batch(&together, &batch)
            .await
            .unwrap_or_else(|error| panic!("CHRONICLE_SEED={seed}, round {round}: {error}"));
        // The reference: each alone, checked and written in turn.
        let mut one_after_another = Vec::new();
        for append in &batch {
            let mut outcome = event_store::append_in_turn(&alone, &[append])
                .await
                .unwrap_or_else(|error| panic!("CHRONICLE_SEED={seed}, round {round}: {error}"));
            one_after_another.push(outcome.pop().expect("an outcome"));
        }
        let describe = |outcomes: &[Result<event_store::Appended, StoreError>]| {
            outcomes
                .iter()
                .map(|outcome| format!("{outcome:?}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            describe(&committed_together),
            describe(&one_after_another),
            "CHRONICLE_SEED={seed}, round {round} ({meeting:?})"
        );
        outcomes_seen.extend(committed_together.iter().map(|outcome| match outcome {
            Ok(event_store::Appended::Appended { .. }) => "appended",
            Ok(event_store::Appended::Stale { .. }) => "stale",
            Ok(event_store::Appended::Taken(_)) => "taken",
            Ok(event_store::Appended::Replayed(_)) => "replayed",
            Ok(event_store::Appended::KeyReused) => "key reused",
            Ok(event_store::Appended::SessionEnded) => "session ended",
            Err(_) => "failed",
        }));
        assert_eq!(
            written(&together).await,
            written(&alone).await,
            "CHRONICLE_SEED={seed}, round {round} ({meeting:?})"
        );
    }
    assert_eq!(
        outcomes_seen,
        HashSet::from([
            "appended",
            "stale",
            "taken",
            "replayed",
            "key reused",
            "session ended"
        ]),
        "CHRONICLE_SEED={seed}: every outcome is drawn"
    );
}
