//! W3C trace-context carriers for HTTP headers and gRPC metadata.
//!
//! One extractor and one injector per transport, used by every server and
//! client in the platform so a trace continues across each hop; the broker
//! carriers live with the messaging crate.

use crate::telemetry::SpanTrace;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Reads trace context from HTTP headers (gRPC metadata are HTTP/2 headers).
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into HTTP headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The names the platform's propagators write, without parsing them
        // again for every outgoing request.
        let name = match key {
            "traceparent" => Ok(TRACEPARENT.clone()),
            "tracestate" => Ok(TRACESTATE.clone()),
            "baggage" => Ok(BAGGAGE.clone()),
            other => HeaderName::try_from(other),
        };
        if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The W3C trace context propagator: the SDK's `TraceContextPropagator`,
/// but writing `traceparent` without `format!` (a 128-bit and a 64-bit
/// number in hex through `core::fmt` cost more than the rest of injecting
/// the context into an outgoing request), and not sending an empty
/// `tracestate`. Otherwise what it writes and reads is the SDK propagator's.
#[derive(Debug, Default)]
pub struct TraceContext(TraceContextPropagator);

impl TraceContext {
    pub fn new() -> Self {
        Self::default()
    }
}

impl TextMapPropagator for TraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        // version 00, trace id, parent (span) id, flags: only `sampled`.
        let mut traceparent = String::with_capacity(55);
        traceparent.push_str("00-");
        push_hex(&mut traceparent, &span_context.trace_id().to_bytes());
        traceparent.push('-');
        push_hex(&mut traceparent, &span_context.span_id().to_bytes());
        traceparent.push_str(if span_context.is_sampled() {
            "-01"
        } else {
            "-00"
        });
        injector.set("traceparent", traceparent);
        // An empty list is not sent, as the Go and Java SDKs have it (the
        // Rust SDK's propagator sends an empty header with every request).
        let state = span_context.trace_state().header();
        if !state.is_empty() {
            injector.set("tracestate", state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        self.0.fields()
    }
}

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// The remote parent context carried by `headers`.
pub fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    inject_span(&tracing::Span::current(), headers);
}

/// Writes `span`'s context into `headers` (over any already there: the
/// receiver's parent is this span).
pub fn inject_span(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.trace_context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    /// The SDK propagator's `traceparent`, and its `tracestate` unless that
    /// is empty.
    #[test]
    fn trace_context_is_written_as_the_sdk_propagator_writes_it() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (
                TraceFlags::default(),
                TraceState::from_key_value([("vendor", "x1")]).unwrap(),
            ),
        ] {
            let span_context = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                state,
            );
            let context = Context::new().with_remote_span_context(span_context);
            let (mut ours, mut sdk) = (HeaderMap::new(), HeaderMap::new());
            TraceContext::new().inject_context(&context, &mut HeaderInjector(&mut ours));
            TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut sdk));
            if sdk["tracestate"].is_empty() {
                sdk.remove("tracestate");
                assert!(!ours.contains_key("tracestate"), "{ours:?}");
            }
            assert_eq!(ours, sdk);
            let back = TraceContext::new().extract(&HeaderExtractor(&ours));
            assert_eq!(back.span().span_context(), context.span().span_context());
        }
        let mut none = HeaderMap::new();
        TraceContext::new().inject_context(&Context::new(), &mut HeaderInjector(&mut none));
        assert!(none.is_empty());
    }

    #[test]
    fn traceparent_survives_a_round_trip() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = extract(&headers);
        let span = context.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let mut out = HeaderMap::new();
        global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(&mut out))
        });
        assert_eq!(out["traceparent"], headers["traceparent"]);
    }
}
