//! A rebuild's load: the event store folded into `read_next`, one stream at a
//! time, in bounded memory.
//!
//! Streams are read in the store's `(stream_id, version)` index order, so a
//! stream's events arrive together and only a few batches of streams are
//! held at a time; rows go out by `COPY` in chunks, each its own short
//! transaction. Three tasks run at once: the read (Postgres and the
//! driver's decoding), the fold, and the writes (`CopyWriter`). Users come
//! first (a small read along a partial index): their rows stay in memory
//! until the end, so each post is written with its author's name and
//! standing. Posts and comments are read in descending id order: ids are
//! time-ordered (UUIDv7), a comment is created after its post and a reply
//! after its comment, so a post's comments, and a comment's replies, have
//! all been counted when it is written. The rare one that arrives after
//! (ids from another clock) is recounted in SQL at the end. What the live
//! path recounts in SQL is counted here in memory, by the same rules
//! (`PostRow::is_public`, `CommentRow::counts`): a property test keeps the two
//! equal.

use chronicle_schema::events::StoredEventRow;
use chronicle_schema::privacy::Keyring;
use chronicle_schema::read_models::comments::{self, CommentRow};
use chronicle_schema::read_models::posts::{self, Author, PostRow};
use chronicle_schema::read_models::users::{self, UserRow};
use chronicle_schema::{DomainEvent, RecordedEvent};
use foldhash::{HashMap, HashMapExt, HashSet};
use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy::{Copier, CopyWriter, Line, comment_line, post_line, user_line};
use super::{RebuildError, Tracker, in_the_background};
use crate::dead_letters::Letter;

/// Rows whose counts arrived after they were written, to recount in SQL.
#[derive(Default)]
pub struct Late {
    pub posts: Vec<Uuid>,
    pub comments: Vec<Uuid>,
}

/// What the load wrote and set aside.
#[derive(Default)]
pub struct Loaded {
    pub events: u64,
    pub letters: Vec<Letter>,
    pub late: Late,
}

const SELECT: &str = "SELECT position, event_id, stream_id, stream_type, version, event_type, \
     schema_version, payload, command_id, correlation_id, causation_id, actor_id, metadata, \
     recorded_at FROM event_store.events";

/// Events a reader's message holds (whole streams), so the fold is woken
/// per batch, not per stream.
const READ_BATCH_EVENTS: usize = 1_000;
/// Batches read ahead of the fold.
const BATCHES_IN_FLIGHT: usize = 8;

/// Streams, each whole and in version order.
type Streams = Vec<Vec<StoredEventRow>>;

/// One stream's events folded into its row; what the stream could not take
/// is set aside, and the stream moves on past it (as live).
struct Folded<Row> {
    row: Option<Row>,
    last: (i32, i64),
}

fn fold_stream<Row>(
    events: Vec<StoredEventRow>,
    keys: &Keyring,
    letters: &mut Vec<Letter>,
    mut fold: impl FnMut(
        Option<Row>,
        &RecordedEvent,
    ) -> Result<Option<Row>, chronicle_schema::read_models::FoldError>,
) -> Folded<Row> {
    let mut row = None;
    let mut last = (0, 0);
    for stored in events {
        last = (stored.version, stored.position);
        let mut letter = Letter::stored(&stored, None, String::new());
        match RecordedEvent::open(stored, keys) {
            // A fold refuses an event only when there is no row to take it.
            Ok(event) => match fold(row.take(), &event) {
                Ok(next) => row = next,
                Err(error) => letters.push(Letter::event(&event, error.to_string())),
            },
            Err(error) => {
                letter.error = error.to_string();
                letters.push(letter);
            }
        }
    }
    Folded { row, last }
}

fn fold_user(
    row: Option<UserRow>,
    event: &RecordedEvent,
) -> Result<Option<UserRow>, chronicle_schema::read_models::FoldError> {
    match &event.event {
        DomainEvent::User(user) => UserRow::fold(row, event, user),
        _ => Ok(row),
    }
}

