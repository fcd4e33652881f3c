//! Exemplars: the trace behind a latency.
//!
//! Grafana jumps from a slow histogram bucket to a trace when the bucket
//! carries an exemplar, the trace and span id of one observation that fell in
//! it. `metrics-exporter-prometheus` keeps none, so [`ExemplarRecorder`] wraps
//! its recorder: every latency histogram (a name ending in `_seconds`, the
//! ones given [`super::LATENCY_BUCKETS`]) also keeps, per bucket, an
//! observation made inside a sampled trace, and [`super::openmetrics`] writes
//! them after the exporter's bucket lines.
//!
//! A bucket looks for a new exemplar at most once a second: finding the
//! current span's trace costs more than recording the value, and Prometheus
//! keeps only what it scrapes (every 15 s by default). An observation outside
//! a sampled trace leaves the bucket's previous exemplar in place.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::KeyHasher;
use opentelemetry::trace::{SpanId, TraceId};

/// The least time between two exemplars of one bucket, in milliseconds.
const REFRESH_MS: u64 = 1_000;

/// One observation and the span it was made in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The observed value (seconds).
    pub value: f64,
    /// When it was observed, seconds since the Unix epoch.
    pub timestamp: f64,
}

/// The exemplars of one histogram series: one slot per bucket bound, and one
/// for `+Inf`.
#[derive(Debug)]
pub struct BucketExemplars {
    bounds: &'static [f64],
    slots: Box<[Slot]>,
}

#[derive(Debug, Default)]
struct Slot {
    /// When this slot last looked for an exemplar (Unix milliseconds; 0:
    /// never).
    looked_at_ms: AtomicU64,
    exemplar: Mutex<Option<Exemplar>>,
}

impl BucketExemplars {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            slots: (0..=bounds.len()).map(|_| Slot::default()).collect(),
        }
    }

    /// The bucket `value` counts in: the first bound at or above it, else
    /// `+Inf` (index `bounds.len()`).
    fn index_of_value(&self, value: f64) -> usize {
        self.bounds.partition_point(|bound| *bound < value)
    }

    /// The bucket whose `le` label is `le` (`+Inf` included), if it is one
    /// of these bounds.
    pub fn index_of_le(&self, le: &str) -> Option<usize> {
        if le == "+Inf" {
            return Some(self.bounds.len());
        }
        let le: f64 = le.parse().ok()?;
        self.bounds.iter().position(|bound| *bound == le)
    }

    /// Keeps `value` as its bucket's exemplar, with the span `current`
    /// names, unless the bucket looked for one less than a second before
    /// `now_ms`.
    pub fn offer(
        &self,
        value: f64,
        now_ms: u64,
        current: impl FnOnce() -> Option<(TraceId, SpanId)>,
    ) {
        let slot = &self.slots[self.index_of_value(value)];
        let looked_at = slot.looked_at_ms.load(Ordering::Relaxed);
        if looked_at != 0 && now_ms.saturating_sub(looked_at) < REFRESH_MS {
            return;
        }
        // One of the threads racing here looks; the others go on.
        if slot
            .looked_at_ms
            .compare_exchange(looked_at, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if let Some((trace_id, span_id)) = current() {
            *slot.exemplar.lock().unwrap_or_else(PoisonError::into_inner) = Some(Exemplar {
                trace_id,
                span_id,
                value,
                timestamp: now_ms as f64 / 1_000.0,
            });
        }
    }

    /// The exemplar of bucket `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<Exemplar> {
        *self
            .slots
            .get(index)?
            .exemplar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The trace and span ids of the current span, if it is in a sampled trace.
fn current_sampled_span() -> Option<(TraceId, SpanId)> {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let span_context = crate::telemetry::span_context(current.id()?, dispatch)?;
        (span_context.is_valid() && span_context.is_sampled())
            .then(|| (span_context.trace_id(), span_context.span_id()))
    })
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A histogram of the wrapped recorder, and its series' exemplars.
struct ObservedHistogram {
    inner: Histogram,
    exemplars: Arc<BucketExemplars>,
}

impl HistogramFn for ObservedHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.exemplars
            .offer(value, unix_millis(), current_sampled_span);
    }
}

type Series = HashMap<Key, (Histogram, Arc<BucketExemplars>), BuildHasherDefault<KeyHasher>>;

/// Every latency series' exemplars, for the exposition to read.
#[derive(Default)]
pub struct Exemplars {
    series: RwLock<Series>,
}

impl Exemplars {
    /// The series that have exemplar slots, with their metric name and
    /// labels.
    pub fn series(&self) -> Vec<(Key, Arc<BucketExemplars>)> {
        self.series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, (_, exemplars))| (key.clone(), Arc::clone(exemplars)))
            .collect()
    }
}

/// A [`Recorder`] that hands everything to `inner`, and gives each latency
/// histogram exemplars.
pub struct ExemplarRecorder<R> {
    inner: R,
    exemplars: Arc<Exemplars>,
}

