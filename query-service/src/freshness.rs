//! How fresh each projection is, for every response's `extensions.freshness`:
//! kept in memory from what the projector reports every second, so telling a
//! client costs the request nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::read_models::status;

const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Projection {
    pub state: String,
    pub lag_events: i64,
    pub lag_seconds: f64,
}

#[derive(Clone, Default)]
pub struct Freshness {
    projections: Arc<RwLock<BTreeMap<String, Projection>>>,
}

impl Freshness {
    /// Starts refreshing in the background.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Freshness {
        let freshness = Freshness::default();
        let projections = freshness.projections.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(REFRESH);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                if let Ok(rows) = status::all(&pool).await {
                    let latest = rows
                        .into_iter()
                        .map(|row| {
                            (
                                row.projection,
                                Projection {
                                    state: row.state,
                                    lag_events: row.lag_events,
                                    lag_seconds: row.lag_seconds,
                                },
                            )
                        })
                        .collect();
                    *projections.write().expect("never poisoned") = latest;
                }
            }
        });
        freshness
    }

    pub fn of(&self, projection: &str) -> Option<Projection> {
        self.projections
            .read()
            .expect("never poisoned")
            .get(projection)
            .cloned()
    }
}
