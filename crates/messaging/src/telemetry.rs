//! Producer/consumer spans and the two messaging histograms.
//!
//! Spans use the OpenTelemetry messaging semantic conventions
//! (`messaging.system`, `messaging.destination.name`, `messaging.operation.*`,
//! `otel.kind` = producer/consumer) so Jaeger shows broker hops as such; the
//! consumer span is made a *child* of the producer span carried in
//! `traceparent` (one message, one processing: a parent, not a link). The
//! metric names and labels are the ones in DESIGN.md, which the Grafana
//! dashboards query.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use metrics::{Key, Label, Metadata};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use platform::telemetry::SpanTrace;
use tracing::Span;

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
        // Formatted only if a subscriber records the span.
        otel.name = %format_args!("{operation} {destination}"),
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
        let _ = span.continue_trace(parent);
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
        let _ = span.continue_trace(parent);
    }
    span
}

/// The current trace context of `span`, if it belongs to a real trace.
pub(crate) fn context_of(span: &Span) -> Option<Context> {
    let context = span.trace_context();
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
    record(PUBLISH_DURATION, system, destination, outcome, elapsed);
}

pub(crate) fn record_process(
    system: MessagingSystem,
    destination: &str,
    outcome: &'static str,
    elapsed: Duration,
) {
    record(PROCESS_DURATION, system, destination, outcome, elapsed);
}

/// What the `histogram!` macro would pass; the recorders ignore most of it.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Most destinations a thread keeps keys for; past it the cache starts over (a
/// service publishing to unbounded destination names without a
/// `destination_template` has a cardinality problem anyway).
const MAX_CACHED_DESTINATIONS: usize = 1024;

/// One series: which histogram, broker and outcome (the destination is the
/// cache's key).
type SeriesId = (&'static str, MessagingSystem, &'static str);

/// Retained keys by destination, and the one used last.
#[derive(Default)]
struct KeyCache {
    last: Option<(Rc<str>, SeriesId, Key)>,
    by_destination: HashMap<Rc<str>, Vec<(SeriesId, Key)>>,
}

impl KeyCache {
    fn key(&mut self, id: SeriesId, destination: &str) -> Key {
        // Consecutive messages mostly go to the same series.
        if let Some((last, last_id, key)) = &self.last
            && *last_id == id
            && **last == *destination
        {
            return key.clone();
        }
        let (name, key) =
            match self
                .by_destination
                .get_key_value(destination)
                .and_then(|(name, series)| {
                    let key = series.iter().find(|(s, _)| *s == id)?;
                    Some((name.clone(), key.1.clone()))
                }) {
                Some(found) => found,
                None => self.insert(id, destination),
            };
        self.last = Some((name, id, key.clone()));
        key
    }

    fn insert(&mut self, id: SeriesId, destination: &str) -> (Rc<str>, Key) {
        if self.by_destination.len() >= MAX_CACHED_DESTINATIONS {
            self.by_destination.clear();
        }
        let (metric, system, outcome) = id;
        let key = Key::from_parts(
            metric,
            vec![
                Label::from_static_parts("messaging_system", system.as_str()),
                Label::new("messaging_destination_name", destination.to_owned()),
                Label::from_static_parts("outcome", outcome),
            ],
        )
        .to_retained();
        let name = match self.by_destination.get_key_value(destination) {
            Some((name, _)) => name.clone(),
            None => Rc::from(destination),
        };
        self.by_destination
            .entry(name.clone())
            .or_default()
            .push((id, key.clone()));
        (name, key)
    }
}

thread_local! {
    /// Building a key — three labels, its hash, the retained copy the
    /// recorder takes — cost more than the rest of recording; looking one up
    /// is a comparison or a hash of the destination. Only keys are cached,
    /// not handles, so a recorder installed later (or a local one) still
    /// receives every value.
    static KEYS: RefCell<KeyCache> = RefCell::default();
}

fn record(
    metric: &'static str,
    system: MessagingSystem,
    destination: &str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let key = KEYS.with_borrow_mut(|keys| keys.key((metric, system, outcome), destination));
    metrics::with_recorder(|recorder| recorder.register_histogram(&key, &METADATA))
        .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, Gauge, Histogram, HistogramFn, KeyName, Recorder, SharedString, Unit};

    use super::*;

    /// Collects every recorded histogram value with its series.
    #[derive(Default)]
    struct Collect(Arc<Mutex<Vec<String>>>);

    struct Series(String, Arc<Mutex<Vec<String>>>);

    impl HistogramFn for Series {
        fn record(&self, _value: f64) {
            if let Ok(mut values) = self.1.lock() {
                values.push(self.0.clone());
            }
        }
    }

    impl Recorder for Collect {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let series = format!("{}{{{}}}", key.name(), labels.join(","));
            Histogram::from_arc(Arc::new(Series(series, self.0.clone())))
        }
    }

    #[test]
    fn cached_keys_record_into_whatever_recorder_is_current() {
        // Keys cached while one recorder was current serve the next one.
        for _ in 0..2 {
            let recorder = Collect::default();
            metrics::with_local_recorder(&recorder, || {
                let elapsed = Duration::from_millis(1);
                record_publish(MessagingSystem::Nats, "orders", "ok", elapsed);
                record_publish(MessagingSystem::Nats, "orders", "ok", elapsed);
                record_publish(MessagingSystem::Nats, "orders", "error", elapsed);
                record_publish(MessagingSystem::Nats, "payments", "ok", elapsed);
                record_process(MessagingSystem::Kafka, "orders", "ok", elapsed);
            });
            let recorded = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
            let series = |name: &str, system: &str, destination: &str, outcome: &str| {
                format!(
                    "{name}{{messaging_system={system},messaging_destination_name={destination},outcome={outcome}}}"
                )
            };
            assert_eq!(
                recorded,
                [
                    series(PUBLISH_DURATION, "nats", "orders", "ok"),
                    series(PUBLISH_DURATION, "nats", "orders", "ok"),
                    series(PUBLISH_DURATION, "nats", "orders", "error"),
                    series(PUBLISH_DURATION, "nats", "payments", "ok"),
                    series(PROCESS_DURATION, "kafka", "orders", "ok"),
                ]
            );
        }
    }
}
