//! W3C trace context across process boundaries: a `traceparent` header on
//! HTTP requests and Kafka messages, and in each event's metadata.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";

struct Carrier<'a>(&'a mut HashMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Parent<'a>(&'a str);

impl Extractor for Parent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The `traceparent` of `span`, to hand to whatever it calls.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&span.context(), &mut Carrier(&mut carrier));
    });
    carrier.remove(TRACEPARENT)
}

/// The current span's `traceparent`.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Makes `span` a child of the span `traceparent` names (if it parses).
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Parent(traceparent))
    });
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id of `span`, for log lines.
pub fn trace_id(span: &Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

/// Adds the current span's `traceparent` to an outgoing HTTP request.
pub fn inject_into(headers: &mut http::HeaderMap) {
    if let Some(traceparent) = current_traceparent()
        && let Ok(value) = http::HeaderValue::from_str(&traceparent)
    {
        headers.insert(TRACEPARENT, value);
    }
}
