//! Tower layers every HTTP server gets.

use axum::extract::{MatchedPath, Request};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation;

/// A server span per request, named `METHOD /route/{template}` and parented
/// to the caller's `traceparent`, with OpenTelemetry HTTP attributes.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, ServerSpan> {
    TraceLayer::new_for_http().make_span_with(ServerSpan)
}

/// [`MakeSpan`] for [`trace_layer`].
#[derive(Debug, Clone, Copy)]
pub struct ServerSpan;

impl<B> MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), MatchedPath::as_str);
        let method = request.method().as_str();
        let span = tracing::info_span!(
            "http.server",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            url.path = request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            request_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
        );
        if let Err(error) = span.set_parent(propagation::extract(request.headers())) {
            tracing::debug!(%error, "could not continue the caller's trace");
        }
        span
    }
}
