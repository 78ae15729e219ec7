//! Applying a batch of events to the read models in one transaction.
//!
//! Per stream, the last applied version is kept in `stream_versions` and
//! written in the same transaction as the rows, so a batch is applied entirely
//! or not at all, and a redelivered event is skipped. A version past a hole is
//! never applied on its own: the missing versions are read from the event
//! store (the source of truth) and applied first.
//!
//! A batch loads the rows its events touch, folds the events into them with
//! the read models' own folds (`chronicle_schema::read_models`), writes them
//! back (one statement per table), then recounts the derived columns of every
//! row the batch affected. Any number of projector instances may apply
//! batches at once (a consumer group's partitions, a rebalance): before
//! reading anything it derives from, a batch takes a transaction lock on every
//! stream it applies and every row whose derived columns it recomputes, all in
//! one global order (users, posts, comments, then tags), so two batches that
//! share an author, a post or a tag run one after the other and neither counts
//! from rows the other has not committed (`locks`).

use std::collections::{BTreeSet, HashMap, HashSet};

use chronicle_schema::events::{CommentEvent, PostEvent, StoredEventRow, UserEvent};
use chronicle_schema::privacy::Keyring;
use chronicle_schema::projected::{AppliedEvent, CHANNEL, Projected, Touched};
use chronicle_schema::read_models::comments::{self, CommentRow};
use chronicle_schema::read_models::posts::{self, PostRow};
use chronicle_schema::read_models::users::{self, UserRow};
use chronicle_schema::read_models::{self, FoldError, tags};
use chronicle_schema::{DomainEvent, RecordedEvent, StreamType};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::dead_letters::{self, Letter};
use crate::locks::{self, Facts};
use crate::read_models::{PROJECTION, SWAP_LOCK_KEY};

/// One message of a batch.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing would allocate for each"
)]
pub enum Incoming {
    Event(RecordedEvent),
    /// An event this build cannot read: set aside. When it is known which
    /// stream and version it is, the stream moves on past it.
    Unreadable(Box<Letter>),
}

impl Incoming {
    fn stream(&self) -> Option<(Uuid, StreamType)> {
        match self {
            Incoming::Event(event) => Some((event.stream_id, event.stream_type)),
            Incoming::Unreadable(letter) => letter.stream_id.zip(letter.stream_type),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "stream {stream_id} has a hole: version {version} arrived after {applied}, \
         and the event store does not have the versions between"
    )]
    Hole {
        stream_id: Uuid,
        applied: i32,
        version: i32,
    },
}

impl ApplyError {
    /// A failure of the statement rather than of the moment (a constraint
    /// the rows violate): retrying the same batch would fail again.
    fn is_poison(&self) -> bool {
        match self {
            ApplyError::Database(sqlx::Error::Database(error)) => !error
                .code()
                .is_some_and(|code| chronicle_platform::database::is_transient_sqlstate(&code)),
            _ => false,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub skipped: usize,
    /// Of `applied`, versions read from the event store to fill a hole.
    pub filled: usize,
    pub dead_lettered: usize,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, other: Outcome) {
        self.applied += other.applied;
        self.skipped += other.skipped;
        self.filled += other.filled;
        self.dead_lettered += other.dead_lettered;
    }
}

/// How a batch is applied.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Take the derived-row locks: off only where one writer owns the
    /// schema (a rebuild's catch-up into `read_next`).
    pub lock: bool,
    /// Tell listeners what was applied (the live read models only).
    pub announce: bool,
    /// Fold the streams again from their first event, replacing their rows
    /// (a redrive); their applied versions never go back.
    pub refold: bool,
}

pub const LIVE: Mode = Mode {
    lock: true,
    announce: true,
    refold: false,
};

/// Folds the streams of `events` (each complete, from version 1) again and
/// replaces their rows, under the live path's locks.
pub async fn refold(
    connection: &mut PgConnection,
    events: &[Incoming],
) -> Result<Outcome, ApplyError> {
    apply_within(
        connection,
        events,
        Mode {
            refold: true,
            ..LIVE
        },
    )
    .await
}

#[derive(Clone, Copy)]
struct Applied {
    version: i32,
    position: i64,
}

