//! Trace context crosses every broker: the consumer span is a child of the
//! producer span, which is a child of the publisher's current span, and both
//! carry the OpenTelemetry messaging attributes.

mod support;

use std::sync::OnceLock;

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry::{KeyValue, Value, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{Harness, next};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use messaging::OutgoingMessage;

/// One tracing pipeline per test process, exporting to memory.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("messaging-tests");
        global::set_tracer_provider(provider);
        global::set_text_map_propagator(TraceContextPropagator::new());
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        // Another test of this process may have installed it already.
        let _ = tracing::subscriber::set_global_default(subscriber);
        exporter
    })
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

async fn consumer_span_is_a_child_of_the_producer_span(harness: Harness) {
    let exporter = exporter();
    let destination = harness.destination("traced", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&destination, "tracers"))
        .await;

    let request = tracing::info_span!("handle_request");
    harness
        .broker
        .publish(OutgoingMessage::new(&destination, "traced"))
        .instrument(request.clone())
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    drop(request);

    let delivery = next(&mut stream).await;
    let traceparent = delivery.headers.get("traceparent").map(str::to_owned);
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;

    let spans = exporter
        .get_finished_spans()
        .unwrap_or_else(|e| panic!("spans: {e}"));
    let named = |name: String| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span {name:?} among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let producer = named(format!("publish {destination}"));
    let consumer = named(format!("process {destination}"));
    let root = spans
        .iter()
        .find(|span| {
            span.name == "handle_request"
                && span.span_context.trace_id() == producer.span_context.trace_id()
        })
        .unwrap_or_else(|| panic!("no request span in the producer's trace"));

    assert_eq!(producer.parent_span_id, root.span_context.span_id());
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
    assert_eq!(
        consumer.span_context.trace_id(),
        root.span_context.trace_id()
    );
    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(consumer.span_kind, SpanKind::Consumer);

    let traceparent = traceparent.unwrap_or_else(|| panic!("no traceparent on the delivery"));
    assert!(
        traceparent.contains(&producer.span_context.span_id().to_string()),
        "{traceparent}"
    );
    let system = harness.system().as_str();
    for span in [producer, consumer] {
        assert_eq!(
            attribute(span, "messaging.system"),
            Some(&Value::from(system))
        );
        assert_eq!(
            attribute(span, "messaging.destination.name"),
            Some(&Value::from(destination.clone()))
        );
    }
    assert_eq!(
        attribute(consumer, "messaging.consumer.group.name"),
        Some(&Value::from(harness.group("tracers")))
    );
    assert_eq!(
        attribute(producer, "messaging.operation.type"),
        Some(&Value::from("send"))
    );
    assert_eq!(
        attribute(consumer, "messaging.operation.type"),
        Some(&Value::from("process"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq() {
    consumer_span_is_a_child_of_the_producer_span(support::rabbitmq().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    consumer_span_is_a_child_of_the_producer_span(support::kafka().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats() {
    consumer_span_is_a_child_of_the_producer_span(support::nats().await).await;
}
