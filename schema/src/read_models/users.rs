//! `users`: a profile per user, with their published post and comment counts.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{FoldError, column};
use crate::RecordedEvent;
use crate::events::UserEvent;
use crate::role::Role;

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub handle: String,
    pub display_name: String,
    pub bio: Option<String>,
    pub email: String,
    pub role: Role,
    pub active: bool,
    /// Derived: their public posts (`posts::PostRow::is_public`).
    pub post_count: i32,
    /// Derived: their comments and replies that are not deleted.
    pub comment_count: i32,
    pub joined_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i32,
}

pub const COLUMNS: &str = "id, handle, display_name, bio, email, role, active, post_count, \
     comment_count, joined_at, updated_at, version";

/// The rows of people not erased, as SQL (`UserRow::is_erased` in Rust).
pub const NOT_ERASED: &str = "handle NOT LIKE '~%'";

impl UserRow {
    /// The row after one event of the user's stream.
    pub fn fold(
        row: Option<UserRow>,
        recorded: &RecordedEvent,
        event: &UserEvent,
    ) -> Result<Option<UserRow>, FoldError> {
        let at = recorded.recorded_at;
        let version = recorded.version;
        let erase = recorded.erased || matches!(event, UserEvent::Erased(_));
        if let UserEvent::Registered(registered) = event {
            let mut user = UserRow {
                id: recorded.stream_id,
                handle: registered.handle.clone(),
                display_name: registered.display_name.clone(),
                bio: None,
                email: registered.email.clone(),
                role: registered.role,
                active: true,
                post_count: 0,
                comment_count: 0,
                joined_at: at,
                updated_at: at,
                version,
            };
            if erase {
                user.erase();
            }
            return Ok(Some(user));
        }
        let Some(mut user) = row else {
            return Err(FoldError {
                event_type: event.event_type(),
                what: "user",
                id: recorded.stream_id,
            });
        };
        match event {
            UserEvent::Registered(_) => unreachable!("handled above"),
            UserEvent::ProfileUpdated(profile) => {
                user.display_name.clone_from(&profile.display_name);
                user.bio.clone_from(&profile.bio);
            }
            UserEvent::RoleChanged(changed) => user.role = changed.role,
            UserEvent::Deactivated(_) => user.active = false,
            UserEvent::Erased(_) => {}
        }
        if erase {
            user.erase();
        }
        user.updated_at = at;
        user.version = version;
        Ok(Some(user))
    }

    /// Forgets everything personal: what is left is an inactive account
    /// that only its id names (the handle placeholder cannot be registered).
    pub fn erase(&mut self) {
        self.handle = super::erased_placeholder(self.id);
        self.display_name.clear();
        self.bio = None;
        self.email.clear();
        self.active = false;
    }

    /// Whether the person was erased (in SQL: not [`NOT_ERASED`]).
    pub fn is_erased(&self) -> bool {
        self.handle.starts_with('~')
    }
}

pub async fn by_ids(
    executor: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<UserRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, handle, display_name, bio, email, role AS "role: Role", active, post_count,
                  comment_count, joined_at, updated_at, version
           FROM users WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(executor)
    .await
}

/// Writes the rows' own columns (the derived ones only when inserting).
pub async fn upsert(connection: &mut PgConnection, rows: &[&UserRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"INSERT INTO users (id, handle, display_name, bio, email, role, active, post_count,
                              comment_count, joined_at, updated_at, version)
           SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                $7::bool[], $8::int4[], $9::int4[], $10::timestamptz[],
                                $11::timestamptz[], $12::int4[])
           ON CONFLICT (id) DO UPDATE
             SET handle = EXCLUDED.handle, display_name = EXCLUDED.display_name, bio = EXCLUDED.bio,
                 email = EXCLUDED.email, role = EXCLUDED.role, active = EXCLUDED.active,
                 joined_at = EXCLUDED.joined_at, updated_at = EXCLUDED.updated_at,
                 version = EXCLUDED.version"#,
        &column(rows, |row| row.id),
        &column(rows, |row| row.handle.clone()),
        &column(rows, |row| row.display_name.clone()),
        &column(rows, |row| row.bio.clone()) as &[Option<String>],
        &column(rows, |row| row.email.clone()),
        &column(rows, |row| row.role.as_str().to_owned()),
        &column(rows, |row| row.active),
        &column(rows, |row| row.post_count),
        &column(rows, |row| row.comment_count),
        &column(rows, |row| row.joined_at),
        &column(rows, |row| row.updated_at),
        &column(rows, |row| row.version),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Before new users are written: a handle they take that a row of someone
/// else still holds was freed by that person's erasure (the command side
/// claims handles uniquely), whose `UserErased` is not applied yet (it may
/// travel on another partition). That row gives it up now, as `erase`
/// will; a replay never meets this (the row is erased from the start).
pub async fn release_handles(
    connection: &mut PgConnection,
    rows: &[&UserRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE users SET handle = '~' || replace(id::text, '-', '')
           WHERE handle = ANY($1) AND NOT (id = ANY($2))"#,
        &column(rows, |row| row.handle.clone()),
        &column(rows, |row| row.id),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Recounts the derived columns of these users from the rows they count.
pub async fn recount(connection: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"UPDATE users u SET post_count = counted.posts, comment_count = counted.comments
           FROM (
             SELECT id,
                    (SELECT count(*) FROM posts WHERE author_id = ids.id AND public)::int AS posts,
                    (SELECT count(*) FROM comments WHERE author_id = ids.id AND NOT deleted)::int AS comments
             FROM UNNEST($1::uuid[]) AS ids(id)
           ) counted
           -- Restated on `u`: without it the planner hashes the whole table.
           WHERE u.id = ANY($1) AND u.id = counted.id
             AND (u.post_count, u.comment_count) IS DISTINCT FROM (counted.posts, counted.comments)"#,
        ids
    )
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{UserDeactivated, UserProfileUpdated, UserRegistered, UserRoleChanged};
    use crate::read_models::tests::recorded;

    fn registered() -> UserEvent {
        UserEvent::Registered(UserRegistered {
            email: "ada@example.com".into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            role: Role::User,
        })
    }

    #[test]
    fn a_profile_is_registered_renamed_promoted_and_deactivated() {
        let id = Uuid::from_u128(1);
        let mut row = None;
        let events = [
            registered(),
            UserEvent::ProfileUpdated(UserProfileUpdated {
                display_name: "Ada L.".into(),
                bio: Some("Analyst".into()),
            }),
            UserEvent::RoleChanged(UserRoleChanged {
                role: Role::Moderator,
            }),
            UserEvent::Deactivated(UserDeactivated {}),
        ];
        for (index, event) in events.iter().enumerate() {
            let at = recorded(id, index as i32 + 1, event.clone().into());
            row = UserRow::fold(row, &at, event).unwrap();
        }
        let user = row.unwrap();
        assert_eq!(
            (user.display_name.as_str(), user.bio.as_deref()),
            ("Ada L.", Some("Analyst"))
        );
        assert_eq!(
            (user.role, user.active, user.version),
            (Role::Moderator, false, 4)
        );
        assert!(user.updated_at > user.joined_at);
    }

    #[test]
    fn a_change_to_a_user_never_registered_is_refused() {
        let event = UserEvent::Deactivated(UserDeactivated {});
        let error = UserRow::fold(
            None,
            &recorded(Uuid::nil(), 1, event.clone().into()),
            &event,
        )
        .unwrap_err();
        assert_eq!(error.what, "user");
    }
}
