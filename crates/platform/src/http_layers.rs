//! Tower layers every HTTP server gets.

use axum::extract::{MatchedPath, Request};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation;

/// A server span per request, named `METHOD /route/{template}` and parented
/// to the caller's `traceparent`, with OpenTelemetry HTTP attributes and the
/// caller's `x-request-id` as `request_id` (so on every log line written
/// within the request).
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
        // The caller's request id, when it sent one, names every line of
        // the request from the first (an edge that makes one up records it
        // on this span itself).
        if let Some(id) = request_id(request.headers()) {
            span.record("request_id", id);
        }
        if let Err(error) = span.set_parent(propagation::extract(request.headers())) {
            tracing::debug!(%error, "could not continue the caller's trace");
        }
        span
    }
}

/// The `x-request-id` a caller sent, if it is printable and of sane length.
pub(crate) fn request_id(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::request_id;

    #[test]
    fn request_ids_are_taken_when_sane() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers), None);
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        assert_eq!(request_id(&headers), Some("req-1"));
        headers.insert("x-request-id", HeaderValue::from_static(""));
        assert_eq!(request_id(&headers), None);
        let long = "x".repeat(129);
        headers.insert("x-request-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&headers), None);
    }
}
