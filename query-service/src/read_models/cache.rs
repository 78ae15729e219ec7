//! Post and user rows kept in memory, so the hottest reads (a post, its
//! author) cost no database round trip.
//!
//! The projector is the only writer of these rows and announces every batch it
//! commits, naming the rows it wrote (derived ones included: a comment
//! recounts its post, a rename rewrites every post of the author). So the
//! cache is exact within that announcement's delivery:
//! - an announcement drops the rows it names; one that names none (a
//!   rebuild's swap) empties the cache, and so does every consistency wait
//!   that ends before its announcement arrived (read-your-writes never meets
//!   a row older than the write);
//! - while announcements are not being received (listener down), it is off;
//! - a row is only kept if nothing dropped it since its query began (the
//!   generation check against the recent announcements), so a slow query
//!   cannot put back a stale row.
//!
//! Dropping per row keeps hot rows cached under writes elsewhere, on every
//! replica at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use chronicle_schema::projected::Touched;
use uuid::Uuid;

use super::posts::PostRow;
use super::users::UserRow;

/// Announcements remembered for the generation check; a query that began
/// before the oldest of them keeps nothing.
const RECENT: usize = 256;

#[derive(Clone)]
pub struct RowCache {
    inner: Arc<RwLock<Inner>>,
    capacity: usize,
}

struct Inner {
    generation: u64,
    enabled: bool,
    posts: HashMap<Uuid, PostRow>,
    users: HashMap<Uuid, UserRow>,
    /// The rows each generation since the last emptying dropped, oldest first.
    recent: VecDeque<(u64, Dropped)>,
}

/// Rows one announcement dropped, as sets.
#[derive(Default)]
struct Dropped {
    posts: HashSet<Uuid>,
    users: HashSet<Uuid>,
    authors: HashSet<Uuid>,
}

impl Dropped {
    fn post(&self, row: &PostRow) -> bool {
        self.posts.contains(&row.id) || self.authors.contains(&row.author_id)
    }

    fn user(&self, row: &UserRow) -> bool {
        self.users.contains(&row.id)
    }
}

/// Taken before a query; a row is kept only if it is still current after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(Option<u64>);

impl RowCache {
    /// Holds at most `capacity` posts and as many users; off until enabled.
    pub fn new(capacity: usize) -> RowCache {
        RowCache {
            inner: Arc::new(RwLock::new(Inner {
                generation: 0,
                enabled: false,
                posts: HashMap::new(),
                users: HashMap::new(),
                recent: VecDeque::new(),
            })),
            capacity,
        }
    }

    pub fn generation(&self) -> Generation {
        let inner = self.read();
        Generation(inner.enabled.then_some(inner.generation))
    }

    pub fn posts(&self, ids: &[Uuid]) -> HashMap<Uuid, PostRow> {
        let inner = self.read();
        cached(inner.enabled, &inner.posts, ids)
    }

    pub fn users(&self, ids: &[Uuid]) -> HashMap<Uuid, UserRow> {
        let inner = self.read();
        cached(inner.enabled, &inner.users, ids)
    }