impl<R> ExemplarRecorder<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            exemplars: Arc::default(),
        }
    }

    /// What the exposition reads the exemplars from.
    pub fn exemplars(&self) -> Arc<Exemplars> {
        Arc::clone(&self.exemplars)
    }
}

impl<R: Recorder> Recorder for ExemplarRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if !super::is_latency(key.name()) {
            return self.inner.register_histogram(key, metadata);
        }
        let series = &self.exemplars.series;
        if let Some((histogram, _)) = series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return histogram.clone();
        }
        let mut series = series.write().unwrap_or_else(PoisonError::into_inner);
        let (histogram, _) = series.entry(key.clone()).or_insert_with(|| {
            let exemplars = Arc::new(BucketExemplars::new(super::LATENCY_BUCKETS));
            let observed = ObservedHistogram {
                inner: self.inner.register_histogram(key, metadata),
                exemplars: Arc::clone(&exemplars),
            };
            (Histogram::from_arc(Arc::new(observed)), exemplars)
        });
        histogram.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.1, 0.5, 1.0];

    fn span(n: u8) -> (TraceId, SpanId) {
        (TraceId::from_bytes([n; 16]), SpanId::from_bytes([n; 8]))
    }

    #[test]
    fn a_value_lands_in_the_first_bucket_at_or_above_it() {
        let buckets = BucketExemplars::new(BOUNDS);
        for (value, index) in [(0.05, 0), (0.1, 0), (0.2, 1), (1.0, 2), (7.0, 3)] {
            assert_eq!(buckets.index_of_value(value), index, "{value}");
        }
        assert_eq!(buckets.index_of_le("0.5"), Some(1));
        assert_eq!(buckets.index_of_le("+Inf"), Some(3));
        assert_eq!(buckets.index_of_le("0.3"), None);
        assert_eq!(buckets.index_of_le("x"), None);
    }

    #[test]
    fn a_bucket_takes_a_new_exemplar_at_most_once_a_second() {
        let buckets = BucketExemplars::new(BOUNDS);
        buckets.offer(0.3, 10_000, || Some(span(1)));
        buckets.offer(0.4, 10_500, || panic!("looked again within the second"));
        let kept = buckets.get(1).unwrap();
        assert_eq!((kept.trace_id, kept.span_id), span(1));
        assert_eq!((kept.value, kept.timestamp), (0.3, 10.0));
        // Other buckets have their own second.
        buckets.offer(2.0, 10_500, || Some(span(2)));
        assert_eq!(buckets.get(3).unwrap().trace_id, span(2).0);
        assert_eq!(buckets.get(0), None);

        buckets.offer(0.45, 11_000, || Some(span(3)));
        assert_eq!(buckets.get(1).unwrap().value, 0.45);
    }

    #[test]
    fn an_observation_outside_a_sampled_trace_keeps_the_previous_exemplar() {
        let buckets = BucketExemplars::new(BOUNDS);
        buckets.offer(0.3, 10_000, || Some(span(1)));
        buckets.offer(0.3, 12_000, || None);
        assert_eq!(buckets.get(1).unwrap().trace_id, span(1).0);
    }

    /// With traces exported (the OpenTelemetry layer) or not (span ids alone).
    #[test]
    fn latency_histograms_recorded_in_a_sampled_span_keep_its_ids() {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        use crate::telemetry::SpanTrace as _;

        for traces in crate::test_support::trace_layers() {
            let recorder = ExemplarRecorder::new(metrics_util::debugging::DebuggingRecorder::new());
            let exemplars = recorder.exemplars();
            let subscriber = tracing_subscriber::registry().with(traces);
            let (ids, context) = tracing::subscriber::with_default(subscriber, || {
                metrics::with_local_recorder(&recorder, || {
                    let span = tracing::info_span!("request");
                    let _entered = span.enter();
                    metrics::histogram!("request_duration_seconds", "route" => "/a").record(0.3);
                    metrics::histogram!("request_bytes").record(0.3);
                    (current_sampled_span(), span.trace_context())
                })
            });
            let (trace_id, span_id) = ids.expect("the span is sampled");
            let span_context = context.span().span_context().clone();
            assert_eq!(
                (trace_id, span_id),
                (span_context.trace_id(), span_context.span_id())
            );
            let series = exemplars.series();
            assert_eq!(series.len(), 1, "only the latency histogram has exemplars");
            let (key, buckets) = &series[0];
            assert_eq!(key.name(), "request_duration_seconds");
            let index = buckets.index_of_le("0.5").unwrap();
            let exemplar = buckets.get(index).unwrap();
            assert_eq!((exemplar.trace_id, exemplar.span_id), (trace_id, span_id));
            assert_eq!(exemplar.value, 0.3);
        }
    }

    #[test]
    fn outside_any_span_there_is_no_exemplar() {
        let recorder = ExemplarRecorder::new(metrics_util::debugging::DebuggingRecorder::new());
        let exemplars = recorder.exemplars();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("request_duration_seconds").record(0.3);
        });
        let (_, buckets) = &exemplars.series()[0];
        assert!((0..=super::super::LATENCY_BUCKETS.len()).all(|i| buckets.get(i).is_none()));
    }
}
