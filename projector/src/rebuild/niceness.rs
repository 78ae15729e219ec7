//! A rebuild runs at a lower CPU priority than the live path.
//!
//! A rebuild keeps two cores busy; the live path (the projector's own
//! runtime, the relay, Kafka, the command-service's appends) must win
//! whenever it has something to do, or every write's visibility waits
//! behind the replay. The rebuild's own work runs on threads of its own at
//! a higher niceness; so do its Postgres backends, when Postgres runs on
//! this host and lets us (as the `pg_prioritize` extension would): the
//! store read, the COPY and the index builds are most of a rebuild's CPU.

use sqlx::PgConnection;

use super::RebuildError;

/// `nice` of the rebuild's work (0 is the default, 19 the lowest).
const BACKGROUND_NICENESS: i32 = 10;

/// Runs `work` on a thread of its own at the background niceness (a
/// rebuild's read, its fold and the search rebuild each get one).
pub(crate) async fn in_the_background<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, RebuildError>> + Send + 'static,
) -> Result<T, RebuildError> {
    let runtime = tokio::runtime::Handle::current();
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rebuild-fold".to_owned())
        .spawn(move || {
            // On Linux a thread has its own niceness: no pid names this one.
            if let Err(error) = rustix::process::setpriority_process(None, BACKGROUND_NICENESS) {
                tracing::debug!(%error, "the rebuild runs at normal priority");
            }
            let _ = done.send(runtime.block_on(work));
        })?;
    outcome.await.map_err(|_| RebuildError::FoldStopped)?
}

/// Lowers the priority of `connection`'s backend, when it is a process of
/// this host that we may renice; otherwise (Postgres elsewhere, or another
/// user's and no privilege) nothing changes. The backend stays so until
/// the connection closes.
pub(crate) async fn to_background(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let (pid, client_port): (i32, Option<i32>) =
        sqlx::query_as("SELECT pg_backend_pid(), inet_client_port()")
            .fetch_one(connection)
            .await?;
    // A pid names a process of the database's host: it is this connection's
    // backend only if that process says so. Its title names the client
    // ("127.0.0.1(54321)", or "[local]" over a Unix socket).
    let Ok(title) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return Ok(());
    };
    let title = String::from_utf8_lossy(&title);
    let client = match client_port {
        Some(port) => format!("({port})"),
        None => "[local]".to_owned(),
    };
    if !title.starts_with("postgres:") || !title.contains(&client) {
        return Ok(());
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return Ok(());
    };
    if let Err(error) = rustix::process::setpriority_process(Some(pid), BACKGROUND_NICENESS) {
        tracing::debug!(%error, "the rebuild's backend runs at its own priority");
    }
    Ok(())
}
