//! Structured JSON logs through `tracing`, configured once per process.

use std::sync::Once;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

static INIT: Once = Once::new();

/// JSON lines on stdout, filtered by `RUST_LOG` (default `info`). Safe to call
/// more than once (tests start several services in one process).
pub fn init(service: &'static str) {
    init_with_default(service, "info,rdkafka=warn,tantivy=warn,sqlx=warn");
}

/// As `init`, with another filter when `RUST_LOG` is not set (tests log warnings only).
pub fn init_with_default(service: &'static str, default_filter: &str) {
    INIT.call_once(|| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let result = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(FmtSpan::NONE)
            .with_env_filter(filter)
            .try_init();
        if result.is_ok() {
            tracing::info!(service, "logging initialised");
        }
    });
}
