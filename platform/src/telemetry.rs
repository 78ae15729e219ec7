//! Structured JSON logs and OpenTelemetry traces, configured once per process.
//!
//! Every span has an OpenTelemetry context, so W3C `traceparent` travels with
//! a request through HTTP, the event store, Kafka and the projector (see
//! `trace_context`), and log lines carry the trace id. Spans are exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and not at all otherwise.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

const DEFAULT_FILTER: &str = "info,rdkafka=warn,tantivy=warn,sqlx=warn,opentelemetry=warn";
/// The spans traced: ours and the HTTP layer's, not every library's.
const TRACE_FILTER: &str = "warn,chronicle_platform=info,command_service=info,projector=info,query_service=info,tower_http=info";

/// Logs at `RUST_LOG` (default `info`), traces as configured by the environment.
pub fn init(service: &'static str) {
    install(service, DEFAULT_FILTER, None);
}

/// As `init`, with another filter when `RUST_LOG` is not set (tests log warnings only).
pub fn init_with_default(service: &'static str, default_filter: &str) {
    install(service, default_filter, None);
}

/// As `init_with_default`, keeping every finished span in `exporter` (tests of tracing).
pub fn init_with_exporter(
    service: &'static str,
    default_filter: &str,
    exporter: InMemorySpanExporter,
) {
    install(service, default_filter, Some(exporter));
}

fn install(
    service: &'static str,
    default_filter: &str,
    test_exporter: Option<InMemorySpanExporter>,
) {
    if PROVIDER.get().is_some() {
        return;
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned()),
            )
            .build(),
    );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty());
    if let Some(endpoint) = &endpoint {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => eprintln!("cannot export traces to {endpoint}: {error}"),
        }
    }
    if let Some(exporter) = test_exporter {
        builder = builder.with_simple_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);
    // Logs and traces filter separately: quieter logs must not cut a trace.
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let trace_filter = EnvFilter::try_from_env("OTEL_TRACES_FILTER")
        .unwrap_or_else(|_| EnvFilter::new(TRACE_FILTER));
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        // Every enclosing span, so each line carries the request and trace ids.
        .with_span_list(true)
        .with_filter(log_filter);
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(trace_filter);
    let initialised = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if initialised.is_ok() {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let _ = PROVIDER.set(provider);
        tracing::info!(
            service,
            otlp = endpoint.as_deref().unwrap_or("off"),
            "telemetry initialised"
        );
    }
}

/// Exports what is buffered; call before the process exits.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}
