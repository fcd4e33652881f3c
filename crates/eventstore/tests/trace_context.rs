//! Event metadata carries the writer's W3C trace context. The propagator
//! and subscriber are process-global, hence a binary of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use eventstore::EventMetadata;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn metadata_captures_the_current_span_as_traceparent() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("eventstore-test")));

    let (inside, outside) = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("command");
        let inside = span.in_scope(|| EventMetadata::default().with_current_trace_context());
        (
            inside,
            EventMetadata::default().with_current_trace_context(),
        )
    });

    let traceparent = inside.traceparent.expect("traceparent inside a span");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32));
    assert_eq!(parts[2].len(), 16);
    assert_eq!(outside.traceparent, None, "no span, no trace context");
}
