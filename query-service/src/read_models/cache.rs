//! Post and user rows kept in memory, so the hottest reads (a post, its
//! author) cost no database round trip.
//!
//! The projector is the only writer of these rows and announces every batch it
//! commits, so the cache is exact within that announcement's delivery:
//! - every read-model announcement empties it, and so does every consistency
//!   wait that ends (read-your-writes never meets a row older than the write);
//! - while announcements are not being received (listener down), it is off;
//! - a row is only kept if nothing emptied the cache since its query began
//!   (the generation check), so a slow query cannot put back a stale row.
//!
//! Emptying it whole rather than per row keeps it obviously right: a comment
//! changes its post's count, a rename every post of the author.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::posts::PostRow;
use super::users::UserRow;

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
        self.keep(taken, |inner| &mut inner.posts, rows, |row| row.id);
    }

    pub fn keep_users<'a>(&self, taken: Generation, rows: impl IntoIterator<Item = &'a UserRow>) {
        self.keep(taken, |inner| &mut inner.users, rows, |row| row.id);
    }

    /// Forgets every row: the read models changed.
    pub fn invalidate(&self) {
        self.write().forget();
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
        if !inner.enabled || inner.generation != taken {
            return;
        }
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