    pub fn keep_posts<'a>(&self, taken: Generation, rows: impl IntoIterator<Item = &'a PostRow>) {
        self.keep(
            taken,
            |inner| &mut inner.posts,
            rows,
            |row| row.id,
            Dropped::post,
        );
    }

    pub fn keep_users<'a>(&self, taken: Generation, rows: impl IntoIterator<Item = &'a UserRow>) {
        self.keep(
            taken,
            |inner| &mut inner.users,
            rows,
            |row| row.id,
            Dropped::user,
        );
    }

    /// Forgets every row: any of them may have changed.
    pub fn invalidate(&self) {
        self.write().forget();
    }

    /// Forgets the rows a batch wrote.
    pub fn invalidate_rows(&self, touched: &Touched) {
        let dropped = Dropped {
            posts: touched.posts.iter().copied().collect(),
            users: touched.users.iter().copied().collect(),
            authors: touched.authors.iter().copied().collect(),
        };
        let mut inner = self.write();
        inner.generation += 1;
        inner.posts.retain(|_, row| !dropped.post(row));
        inner.users.retain(|_, row| !dropped.user(row));
        let generation = inner.generation;
        inner.recent.push_back((generation, dropped));
        if inner.recent.len() > RECENT {
            inner.recent.pop_front();
        }
    }

    /// On while announcements arrive, off (and empty) while they may be missed.
    pub fn set_enabled(&self, enabled: bool) {
        // One lock: no row read before this may be kept after it.
        let mut inner = self.write();
        inner.forget();
        inner.enabled = enabled;
    }

    fn keep<'a, K, V>(
        &self,
        taken: Generation,
        map: impl Fn(&mut Inner) -> &mut HashMap<K, V>,
        rows: impl IntoIterator<Item = &'a V>,
        key: impl Fn(&V) -> K,
        dropped: impl Fn(&Dropped, &V) -> bool,
    ) where
        K: Eq + Hash,
        V: Clone + 'a,
    {
        let Generation(Some(taken)) = taken else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.write();
        if !inner.enabled || taken > inner.generation {
            return;
        }
        // Every announcement since the query began must be known, to tell
        // whether it dropped a row the query read.
        let since: Vec<&Dropped> = inner
            .recent
            .iter()
            .filter(|(generation, _)| *generation > taken)
            .map(|(_, dropped)| dropped)
            .collect();
        if since.len() as u64 != inner.generation - taken {
            return;
        }
        let rows: Vec<&V> = rows
            .into_iter()
            .filter(|row| !since.iter().any(|announced| dropped(announced, row)))
            .collect();
        let capacity = self.capacity;
        let map = map(&mut inner);
        for row in rows {
            // Full: start over rather than track recency; the hot rows return at once.
            if map.len() >= capacity {
                map.clear();
            }
            map.insert(key(row), row.clone());
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("never poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("never poisoned")
    }
}

impl Inner {
    fn forget(&mut self) {
        self.generation += 1;
        self.posts.clear();
        self.users.clear();
        self.recent.clear();
    }
}

fn cached<V: Clone>(enabled: bool, map: &HashMap<Uuid, V>, ids: &[Uuid]) -> HashMap<Uuid, V> {
    if !enabled {
        return HashMap::new();
    }
    ids.iter()
        .filter_map(|id| map.get(id).map(|row| (*id, row.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::super::posts::PostStatus;
    use super::*;

    fn user(name: &str) -> UserRow {
        UserRow {
            id: Uuid::from_u128(1),
            handle: name.to_owned(),
            display_name: name.to_owned(),
            bio: None,
            email: format!("{name}@example.com"),
            role: chronicle_schema::Role::User,
            active: true,
            post_count: 0,
            comment_count: 0,
            joined_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
        }
    }

    fn enabled() -> RowCache {
        let cache = RowCache::new(10);
        cache.set_enabled(true);
        cache
    }

    #[test]
    fn a_kept_row_is_served_until_the_read_models_change() {
        let cache = enabled();
        let row = user("ada");
        cache.keep_users(cache.generation(), [&row]);
        assert_eq!(cache.users(&[row.id])[&row.id].handle, "ada");
        cache.invalidate();
        assert!(cache.users(&[row.id]).is_empty());
    }

    #[test]
    fn a_row_read_before_a_change_is_not_kept_after_it() {
        let cache = enabled();
        let taken = cache.generation();
        cache.invalidate(); // the projector committed while the query ran
        cache.keep_users(taken, [&user("stale")]);
        assert!(cache.users(&[Uuid::from_u128(1)]).is_empty());
    }

    #[test]
    fn nothing_is_kept_while_announcements_may_be_missed() {
        let cache = RowCache::new(10);
        cache.keep_users(cache.generation(), [&user("ada")]);
        assert!(cache.users(&[Uuid::from_u128(1)]).is_empty());
        let cache = enabled();
        let taken = cache.generation();
        cache.set_enabled(false);
        cache.set_enabled(true);
        cache.keep_users(taken, [&user("ada")]);
        assert!(cache.users(&[Uuid::from_u128(1)]).is_empty());
    }

    fn post(id: u128, author: Uuid) -> PostRow {
        PostRow {
            id: Uuid::from_u128(id),
            slug: format!("post-{id}"),
            title: "a post".to_owned(),
            body: "its body".to_owned(),
            excerpt: "its body".to_owned(),
            status: PostStatus::Published,
            deleted: false,
            author_active: true,
            tags: Vec::new(),
            author_id: author,
            author_handle: "ada".to_owned(),
            author_display_name: "Ada".to_owned(),
            comment_count: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            published_at: Some(Utc::now()),
            version: 2,
            images: Default::default(),
        }
    }

    #[test]
    fn an_announcement_drops_only_the_rows_it_names() {
        let cache = enabled();
        let (ada, bob) = (
            user("ada"),
            UserRow {
                id: Uuid::from_u128(2),
                ..user("bob")
            },
        );
        cache.keep_users(cache.generation(), [&ada, &bob]);
        let (by_ada, by_bob) = (post(10, ada.id), post(11, bob.id));
        cache.keep_posts(cache.generation(), [&by_ada, &by_bob]);

        cache.invalidate_rows(&Touched {
            users: vec![ada.id],
            ..Touched::default()
        });
        assert!(cache.users(&[ada.id]).is_empty());
        assert_eq!(cache.users(&[bob.id]).len(), 1);
        assert_eq!(cache.posts(&[by_ada.id, by_bob.id]).len(), 2);

        // A rename rewrites every post of its author.
        cache.invalidate_rows(&Touched {
            authors: vec![bob.id],
            ..Touched::default()
        });
        assert_eq!(
            cache
                .posts(&[by_ada.id, by_bob.id])
                .keys()
                .collect::<Vec<_>>(),
            [&by_ada.id]
        );
    }

    #[test]
    fn a_row_dropped_while_its_query_ran_is_not_kept_and_the_others_are() {
        let cache = enabled();
        let taken = cache.generation();
        let (ada, bob) = (
            user("ada"),
            UserRow {
                id: Uuid::from_u128(2),
                ..user("bob")
            },
        );
        cache.invalidate_rows(&Touched {
            users: vec![ada.id],
            ..Touched::default()
        });
        cache.keep_users(taken, [&ada, &bob]);
        assert!(cache.users(&[ada.id]).is_empty());
        assert_eq!(cache.users(&[bob.id]).len(), 1);
    }

    #[test]
    fn a_query_older_than_the_remembered_announcements_keeps_nothing() {
        let cache = enabled();
        let taken = cache.generation();
        for _ in 0..=RECENT {
            cache.invalidate_rows(&Touched {
                users: vec![Uuid::now_v7()],
                ..Touched::default()
            });
        }
        cache.keep_users(taken, [&user("ada")]);
        assert!(cache.users(&[Uuid::from_u128(1)]).is_empty());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = RowCache::new(2);
        cache.set_enabled(true);
        let rows: Vec<UserRow> = (0..3u128)
            .map(|n| UserRow {
                id: Uuid::from_u128(n),
                ..user("ada")
            })
            .collect();
        cache.keep_users(cache.generation(), &rows);
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        assert_eq!(cache.users(&ids).len(), 1);
    }
}
