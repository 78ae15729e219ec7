//! Retrying work that must eventually succeed (a service's initialisation, a
//! consumer, the relay) until it does or the service stops: one backoff
//! policy for all of them, cancellation-aware, each failure logged and counted.

use std::fmt::Display;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter, capped.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The policy most of the system uses: 100 ms doubling up to 5 s.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The delay before the next attempt: up to a quarter less, at random, so
    /// instances that failed together do not retry together.
    pub fn delay(&self) -> Duration {
        self.next.mul_f64(1.0 - rand::random::<f64>() / 4.0)
    }

    /// Waits the next delay; false when `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.advance();
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps the next delay on this thread, for blocking code (an async
    /// task waits with `wait`, which also hears a shutdown).
    pub fn sleep_blocking(&mut self) {
        std::thread::sleep(self.advance());
    }

    /// The next delay, and the one after it doubled.
    fn advance(&mut self) -> Duration {
        let delay = self.delay();
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Runs `attempt` until it succeeds; `None` when the service stops first.
/// Each failure is logged as `what` with the error and the next delay.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut backoff: Backoff,
    mut attempt: F,
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                metrics::counter!("chronicle_retries_total", "what" => what.to_owned())
                    .increment(1);
                tracing::warn!(%error, retry_in = ?backoff.delay(), "{what} failed; retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_retries_until_success_with_growing_capped_delays() {
        let shutdown = CancellationToken::new();
        let mut failures = 0;
        let started = tokio::time::Instant::now();
        let result = until_ok(
            "test",
            &shutdown,
            Backoff::new(Duration::from_millis(100), Duration::from_millis(400)),
            || {
                failures += 1;
                let outcome = if failures < 5 {
                    Err("not yet")
                } else {
                    Ok(failures)
                };
                async move { outcome }
            },
        )
        .await;
        assert_eq!(result, Some(5));
        // 100 + 200 + 400 + 400 ms, each up to a quarter less.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(825) && waited <= Duration::from_millis(1100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_the_retries() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let result: Option<()> = until_ok("test", &shutdown, Backoff::standard(), || async {
            Err::<(), _>("never")
        })
        .await;
        assert_eq!(result, None);
    }
}