/// Reads the store below `horizon`, so Postgres reads and the driver
/// decodes while the fold runs: users' streams first (a small read along a
/// partial index), then the others in descending id order. Answers the
/// connection when all is sent (or the fold stopped listening).
async fn read_streams(
    mut reader: PgConnection,
    horizon: String,
    sender: tokio::sync::mpsc::Sender<Result<Streams, sqlx::Error>>,
) -> Result<PgConnection, RebuildError> {
    let queries = [
        format!(
            "{SELECT} WHERE stream_type = 'user' AND transaction_id < $1::text::xid8 \
                 ORDER BY stream_id, version"
        ),
        // Descending: a stream's versions come newest first, and are reversed.
        format!(
            "{SELECT} WHERE stream_type <> 'user' AND transaction_id < $1::text::xid8 \
                 ORDER BY stream_id DESC, version DESC"
        ),
    ];
    for (query, descending) in queries.into_iter().zip([false, true]) {
        let mut rows = sqlx::query_as::<_, StoredEventRow>(sqlx::AssertSqlSafe(query))
            .bind(&horizon)
            .fetch(&mut reader);
        let mut batch: Streams = Vec::new();
        let mut events = 0;
        let mut stream: Vec<StoredEventRow> = Vec::new();
        loop {
            let next = match rows.try_next().await {
                Ok(next) => next,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    drop(rows);
                    return Ok(reader);
                }
            };
            let ends_stream = match (&next, stream.first()) {
                (Some(row), Some(first)) => row.stream_id != first.stream_id,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if ends_stream {
                let mut whole = std::mem::take(&mut stream);
                if descending {
                    whole.reverse();
                }
                events += whole.len();
                batch.push(whole);
            }
            if events >= READ_BATCH_EVENTS || (next.is_none() && !batch.is_empty()) {
                events = 0;
                if sender.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                    // The fold stopped; its error is the one to report.
                    drop(rows);
                    return Ok(reader);
                }
            }
            match next {
                Some(row) => stream.push(row),
                None => break,
            }
        }
    }
    Ok(reader)
}

/// Folds the store below `horizon` into `read_next` (the writer's search
/// path); answers what it set aside, and the two connections.
pub async fn load(
    mut reader: PgConnection,
    writer: PgConnection,
    horizon: &str,
    tracker: &Tracker,
) -> Result<(Loaded, PgConnection, PgConnection), RebuildError> {
    // Everyone's keys, read after the horizon was: a key is stored before
    // the first event sealed with it commits. An erasure after this is
    // caught up with after the load, as live.
    let keys = Keyring::all(&mut reader).await?;
    let writer = CopyWriter::spawn(writer);
    let (sender, batches) = tokio::sync::mpsc::channel(BATCHES_IN_FLIGHT);
    let reading = tokio::spawn(in_the_background(read_streams(
        reader,
        horizon.to_owned(),
        sender,
    )));
    let (loaded, writer) = in_the_background(fold(keys, batches, writer, tracker.clone())).await?;
    let reader = reading.await??;
    let writer = writer.finish().await?;
    Ok((loaded, reader, writer))
}

