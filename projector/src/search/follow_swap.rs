//! A search sidecar (`PROJECTOR_ROLE=search`) rebuilds its index when the
//! read models are replaced: its documents are derived from their rows, and
//! a rebuild that corrected rows announces no post events the sidecar could
//! follow on the bus, only that every row may have changed.

use chronicle_platform::retry::Backoff;
use chronicle_schema::projected::{CHANNEL, Projected};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::read_models::PROJECTION as READ_MODELS;
use crate::rebuild::{Projection, RebuildOptions, Rebuilder};

pub async fn run(pool: PgPool, rebuilder: Rebuilder, shutdown: CancellationToken) {
    let mut backoff = Backoff::standard();
    while !shutdown.is_cancelled() {
        if let Err(error) = listen(&pool, &rebuilder, &shutdown).await {
            tracing::warn!(%error, "not hearing read-model swaps; listening again");
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}

async fn listen(
    pool: &PgPool,
    rebuilder: &Rebuilder,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            notification = listener.recv() => notification?,
        };
        let Ok(projected) = serde_json::from_str::<Projected>(notification.payload()) else {
            continue;
        };
        // A swap names no rows and no events (an older projector's batches
        // name no rows either, but always carry events).
        if projected.projection != READ_MODELS
            || projected.rows.is_some()
            || !projected.events.is_empty()
        {
            continue;
        }
        tracing::info!("the read models were replaced; rebuilding the search index from them");
        match rebuilder
            .run(Projection::Search, RebuildOptions { swap: true })
            .await
        {
            Ok(_) => tracing::info!("search index rebuilt after the read models' swap"),
            Err(error) => tracing::warn!(%error, "could not rebuild the search index"),
        }
    }
}