/// Applies `batch` in one transaction. A poison event does not fail the
/// batch: it is set aside as a dead letter and the others are applied.
pub async fn apply_batch(pool: &PgPool, batch: &[Incoming]) -> Result<Outcome, ApplyError> {
    let outcome = match attempt(pool, batch, false).await {
        Err(error) if error.is_poison() => {
            tracing::warn!(%error, "a batch failed as a whole; applying its events one by one");
            attempt(pool, batch, true).await?
        }
        result => result?,
    };
    record_metrics(&outcome);
    Ok(outcome)
}

async fn attempt(pool: &PgPool, batch: &[Incoming], isolate: bool) -> Result<Outcome, ApplyError> {
    let mut transaction = pool.begin().await?;
    // Shared with other batches; a rebuild's swap takes it exclusively, so no
    // batch straddles the moment the read models are replaced.
    sqlx::query!("SELECT pg_advisory_xact_lock_shared($1)", SWAP_LOCK_KEY)
        .execute(&mut *transaction)
        .await?;
    let outcome = if isolate {
        apply_isolated(&mut transaction, batch, LIVE).await?
    } else {
        apply_within(&mut transaction, batch, LIVE).await?
    };
    transaction.commit().await?;
    Ok(outcome)
}

/// Applies each message in a savepoint of its own: one whose rows the
/// database refuses is set aside, the others are applied.
pub async fn apply_isolated(
    connection: &mut PgConnection,
    batch: &[Incoming],
    mode: Mode,
) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    for incoming in batch {
        let mut savepoint = sqlx::Connection::begin(&mut *connection).await?;
        match apply_within(&mut savepoint, std::slice::from_ref(incoming), mode).await {
            Ok(applied) => {
                savepoint.commit().await?;
                outcome += applied;
            }
            Err(error) if error.is_poison() => {
                savepoint.rollback().await?;
                let Incoming::Event(event) = incoming else {
                    return Err(error);
                };
                let mut batch = Batch::new(mode);
                batch.load_versions(connection, &[event.stream_id]).await?;
                batch.dead_letter(
                    Letter::event(event, error.to_string()),
                    event.stream_id,
                    event.version,
                    event.position,
                );
                outcome += batch.write(connection).await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(outcome)
}

/// Applies `batch` inside the caller's transaction.
pub async fn apply_within(
    connection: &mut PgConnection,
    incoming: &[Incoming],
    mode: Mode,
) -> Result<Outcome, ApplyError> {
    let events: Vec<&RecordedEvent> = incoming
        .iter()
        .filter_map(|incoming| match incoming {
            Incoming::Event(event) => Some(event),
            Incoming::Unreadable(_) => None,
        })
        .collect();
    let facts = Facts::discover(connection, &events).await?;
    let streams: Vec<(Uuid, StreamType)> = incoming.iter().filter_map(Incoming::stream).collect();
    if mode.lock {
        locks::lock(connection, &facts.keys(&streams)).await?;
    }
    let mut batch = Batch::new(mode);
    batch.facts = facts;
    let stream_ids: Vec<Uuid> = streams.iter().map(|(id, _)| *id).collect();
    batch.load_versions(connection, &stream_ids).await?;
    batch.load_rows(connection, &streams).await?;
    let tags = batch.related_tags(connection, &events).await?;
    if mode.refold {
        batch.recount_tags.extend(tags.iter().cloned());
    }
    batch.lock_tags(connection, tags).await?;
    if mode.refold {
        // The rows are folded anew; the old ones still count for the tags above.
        batch.versions.clear();
        batch.users.values_mut().for_each(|row| *row = None);
        batch.posts.values_mut().for_each(|row| *row = None);
        batch.comments.values_mut().for_each(|row| *row = None);
    }
    for message in incoming {
        match message {
            Incoming::Event(event) => batch.apply(connection, event).await?,
            Incoming::Unreadable(letter) => batch.set_aside(connection, letter).await?,
        }
    }
    Ok(batch.write(connection).await?)
}

/// What one batch has loaded, changed and must recount.
struct Batch {
    mode: Mode,
    facts: Facts,
    versions: HashMap<Uuid, Applied>,
    users: HashMap<Uuid, Option<UserRow>>,
    posts: HashMap<Uuid, Option<PostRow>>,
    comments: HashMap<Uuid, Option<CommentRow>>,
    /// Streams whose rows the batch changed.
    changed: HashSet<Uuid>,
    /// Streams whose applied version moved.
    moved: HashSet<Uuid>,
    /// Every tag of the posts of the batch's users (their standing counts for them).
    author_tags: Vec<String>,
    /// Tags locked so far (a hole filled from the store may bring more).
    locked_tags: BTreeSet<String>,
    /// Rows whose derived columns are recounted after the rows are written.
    recount_users: BTreeSet<Uuid>,
    recount_posts: BTreeSet<Uuid>,
    recount_comments: BTreeSet<Uuid>,
    recount_tags: BTreeSet<String>,
    /// Authors whose name and standing are copied onto their posts again.
    copy_authors: BTreeSet<Uuid>,
    /// Refolded posts, which copy their author's name and standing again
    /// (a new post is inserted with them).
    copy_to_posts: BTreeSet<Uuid>,
    /// Users and posts this batch created (their handles and slugs may have
    /// been an erased person's a moment ago).
    created: HashSet<Uuid>,
    letters: Vec<Letter>,
    announced: Vec<AppliedEvent>,
    outcome: Outcome,
}

impl Batch {
    fn new(mode: Mode) -> Batch {
        Batch {
            mode,
            facts: Facts::default(),
            versions: HashMap::new(),
            users: HashMap::new(),
            posts: HashMap::new(),
            comments: HashMap::new(),
            changed: HashSet::new(),
            moved: HashSet::new(),
            author_tags: Vec::new(),
            locked_tags: BTreeSet::new(),
            recount_users: BTreeSet::new(),
            recount_posts: BTreeSet::new(),
            recount_comments: BTreeSet::new(),
            recount_tags: BTreeSet::new(),
            copy_authors: BTreeSet::new(),
            copy_to_posts: BTreeSet::new(),
            created: HashSet::new(),
            letters: Vec::new(),
            announced: Vec::new(),
            outcome: Outcome::default(),
        }
    }

    async fn load_versions(
        &mut self,
        connection: &mut PgConnection,
        stream_ids: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        let rows = sqlx::query!(
            "SELECT stream_id, version, position FROM stream_versions WHERE stream_id = ANY($1)",
            stream_ids
        )
        .fetch_all(connection)
        .await?;
        for row in rows {
            self.versions.insert(
                row.stream_id,
                Applied {
                    version: row.version,
                    position: row.position,
                },
            );
        }
        Ok(())
    }

    async fn load_rows(
        &mut self,
        connection: &mut PgConnection,
        streams: &[(Uuid, StreamType)],
    ) -> Result<(), sqlx::Error> {
        let of = |kind: StreamType| -> Vec<Uuid> {
            let mut ids: Vec<Uuid> = streams
                .iter()
                .filter(|(_, stream_type)| *stream_type == kind)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        // A row is written with its stream's version, in one transaction,
        // and neither is ever deleted: a stream with no version has no row
        // to read (a new stream, most of a batch under load).
        let stored = |ids: &[Uuid]| -> Vec<Uuid> {
            ids.iter()
                .filter(|id| self.versions.contains_key(id))
                .copied()
                .collect()
        };
        let (user_ids, post_ids, comment_ids) = (
            of(StreamType::User),
            of(StreamType::Post),
            of(StreamType::Comment),
        );
        let (stored_users, stored_posts, stored_comments) =
            (stored(&user_ids), stored(&post_ids), stored(&comment_ids));
        self.users = user_ids.iter().map(|id| (*id, None)).collect();
        for row in users::by_ids(&mut *connection, &stored_users).await? {
            self.users.insert(row.id, Some(row));
        }
        self.posts = post_ids.iter().map(|id| (*id, None)).collect();
        for row in posts::by_ids(&mut *connection, &stored_posts).await? {
            self.posts.insert(row.id, Some(row));
        }
        self.comments = comment_ids.iter().map(|id| (*id, None)).collect();
        for row in comments::by_ids(&mut *connection, &stored_comments).await? {
            self.comments.insert(row.id, Some(row));
        }
        Ok(())
    }

    /// Locks tags not locked yet (in lock mode).
    async fn lock_tags(
        &mut self,
        connection: &mut PgConnection,
        tags: impl IntoIterator<Item = String>,
    ) -> Result<(), sqlx::Error> {
        let new: Vec<String> = tags
            .into_iter()
            .filter(|tag| !self.locked_tags.contains(tag))
            .collect();
        if self.mode.lock && !new.is_empty() {
            locks::lock_tags(connection, &new).await?;
        }
        self.locked_tags.extend(new);
        Ok(())
    }

    /// The tags whose counts this batch may change: its posts' tags now and
    /// after its events, and every tag of the posts of its users (whose
    /// standing counts for them). Stable under the locks already held: only
    /// a batch holding the post's, or its author's, lock changes them.
    async fn related_tags(
        &mut self,
        connection: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for post in self.posts.values().flatten() {
            names.extend(post.tags.iter().cloned());
        }
        for event in events {
            if let DomainEvent::Post(post) = &event.event {
                match post {
                    PostEvent::Created(created) => names.extend(created.tags.iter().cloned()),
                    PostEvent::Edited(edited) => names.extend(edited.tags.iter().cloned()),
                    _ => {}
                }
            }
        }
        let users: Vec<Uuid> = self.users.keys().copied().collect();
        self.author_tags = posts::tags_of_authors(&mut *connection, &users).await?;
        names.extend(self.author_tags.iter().cloned());
        Ok(names.into_iter().collect())
    }

    fn applied(&self, stream_id: Uuid) -> i32 {
        self.versions
            .get(&stream_id)
            .map_or(0, |applied| applied.version)
    }

    fn handled(&mut self, stream_id: Uuid, version: i32, position: i64) {
        let entry = self.versions.entry(stream_id).or_insert(Applied {
            version: 0,
            position: 0,
        });
        if entry.version < version {
            *entry = Applied { version, position };
            self.moved.insert(stream_id);
        }
    }

    fn dead_letter(&mut self, letter: Letter, stream_id: Uuid, version: i32, position: i64) {
        self.letters.push(letter);
        self.outcome.dead_lettered += 1;
        // The stream moves on past it; a redrive re-folds the stream later.
        self.handled(stream_id, version, position);
    }

    async fn apply(
        &mut self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let applied = self.applied(event.stream_id);
        if event.version <= applied {
            self.outcome.skipped += 1;
            return Ok(());
        }
        if event.version > applied + 1 {
            self.fill(connection, event.stream_id, applied, event.version)
                .await?;
        }
        self.fold(event);
        Ok(())
    }

    /// Applies the versions between `applied` and `before` from the event store.
    async fn fill(
        &mut self,
        connection: &mut PgConnection,
        stream_id: Uuid,
        applied: i32,
        before: i32,
    ) -> Result<(), ApplyError> {
        let rows = load_between(connection, stream_id, applied, before).await?;
        let keys =
            Keyring::for_payloads(&mut *connection, rows.iter().map(|row| &row.payload)).await?;
        let opened: Vec<(StoredEventRow, Result<RecordedEvent, _>)> = rows
            .into_iter()
            .map(|row| {
                let event = RecordedEvent::open(row.clone(), &keys);
                (row, event)
            })
            .collect();
        // Their tags, opened: the stored ones may be sealed.
        let filled_tags: Vec<String> = opened
            .iter()
            .filter_map(|(_, event)| match &event.as_ref().ok()?.event {
                DomainEvent::Post(PostEvent::Created(created)) => Some(created.tags.clone()),
                DomainEvent::Post(PostEvent::Edited(edited)) => Some(edited.tags.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        self.lock_tags(connection, filled_tags).await?;
        tracing::warn!(%stream_id, applied, version = before, filled = opened.len(),
            "filling a hole in a stream from the event store");
        metrics::counter!("chronicle_projector_holes_filled_total").increment(1);
        for (row, event) in opened {
            match event {
                Ok(event) => {
                    self.fold(&event);
                    self.outcome.filled += 1;
                }
                Err(error) => self.dead_letter(
                    Letter::stored(&row, None, error.to_string()),
                    stream_id,
                    row.version,
                    row.position,
                ),
            }
        }
        Ok(())
    }

    /// Sets aside an event this build cannot read; its stream moves on when
    /// it is known which it is.
    async fn set_aside(
        &mut self,
        connection: &mut PgConnection,
        letter: &Letter,
    ) -> Result<(), ApplyError> {
        let (Some(stream_id), Some(version), Some(position)) =
            (letter.stream_id, letter.version, letter.position)
        else {
            self.letters.push(letter.clone());
            self.outcome.dead_lettered += 1;
            return Ok(());
        };
        let applied = self.applied(stream_id);
        if version <= applied {
            self.outcome.skipped += 1;
            return Ok(());
        }
        if version > applied + 1 {
            self.fill(connection, stream_id, applied, version).await?;
        }
        self.dead_letter(letter.clone(), stream_id, version, position);
        Ok(())
    }

    /// Folds one event into its row; an event its row refuses is set aside.
    fn fold(&mut self, event: &RecordedEvent) {
        let span = tracing::info_span!("projector.apply", event_type = event.event.event_type(), stream_id = %event.stream_id, version = event.version);
        chronicle_platform::trace_context::continue_from(
            &span,
            event.metadata.traceparent.as_deref(),
        );
        let _entered = span.enter();
        let id = event.stream_id;
        // Derived columns are recounted only where this event can change
        // them (what counts is a public post, a comment not deleted). A
        // refold starts from no row, so it recounts everything it touches.
        let everything = self.mode.refold;
        let result: Result<(), FoldError> = match &event.event {
            DomainEvent::User(user_event) => {
                // A fold refuses an event only when there is no row to take it.
                let row = self.users.get_mut(&id).and_then(Option::take);
                UserRow::fold(row, event, user_event).map(|row| {
                    self.users.insert(id, row);
                    match user_event {
                        UserEvent::RoleChanged(_) if !everything => {}
                        UserEvent::ProfileUpdated(_) if !everything => {
                            self.copy_authors.insert(id);
                        }
                        _ => {
                            // Registered (counts of what was projected before),
                            // deactivated (their posts leave every count).
                            self.copy_authors.insert(id);
                            self.recount_users.insert(id);
                            self.recount_tags.extend(self.author_tags.iter().cloned());
                        }
                    }
                })
            }
            DomainEvent::Post(post_event) => {
                let row = self.posts.get_mut(&id).and_then(Option::take);
                let before = row
                    .as_ref()
                    .map(|post| (post.is_public(), post.tags.clone()));
                PostRow::fold(row, event, post_event).map(|row| {
                    if let Some(post) = &row {
                        let (was_public, old_tags) = before.unwrap_or((false, Vec::new()));
                        let is_public = post.is_public();
                        let moved = was_public != is_public || (is_public && old_tags != post.tags);
                        if everything || moved {
                            self.recount_users.insert(post.author_id);
                            self.recount_tags.extend(old_tags);
                            self.recount_tags.extend(post.tags.iter().cloned());
                        }
                        // A new post is inserted with its author's fields and
                        // comments (`posts::upsert`); a refolded one is updated.
                        if everything {
                            self.copy_to_posts.insert(id);
                            self.recount_posts.insert(id);
                        }
                    }
                    self.posts.insert(id, row);
                })
            }
            DomainEvent::Comment(comment_event) => {
                let row = self.comments.get_mut(&id).and_then(Option::take);
                let counted_before = row.as_ref().is_some_and(CommentRow::counts);
                CommentRow::fold(row, event, comment_event).map(|row| {
                    if let Some(comment) = &row {
                        if everything || counted_before != comment.counts() {
                            self.recount_posts.insert(comment.post_id);
                            self.recount_users.insert(comment.author_id);
                            if let Some(parent) = comment.parent_id {
                                self.recount_comments.insert(parent);
                            }
                        }
                        if everything || matches!(comment_event, CommentEvent::Added(_)) {
                            // Replies projected before it.
                            self.recount_comments.insert(id);
                        }
                    }
                    self.comments.insert(id, row);
                })
            }
        };
        match result {
            Ok(()) => {
                if matches!(
                    &event.event,
                    DomainEvent::User(UserEvent::Registered(_))
                        | DomainEvent::Post(PostEvent::Created(_))
                ) {
                    self.created.insert(id);
                }
                self.changed.insert(id);
                self.handled(id, event.version, event.position);
                self.announced.push(AppliedEvent {
                    event_type: event.event.event_type().to_owned(),
                    stream_id: id,
                    version: event.version,
                });
                self.outcome.applied += 1;
            }
            Err(error) => {
                self.dead_letter(
                    Letter::event(event, error.to_string()),
                    id,
                    event.version,
                    event.position,
                );
            }
        }
    }

    /// Writes the changed rows, the dead letters, the derived columns, the
    /// versions; and announces, delivered if and when the transaction commits.
    async fn write(mut self, connection: &mut PgConnection) -> Result<Outcome, sqlx::Error> {
        self.release_taken_values();
        let changed = |id: &Uuid| self.changed.contains(id);
        let users: Vec<&UserRow> = self
            .users
            .iter()
            .filter(|(id, _)| changed(id))
            .filter_map(|(_, row)| row.as_ref())
            .collect();
        let posts: Vec<&PostRow> = self
            .posts
            .iter()
            .filter(|(id, _)| changed(id))
            .filter_map(|(_, row)| row.as_ref())
            .collect();
        let comments: Vec<&CommentRow> = self
            .comments
            .iter()
            .filter(|(id, _)| changed(id))
            .filter_map(|(_, row)| row.as_ref())
            .collect();
        let created_users: Vec<&UserRow> = users
            .iter()
            .filter(|row| self.created.contains(&row.id))
            .copied()
            .collect();
        users::release_handles(connection, &created_users).await?;
        let created_posts: Vec<&PostRow> = posts
            .iter()
            .filter(|row| self.created.contains(&row.id))
            .copied()
            .collect();
        posts::release_slugs(connection, &created_posts).await?;
        users::upsert(connection, &users).await?;
        posts::upsert(connection, &posts, |id| self.created.contains(&id)).await?;
        comments::upsert(connection, &comments).await?;
        for letter in &self.letters {
            dead_letters::record(connection, PROJECTION, letter).await?;
        }
        let ids = |set: &BTreeSet<Uuid>| set.iter().copied().collect::<Vec<_>>();
        posts::refresh(
            connection,
            &ids(&self.copy_authors),
            &ids(&self.copy_to_posts),
            &ids(&self.recount_posts),
        )
        .await?;
        comments::recount(connection, &ids(&self.recount_comments)).await?;
        users::recount(connection, &ids(&self.recount_users)).await?;
        let tag_names: Vec<String> = self.recount_tags.iter().cloned().collect();
        tags::recount(connection, &tag_names).await?;
        let notes = if self.mode.announce {
            // A swap replaces every table: readers must forget every row.
            let rows = self.mode.lock.then(|| self.touched());
            let announced = if self.mode.refold {
                // Not events that happened now: readers only learn the rows changed.
                let mut refolded: Vec<AppliedEvent> = self
                    .announced
                    .into_iter()
                    .map(|event| AppliedEvent {
                        event_type: "Refolded".to_owned(),
                        ..event
                    })
                    .collect();
                refolded.dedup_by_key(|event| event.stream_id);
                refolded
            } else {
                self.announced
            };
            announcement(announced, rows)
        } else {
            Vec::new()
        };
        save_versions(connection, &self.versions, &self.moved, &notes).await?;
        Ok(self.outcome)
    }

    /// A handle or slug a row created here takes from another row this
    /// batch holds (one whose erasure is not applied yet): that row gives it
    /// up in memory too, or writing it back would take it again.
    fn release_taken_values(&mut self) {
        release(&mut self.users, &self.created, |user| {
            (user.id, &mut user.handle)
        });
        release(&mut self.posts, &self.created, |post| {
            (post.id, &mut post.slug)
        });
    }

    /// The cached kinds of rows (posts, users) this batch wrote.
    fn touched(&self) -> Touched {
        let changed = |ids: &mut dyn Iterator<Item = &Uuid>| -> BTreeSet<Uuid> {
            ids.filter(|id| self.changed.contains(id))
                .copied()
                .collect()
        };
        let mut posts = changed(&mut self.posts.keys());
        posts.extend(&self.recount_posts);
        posts.extend(&self.copy_to_posts);
        let mut users = changed(&mut self.users.keys());
        users.extend(&self.recount_users);
        Touched {
            posts: posts.into_iter().collect(),
            users: users.into_iter().collect(),
            authors: self.copy_authors.iter().copied().collect(),
        }
    }
}

/// Rows not in `created` that hold a unique value (`unique`) a created row
/// holds give it up for their erased placeholder.
fn release<Row>(
    rows: &mut HashMap<Uuid, Option<Row>>,
    created: &HashSet<Uuid>,
    unique: impl Fn(&mut Row) -> (Uuid, &mut String),
) {
    let mut taken = HashSet::new();
    for row in rows.values_mut().flatten() {
        let (id, value) = unique(row);
        if created.contains(&id) {
            taken.insert(value.clone());
        }
    }
    for row in rows.values_mut().flatten() {
        let (id, value) = unique(row);
        if !created.contains(&id) && taken.contains(value.as_str()) {
            *value = read_models::erased_placeholder(id);
        }
    }
}

/// Saves the versions that moved and sends `notes` (delivered if and when
/// the transaction commits), in one statement.
async fn save_versions(
    connection: &mut PgConnection,
    versions: &HashMap<Uuid, Applied>,
    moved: &HashSet<Uuid>,
    notes: &[String],
) -> Result<(), sqlx::Error> {
    let (mut ids, mut numbers, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for (stream_id, applied) in versions.iter().filter(|(id, _)| moved.contains(id)) {
        ids.push(*stream_id);
        numbers.push(applied.version);
        positions.push(applied.position);
    }
    if ids.is_empty() && notes.is_empty() {
        return Ok(());
    }
    // A data-modifying WITH runs once whether or not it is read; the
    // notifications go out in their order (rows before events).
    sqlx::query!(
        r#"WITH saved AS (
             INSERT INTO stream_versions (stream_id, version, position)
             SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int8[])
             ON CONFLICT (stream_id) DO UPDATE
               SET version = EXCLUDED.version, position = EXCLUDED.position, applied_at = now()
               WHERE stream_versions.version < EXCLUDED.version
           )
           SELECT count(pg_notify($4, note)) AS "sent!"
           FROM (SELECT note FROM UNNEST($5::text[]) WITH ORDINALITY AS notes(note, n)
                 ORDER BY n) ordered"#,
        &ids,
        &numbers,
        &positions,
        CHANNEL,
        notes
    )
    .fetch_one(connection)
    .instrument(tracing::debug_span!("save_versions"))
    .await?;
    Ok(())
}

/// The stream's events strictly between two versions, from the event store.
async fn load_between(
    connection: &mut PgConnection,
    stream_id: Uuid,
    after: i32,
    before: i32,
) -> Result<Vec<StoredEventRow>, ApplyError> {
    let rows = sqlx::query_as!(
        StoredEventRow,
        r#"SELECT position, event_id, stream_id, stream_type, version, event_type,
                  schema_version, payload, command_id, correlation_id, causation_id,
                  actor_id, metadata, recorded_at
           FROM event_store.events
           WHERE stream_id = $1 AND version > $2 AND version < $3
           ORDER BY version"#,
        stream_id,
        after,
        before
    )
    .fetch_all(&mut *connection)
    .await?;
    if rows.len() != (before - after - 1) as usize {
        return Err(ApplyError::Hole {
            stream_id,
            applied: after,
            version: before,
        });
    }
    Ok(rows)
}

/// Tells listeners that any row may have changed (the read models were
/// replaced), delivered if and when the transaction commits.
pub async fn announce_replaced(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    announce(connection, Vec::new(), None).await
}

/// What this transaction applied, as the payloads that tell listeners
/// (query-service); none when there is nothing to say.
fn announcement(events: Vec<AppliedEvent>, rows: Option<Touched>) -> Vec<String> {
    if events.is_empty() && rows.as_ref().is_some_and(Touched::is_empty) {
        return Vec::new();
    }
    Projected {
        projection: PROJECTION.to_owned(),
        events,
        rows,
    }
    .into_payloads()
}

/// Tells listeners, delivered if and when the transaction commits.
async fn announce(
    connection: &mut PgConnection,
    events: Vec<AppliedEvent>,
    rows: Option<Touched>,
) -> Result<(), sqlx::Error> {
    for payload in announcement(events, rows) {
        sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, payload)
            .execute(&mut *connection)
            .instrument(tracing::debug_span!("announce"))
            .await?;
    }
    Ok(())
}

fn record_metrics(outcome: &Outcome) {
    let projection = PROJECTION;
    metrics::counter!("chronicle_projector_events_applied_total", "projection" => projection)
        .increment(outcome.applied as u64);
    metrics::counter!("chronicle_projector_events_skipped_total", "projection" => projection)
        .increment(outcome.skipped as u64);
}
