//! Trace and span ids for spans that no exporter will read.
//!
//! With no OTLP endpoint nothing reads a span's attributes, timings or
//! events, but its ids are still needed: log lines name them, outgoing
//! calls carry them in `traceparent`, exemplars point at them. The
//! OpenTelemetry layer would still build every span for the SDK (an owned
//! copy of each field, a clock read at each exit, a recording span at the
//! end) only for the SDK to drop it unread. [`SpanIds`] gives a span its ids
//! alone: the trace of its parent (the enclosing span, or the caller's
//! context it continues) or a new one, an id of its own, and the sampled
//! flag the configured sampler gives it, so that the next hop sees what it
//! would have seen with traces exported.

use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::{LookupSpan, Registry};

use super::SamplerKind;

/// The layer that gives each span its ids when traces are not exported.
#[derive(Debug)]
pub(crate) struct SpanIds(Arc<Ids>);

impl SpanIds {
    pub(crate) fn new(sampler: SamplerKind, ratio: f64) -> Self {
        Self(Arc::new(Ids::new(sampler, ratio)))
    }
}

/// How ids are made and sampled.
#[derive(Debug)]
struct Ids {
    /// The sampler of a span with no parent (and of every span, when the
    /// configured sampler is not parent-based).
    root: Sampler,
    /// Whether a span with a parent takes the parent's decision.
    parent_based: bool,
    generator: RandomIdGenerator,
}

/// A span's ids, in its extensions, with what made them (to make them
/// again when the span continues a caller's trace).
struct SpanIdsOf {
    ids: SpanContext,
    made_by: Arc<Ids>,
}

impl Ids {
    fn new(sampler: SamplerKind, ratio: f64) -> Self {
        let (root, parent_based) = sampler.root_sampler(ratio);
        Self {
            root,
            parent_based,
            generator: RandomIdGenerator::default(),
        }
    }

    /// The ids of span `span_id` under `parent` (ignored when invalid), as
    /// the SDK's tracer would make them.
    fn ids_under(&self, parent: Option<&SpanContext>, span_id: SpanId) -> SpanContext {
        let parent = parent.filter(|parent| parent.is_valid());
        let trace_id = parent.map_or_else(|| self.generator.new_trace_id(), SpanContext::trace_id);
        let sampled = match parent {
            Some(parent) if self.parent_based => parent.is_sampled(),
            _ => {
                let decision = self
                    .root
                    .should_sample(None, trace_id, "", &SpanKind::Internal, &[], &[])
                    .decision;
                decision == SamplingDecision::RecordAndSample
            }
        };
        let (flags, state) = parent.map_or_else(Default::default, |parent| {
            (parent.trace_flags(), parent.trace_state().clone())
        });
        SpanContext::new(trace_id, span_id, flags.with_sampled(sampled), false, state)
    }
}

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, cx: LayerContext<'_, S>) {
        let Some(span) = cx.span(id) else {
            return;
        };
        let parent = span.parent().and_then(|parent| {
            let extensions = parent.extensions();
            extensions.get::<SpanIdsOf>().map(|of| of.ids.clone())
        });
        let ids = self
            .0
            .ids_under(parent.as_ref(), self.0.generator.new_span_id());
        span.extensions_mut().insert(SpanIdsOf {
            ids,
            made_by: Arc::clone(&self.0),
        });
    }
}

/// The ids [`SpanIds`] gave span `id` of `dispatch`, if it traced the span.
pub(crate) fn of(id: &Id, dispatch: &Dispatch) -> Option<SpanContext> {
    let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
    let extensions = span.extensions();
    extensions.get::<SpanIdsOf>().map(|of| of.ids.clone())
}

