//! Tower layers every HTTP server gets.

use axum::extract::{MatchedPath, Request};
use std::time::Duration;

use crate::telemetry::SpanTrace;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use crate::propagation;

/// A server span per request, named `METHOD /route/{template}` and parented
/// to the caller's `traceparent`, with OpenTelemetry HTTP attributes and the
/// caller's `x-request-id` as `request_id` (so on every log line written
/// within the request). The response's status is recorded on the span
/// (`http.response.status_code`); a 5xx sets its error status, as the HTTP
/// server conventions ask (a 4xx is the client's error, not the server's).
pub fn trace_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    ServerSpan,
    DefaultOnRequest,
    ServerResponse,
> {
    TraceLayer::new_for_http()
        .make_span_with(ServerSpan)
        .on_response(ServerResponse::default())
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
            otel.name = crate::telemetry::concat(&[method, " ", route]),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            url.path = request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            // The caller's request id, when it sent one, names every line
            // of the request from the first (an edge that makes one up
            // records it on this span itself).
            request_id = request_id(request.headers()),
            user_id = tracing::field::Empty,
        );
        if let Err(error) = span.continue_trace(propagation::extract(request.headers())) {
            tracing::debug!(%error, "could not continue the caller's trace");
        }
        span
    }
}

/// [`OnResponse`] for [`trace_layer`]: records the status on the span, then
/// logs as tower-http's default does (`finished processing request`, debug).
#[derive(Debug, Clone, Default)]
pub struct ServerResponse {
    log: DefaultOnResponse,
}

impl<B> OnResponse<B> for ServerResponse {
    fn on_response(self, response: &http::Response<B>, latency: Duration, span: &Span) {
        let status = response.status();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        self.log.on_response(response, latency, span);
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
    use opentelemetry::trace::Status;
    use tower::ServiceExt;

    use super::*;
    use crate::test_support::{attribute, traced};

    #[tokio::test(flavor = "current_thread")]
    async fn server_spans_carry_the_status_and_fail_on_5xx_only() {
        let spans = traced(async {
            let app = axum::Router::new()
                .route("/ok", axum::routing::get(|| async { "fine" }))
                .route(
                    "/missing/{id}",
                    axum::routing::get(|| async { http::StatusCode::NOT_FOUND }),
                )
                .route(
                    "/broken",
                    axum::routing::get(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
                )
                .route_layer(trace_layer());
            for path in ["/ok", "/missing/7", "/broken"] {
                let request = http::Request::get(path)
                    .header("x-request-id", "req-7")
                    .body(axum::body::Body::empty())
                    .unwrap();
                app.clone().oneshot(request).await.unwrap();
            }
        })
        .await;
        let seen: Vec<(String, String, bool)> = spans
            .iter()
            .map(|span| {
                assert_eq!(attribute(span, "request_id").as_deref(), Some("req-7"));
                (
                    span.name.to_string(),
                    attribute(span, "http.response.status_code").unwrap_or_default(),
                    matches!(span.status, Status::Error { .. }),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("GET /ok".to_owned(), "200".to_owned(), false),
                ("GET /missing/{id}".to_owned(), "404".to_owned(), false),
                ("GET /broken".to_owned(), "503".to_owned(), true),
            ]
        );
    }

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
