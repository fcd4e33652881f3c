use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use saga::{Command, NewSaga, Phase, SagaDefinition, SagaStatus, Step, StepError};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::common::*;

/// The test binary's one Prometheus recorder.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the sample `name{labels...}` in `rendered`, labels in any order.
fn sample(rendered: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let matches = series.starts_with(&format!("{name}{{"))
            && labels
                .iter()
                .all(|(label, value)| series.contains(&format!("{label}=\"{value}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn outcomes_and_durations_are_counted_per_saga_type() {
    let handle = prometheus();
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.queue("charge", Phase::Action, [Behaviour::Reject("DECLINED")]);
    let saga_type = unique_saga_type("metrics");
    let engine = engine(
        pool,
        sample_saga(&saga_type, &["reserve", "charge"], &fakes),
    );

    let rejected = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    engine.process_due().await.unwrap();
    wait_for_status(
        pool,
        rejected,
        SagaStatus::Compensated,
        Duration::from_secs(1),
    )
    .await;
    for number in 0..2 {
        engine
            .start(NewSaga::new(Order::number(number)))
            .await
            .unwrap();
    }
    engine.process_due().await.unwrap();

    let rendered = handle.render();
    let total = |outcome| {
        sample(
            &rendered,
            "ferrishop_saga_total",
            &[("saga", &saga_type), ("outcome", outcome)],
        )
    };
    assert_eq!(total("completed"), Some(2.0), "{rendered}");
    assert_eq!(total("compensated"), Some(1.0));
    assert_eq!(total("failed"), None);
    assert_eq!(
        sample(
            &rendered,
            "ferrishop_saga_duration_seconds_count",
            &[("saga", &saga_type)]
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn step_spans_join_the_trace_that_started_the_saga() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("saga-test")));
    // With a single dispatcher registered, tracing-core caches a callsite's
    // interest from whichever thread reaches it first — a parallel test
    // without a subscriber caches "never" (tokio-rs/tracing#3611). A global
    // default next to this test's scoped one takes the path that asks both.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let _default = tracing::subscriber::set_default(subscriber);

    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.queue("reserve", Phase::Action, [Behaviour::Fail]);
    let definition = SagaDefinition::new(unique_saga_type("traced"))
        .step(call_step(&fakes, "reserve"))
        .step(Step::command(
            "charge",
            |_, _: &Order| Command::json("payments", &1).map_err(StepError::transient),
            |_, order, _| Ok(order),
        ));
    let engine = engine(pool, definition);

    let request = tracing::info_span!("POST /api/v1/orders");
    let trace_id = request.context().span().span_context().trace_id();
    let id = engine
        .start(NewSaga::new(Order::number(1)))
        .instrument(request)
        .await
        .unwrap();
    // Outside the request's span, as a worker would be.
    engine.process_due().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.process_due().await.unwrap();

    let traceparent: Option<String> =
        sqlx::query_scalar("SELECT traceparent FROM saga_instances WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        traceparent.unwrap().starts_with(&format!("00-{trace_id}-")),
        "the start's trace context is stored with the saga"
    );
    let headers: serde_json::Value =
        sqlx::query_scalar("SELECT headers FROM outbox WHERE destination = 'payments'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        headers["traceparent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("00-{trace_id}-")),
        "commands carry the trace on"
    );

    provider.force_flush().unwrap();
    let spans: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.name == "saga.step")
        .collect();
    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.to_string())
    };
    let summary: Vec<_> = spans
        .iter()
        .map(|span| {
            (
                attribute(span, "saga.step").unwrap(),
                attribute(span, "saga.attempt").unwrap(),
                matches!(span.status, Status::Error { .. }),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("reserve".to_owned(), "1".to_owned(), true),
            ("reserve".to_owned(), "2".to_owned(), false),
            ("charge".to_owned(), "1".to_owned(), false),
        ]
    );
    for span in &spans {
        assert_eq!(
            span.span_context.trace_id(),
            trace_id,
            "every step is in the request's trace"
        );
        assert_eq!(attribute(span, "saga.id"), Some(id.to_string()));
    }
}
