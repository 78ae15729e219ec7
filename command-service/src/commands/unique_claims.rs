//! Values unique across streams (email, handle, slug). A claim is a row in
//! `event_store.unique_claims`, inserted in the same transaction as the append
//! that introduces the value, so two concurrent registrations of one handle
//! cannot both commit, and the read model is never consulted.

use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
pub enum ClaimKind {
    Email,
    Handle,
    Slug,
}

impl ClaimKind {
    fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Email => "email",
            ClaimKind::Handle => "handle",
            ClaimKind::Slug => "slug",
        }
    }
}

/// Claims `value` for `stream_id`; false when another stream holds it. A
/// concurrent uncommitted claim makes this wait for that transaction's outcome.
pub async fn claim(
    connection: &mut PgConnection,
    kind: ClaimKind,
    value: &str,
    stream_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO event_store.unique_claims (kind, value, stream_id)
           VALUES ($1, $2, $3)
           ON CONFLICT (kind, value) DO NOTHING
           RETURNING stream_id"#,
        kind.as_str(),
        value,
        stream_id
    )
    .fetch_optional(&mut *connection)
    .await?;
    if claimed.is_some() {
        return Ok(true);
    }
    // Already claimed: by this very stream is fine (e.g. a post keeping its slug).
    let holder = sqlx::query_scalar!(
        "SELECT stream_id FROM event_store.unique_claims WHERE kind = $1 AND value = $2",
        kind.as_str(),
        value
    )
    .fetch_optional(&mut *connection)
    .await?;
    Ok(holder == Some(stream_id))
}
