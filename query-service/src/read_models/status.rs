use sqlx::PgPool;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProjectionStatusRow {
    pub projection: String,
    pub state: String,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub dead_letters: i64,
    pub detail: Option<String>,
    /// Seconds since the projector last reported.
    pub silent_for: f64,
}

/// Each projection's last report, with its open dead letters.
pub async fn all(pool: &PgPool) -> Result<Vec<ProjectionStatusRow>, sqlx::Error> {
    sqlx::query_as!(
        ProjectionStatusRow,
        r#"SELECT status.projection, status.state, status.lag_events, status.lag_seconds, status.detail,
                  (SELECT count(*) FROM projector.dead_letters letters
                   WHERE letters.projection = status.projection AND letters.redriven_at IS NULL) AS "dead_letters!",
                  EXTRACT(EPOCH FROM now() - status.updated_at)::float8 AS "silent_for!"
           FROM projector.status status
           ORDER BY status.projection"#
    )
    .fetch_all(pool)
    .await
}
