//! Producer/consumer spans and the two messaging histograms.
//!
//! Spans use the OpenTelemetry messaging semantic conventions
//! (`messaging.system`, `messaging.destination.name`, `messaging.operation.*`,
//! `otel.kind` = producer/consumer) so Jaeger shows broker hops as such; the
//! consumer span is made a *child* of the producer span carried in
//! `traceparent` (one message, one processing: a parent, not a link). The
//! metric names and labels are the ones in DESIGN.md, which the Grafana
//! dashboards query.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::MessagingSystem;

pub const PUBLISH_DURATION: &str = "messaging_publish_duration_seconds";
pub const PROCESS_DURATION: &str = "messaging_process_duration_seconds";

/// The span around one publish (or request), parented on `parent` when the
/// caller's headers carried a trace context, on the current span otherwise.
pub(crate) fn producer_span(
    system: MessagingSystem,
    destination: &str,
    message_id: &str,
    operation: &'static str,
    parent: Option<Context>,
) -> Span {
    let span = tracing::info_span!(
        "messaging.publish",
        otel.name = format!("{operation} {destination}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = system.as_str(),
        messaging.destination.name = destination,
        messaging.operation = operation,
        messaging.operation.type = "send",
        messaging.operation.name = operation,
        messaging.message.id = message_id,
        error.type = tracing::field::Empty,
    );
    if let Some(parent) = parent.filter(|cx| cx.span().span_context().is_valid()) {
        // Fails only when no OpenTelemetry layer is installed, in which case
        // there is no trace to continue anyway.
        let _ = span.set_parent(parent);
    }
    span
}

/// The span around processing one delivery, child of the producer's span.
pub(crate) fn consumer_span(
    system: MessagingSystem,
    destination: &str,
    group: &str,
    message_id: &str,
    attempt: u32,
    parent: Context,
) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "messaging.process",
        otel.name = format!("process {destination}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = system.as_str(),
        messaging.destination.name = destination,
        messaging.consumer.group.name = group,
        messaging.operation = "process",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.message.id = message_id,
        messaging.delivery.attempt = attempt,
        outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// The current trace context of `span`, if it belongs to a real trace.
pub(crate) fn context_of(span: &Span) -> Option<Context> {
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

pub(crate) fn mark_error(span: &Span, kind: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}

pub(crate) fn record_publish(
    system: MessagingSystem,
    destination: &str,
    outcome: &'static str,
    elapsed: Duration,
) {
    metrics::histogram!(
        PUBLISH_DURATION,
        "messaging_system" => system.as_str(),
        "messaging_destination_name" => destination.to_owned(),
        "outcome" => outcome,
    )
    .record(elapsed.as_secs_f64());
}

pub(crate) fn record_process(
    system: MessagingSystem,
    destination: &str,
    outcome: &'static str,
    elapsed: Duration,
) {
    metrics::histogram!(
        PROCESS_DURATION,
        "messaging_system" => system.as_str(),
        "messaging_destination_name" => destination.to_owned(),
        "outcome" => outcome,
    )
    .record(elapsed.as_secs_f64());
}