/// Makes span `id` of `dispatch` a child of `parent` (a root when `parent`
/// holds no valid span); `None` when [`SpanIds`] did not trace the span.
pub(crate) fn continue_trace(id: &Id, dispatch: &Dispatch, parent: &Context) -> Option<()> {
    let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
    let mut extensions = span.extensions_mut();
    let of = extensions.get_mut::<SpanIdsOf>()?;
    let remote = parent.span();
    of.ids = of
        .made_by
        .ids_under(Some(remote.span_context()), of.ids.span_id());
    Some(())
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{
        Span as _, SpanBuilder, TraceFlags, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::propagation::{HeaderExtractor, HeaderInjector};
    use crate::telemetry::SpanTrace as _;

    const SAMPLERS: [SamplerKind; 6] = [
        SamplerKind::AlwaysOn,
        SamplerKind::AlwaysOff,
        SamplerKind::Traceidratio,
        SamplerKind::ParentbasedAlwaysOn,
        SamplerKind::ParentbasedAlwaysOff,
        SamplerKind::ParentbasedTraceidratio,
    ];

    fn with_ids<T>(sampler: SamplerKind, ratio: f64, f: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(SpanIds::new(sampler, ratio));
        tracing::subscriber::with_default(subscriber, f)
    }

    /// A caller's context, as a server extracts it from `traceparent`.
    fn remote(sampled: bool) -> Context {
        let flags = if sampled { "01" } else { "00" };
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
                .parse()
                .unwrap(),
        );
        TraceContextPropagator::new().extract(&HeaderExtractor(&headers))
    }

    fn ids(span: &tracing::Span) -> SpanContext {
        span.trace_context().span().span_context().clone()
    }

    #[test]
    fn spans_share_their_parents_trace_and_have_ids_of_their_own() {
        let (outer, inner, other) = with_ids(SamplerKind::ParentbasedAlwaysOn, 1.0, || {
            let outer = tracing::info_span!("outer");
            let inner = outer.in_scope(|| tracing::info_span!("inner"));
            let other = tracing::info_span!("other");
            (ids(&outer), ids(&inner), ids(&other))
        });
        for span in [&outer, &inner, &other] {
            assert!(span.is_valid() && span.is_sampled(), "{span:?}");
        }
        assert_eq!(inner.trace_id(), outer.trace_id());
        assert_ne!(inner.span_id(), outer.span_id());
        assert_ne!(other.trace_id(), outer.trace_id());
    }

    #[test]
    fn a_continued_trace_is_the_callers_and_so_is_what_goes_on() {
        for sampled in [true, false] {
            let caller = remote(sampled);
            let caller_ids = caller.span().span_context().clone();
            let (server, child, traceparent) =
                with_ids(SamplerKind::ParentbasedAlwaysOn, 1.0, || {
                    let server = tracing::info_span!("server");
                    server.continue_trace(caller.clone()).unwrap();
                    let child = server.in_scope(|| tracing::info_span!("client"));
                    let mut headers = HeaderMap::new();
                    TraceContextPropagator::new()
                        .inject_context(&child.trace_context(), &mut HeaderInjector(&mut headers));
                    (ids(&server), ids(&child), headers["traceparent"].clone())
                });
            assert_eq!(server.trace_id(), caller_ids.trace_id());
            assert_ne!(server.span_id(), caller_ids.span_id());
            assert_eq!(server.is_sampled(), sampled);
            assert_eq!(child.trace_id(), caller_ids.trace_id());
            assert_eq!(child.is_sampled(), sampled);
            assert_eq!(
                traceparent,
                format!(
                    "00-{}-{}-0{}",
                    caller_ids.trace_id(),
                    child.span_id(),
                    u8::from(sampled)
                )
            );
        }

        // No caller context: the span stays (or becomes) a root of its own.
        let (root, continued) = with_ids(SamplerKind::ParentbasedAlwaysOn, 1.0, || {
            let span = tracing::info_span!("server");
            let root = ids(&span);
            span.continue_trace(Context::new()).unwrap();
            (root, ids(&span))
        });
        assert!(continued.is_valid());
        assert_eq!(continued.span_id(), root.span_id());
    }

    /// Whatever the sampler and the parent, a span is sampled or not as the
    /// SDK's tracer would decide, and carries the parent's trace.
    #[test]
    fn sampling_decisions_are_the_sdks() {
        let parents = [None, Some(remote(true)), Some(remote(false))];
        for sampler in SAMPLERS {
            for ratio in [0.0, 1.0] {
                let provider = SdkTracerProvider::builder()
                    .with_sampler(sampler.sampler(ratio))
                    .build();
                let tracer = provider.tracer("test");
                for parent in &parents {
                    let expected = tracer
                        .build_with_context(
                            SpanBuilder::from_name("span"),
                            parent.as_ref().unwrap_or(&Context::new()),
                        )
                        .span_context()
                        .clone();
                    let ours = with_ids(sampler, ratio, || {
                        let span = tracing::info_span!("span");
                        if let Some(parent) = parent {
                            span.continue_trace(parent.clone()).unwrap();
                        }
                        ids(&span)
                    });
                    let case = format!("{sampler:?} {ratio} {parent:?}");
                    assert_eq!(ours.is_sampled(), expected.is_sampled(), "{case}");
                    assert_eq!(
                        ours.trace_flags() & !TraceFlags::SAMPLED,
                        expected.trace_flags() & !TraceFlags::SAMPLED,
                        "{case}"
                    );
                    if parent.is_some() {
                        assert_eq!(ours.trace_id(), expected.trace_id(), "{case}");
                    }
                    assert!(ours.is_valid(), "{case}");
                }
            }
        }
    }

    #[test]
    fn a_span_outside_the_layer_has_no_ids() {
        let subscriber = tracing_subscriber::registry();
        let context = tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("untraced").trace_context()
        });
        assert!(!context.span().span_context().is_valid());
    }
}
