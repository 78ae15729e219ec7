//! Aggregates this instance has read, at the version it read them.
//!
//! A decision made on a cached aggregate is checked where it is appended: the
//! append statement compares every stream the decision read with its version
//! in the store, and answers `stale` if another instance (or command) moved
//! it on. The entry is then dropped and the decision made again on the
//! store's state. So a cache can be behind, never wrong; and most commands
//! (an author's next post) need no read before their one statement.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::aggregates::{Comment, Post, User};

/// Entries kept per aggregate type before the map starts over.
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct AggregateCache {
    users: Mutex<HashMap<Uuid, (i32, User)>>,
    posts: Mutex<HashMap<Uuid, (i32, Post)>>,
    comments: Mutex<HashMap<Uuid, (i32, Comment)>>,
}

/// An aggregate type the cache holds.
pub trait Cached: Clone + Sized {
    fn map(cache: &AggregateCache) -> &Mutex<HashMap<Uuid, (i32, Self)>>;
}

impl Cached for User {
    fn map(cache: &AggregateCache) -> &Mutex<HashMap<Uuid, (i32, User)>> {
        &cache.users
    }
}

impl Cached for Post {
    fn map(cache: &AggregateCache) -> &Mutex<HashMap<Uuid, (i32, Post)>> {
        &cache.posts
    }
}

impl Cached for Comment {
    fn map(cache: &AggregateCache) -> &Mutex<HashMap<Uuid, (i32, Comment)>> {
        &cache.comments
    }
}

impl AggregateCache {
    pub fn get<A: Cached>(&self, id: Uuid) -> Option<(i32, A)> {
        A::map(self)
            .lock()
            .expect("never poisoned")
            .get(&id)
            .cloned()
    }

    pub fn keep<A: Cached>(&self, id: Uuid, version: i32, state: &A) {
        let mut map = A::map(self).lock().expect("never poisoned");
        if map.len() >= CAPACITY {
            map.clear();
        }
        // Never replace a newer entry with an older read.
        if map.get(&id).is_none_or(|(kept, _)| *kept <= version) {
            map.insert(id, (version, state.clone()));
        }
    }

    /// Forgets a stream, of whatever type.
    pub fn forget(&self, id: Uuid) {
        self.users.lock().expect("never poisoned").remove(&id);
        self.posts.lock().expect("never poisoned").remove(&id);
        self.comments.lock().expect("never poisoned").remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregates::Aggregate;

    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let cache = AggregateCache::default();
        let id = Uuid::from_u128(1);
        let user = User::new(id);
        cache.keep(id, 3, &user);
        cache.keep(id, 2, &user);
        assert_eq!(cache.get::<User>(id).unwrap().0, 3);
        cache.forget(id);
        assert!(cache.get::<User>(id).is_none());
    }
}