async fn fold(
    keys: Keyring,
    mut batches: tokio::sync::mpsc::Receiver<Result<Streams, sqlx::Error>>,
    mut writer: CopyWriter,
    tracker: Tracker,
) -> Result<(Loaded, CopyWriter), RebuildError> {
    let mut loaded = Loaded::default();
    let mut versions = Copier::new("stream_versions", "stream_id, version, position");
    let mut post_copier = Copier::new("posts", posts::COLUMNS);
    let mut comment_copier = Copier::new("comments", comments::COLUMNS);
    // Users: kept until the end, when their counts are known. Every user
    // stream arrives before any other.
    let mut users: HashMap<Uuid, UserRow> = HashMap::new();
    let mut counts = Counts::default();
    let mut since_report = 0u64;
    while let Some(batch) = batches.recv().await {
        for events in batch? {
            let count = events.len() as u64;
            loaded.events += count;
            since_report += count;
            let id = events[0].stream_id;
            let last =
                match events[0].stream_type.as_str() {
                    "user" => {
                        let folded = fold_stream(events, &keys, &mut loaded.letters, fold_user);
                        if let Some(user) = folded.row {
                            users.insert(id, user);
                        }
                        folded.last
                    }
                    "post" => {
                        let folded =
                            fold_stream(events, &keys, &mut loaded.letters, |row, event| {
                                match &event.event {
                                    DomainEvent::Post(post) => PostRow::fold(row, event, post),
                                    _ => Ok(row),
                                }
                            });
                        if let Some(mut post) = folded.row {
                            counts.post(&mut post, &users);
                            post_copier.push(&mut writer, post_line(&post)).await?;
                        }
                        folded.last
                    }
                    _ => {
                        let folded =
                            fold_stream(events, &keys, &mut loaded.letters, |row, event| {
                                match &event.event {
                                    DomainEvent::Comment(comment) => {
                                        CommentRow::fold(row, event, comment)
                                    }
                                    _ => Ok(row),
                                }
                            });
                        if let Some(mut comment) = folded.row {
                            counts.comment(&mut comment);
                            comment_copier
                                .push(&mut writer, comment_line(&comment))
                                .await?;
                        }
                        folded.last
                    }
                };
            versions.push(&mut writer, version_line(id, last)).await?;
        }
        if since_report >= 10_000 {
            tracker.processed(since_report);
            since_report = 0;
        }
    }
    tracker.processed(since_report);
    post_copier.flush(&mut writer).await?;
    comment_copier.flush(&mut writer).await?;

    let mut user_copier = Copier::new("users", users::COLUMNS);
    for mut user in users.into_values() {
        user.post_count = counts.posts_by_author.get(&user.id).copied().unwrap_or(0);
        user.comment_count = counts
            .comments_by_author
            .get(&user.id)
            .copied()
            .unwrap_or(0);
        user_copier.push(&mut writer, user_line(&user)).await?;
    }
    user_copier.flush(&mut writer).await?;
    let mut tag_copier = Copier::new("tags", "name, post_count");
    for (name, count) in &counts.posts_by_tag {
        tag_copier
            .push(&mut writer, Line::default().text(name).integer(*count))
            .await?;
    }
    tag_copier.flush(&mut writer).await?;
    versions.flush(&mut writer).await?;
    loaded.late = Late {
        posts: counts.late_posts.into_iter().collect(),
        comments: counts.late_parents.into_iter().collect(),
    };
    Ok((loaded, writer))
}

fn version_line(id: Uuid, (version, position): (i32, i64)) -> Line {
    Line::default().uuid(id).integer(version).bigint(position)
}

/// The derived columns, counted as rows are written.
#[derive(Default)]
struct Counts {
    posts_by_author: HashMap<Uuid, i32>,
    comments_by_author: HashMap<Uuid, i32>,
    posts_by_tag: HashMap<String, i32>,
    /// Comments counted for posts not written yet.
    pending_by_post: HashMap<Uuid, i32>,
    /// Replies counted for comments not written yet.
    pending_by_parent: HashMap<Uuid, i32>,
    written_posts: HashSet<Uuid>,
    written_comments: HashSet<Uuid>,
    late_posts: HashSet<Uuid>,
    late_parents: HashSet<Uuid>,
}

impl Counts {
    fn post(&mut self, post: &mut PostRow, users: &HashMap<Uuid, UserRow>) {
        let author = users.get(&post.author_id).map(|user| Author {
            display_name: user.display_name.clone(),
            active: user.active,
        });
        post.copy_author(author.as_ref());
        post.comment_count = self.pending_by_post.remove(&post.id).unwrap_or(0);
        self.written_posts.insert(post.id);
        if post.is_public() {
            *self.posts_by_author.entry(post.author_id).or_default() += 1;
            for tag in post.distinct_tags() {
                *self.posts_by_tag.entry(tag.clone()).or_default() += 1;
            }
        }
    }

    fn comment(&mut self, comment: &mut CommentRow) {
        comment.reply_count = self.pending_by_parent.remove(&comment.id).unwrap_or(0);
        self.written_comments.insert(comment.id);
        if !comment.counts() {
            return;
        }
        *self
            .comments_by_author
            .entry(comment.author_id)
            .or_default() += 1;
        if self.written_posts.contains(&comment.post_id) {
            self.late_posts.insert(comment.post_id);
        } else {
            *self.pending_by_post.entry(comment.post_id).or_default() += 1;
        }
        if let Some(parent) = comment.parent_id {
            if self.written_comments.contains(&parent) {
                self.late_parents.insert(parent);
            } else {
                *self.pending_by_parent.entry(parent).or_default() += 1;
            }
        }
    }
}
