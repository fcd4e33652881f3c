//! What the unit tests of the traced clients share: spans exported into
//! memory and the samples of one histogram.

use std::future::Future;
use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

use crate::telemetry::SamplerKind;
use crate::telemetry::ids::SpanIds;

/// Labels of one series and its number of samples.
pub type Series = Vec<(Vec<(String, String)>, usize)>;

/// The test process's one recorder (the facade's global is set once; nextest
/// runs each test in a process of its own).
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// The series of histogram `name` recorded since the last call (a snapshot
/// drains them).
pub fn series(name: &str) -> Series {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == name)
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            let count = match value {
                DebugValue::Histogram(values) => values.len(),
                _ => 0,
            };
            (labels, count)
        })
        .collect()
}

/// Whether `series` has samples with exactly `labels`.
pub fn sampled(series: &Series, labels: &[(&str, &str)]) -> bool {
    series.iter().any(|(have, count)| {
        *count > 0
            && have.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
    })
}

pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| attribute.value.to_string())
}

/// Runs `test` with a tracer exporting into memory and the recorder
/// installed; returns its spans.
pub async fn traced<F: Future<Output = ()>>(test: F) -> Vec<SpanData> {
    snapshotter();
    global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    test.await;
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

/// The two layers that give spans their ids, as `telemetry::init` installs
/// them: the OpenTelemetry layer (traces exported), then span ids alone (not
/// exported).
pub fn trace_layers() -> [Box<dyn Layer<Registry> + Send + Sync>; 2] {
    let provider = SdkTracerProvider::builder().build();
    let exported = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_context_activation(false)
        .boxed();
    let not_exported = SpanIds::new(SamplerKind::ParentbasedAlwaysOn, 1.0).boxed();
    [exported, not_exported]
}
