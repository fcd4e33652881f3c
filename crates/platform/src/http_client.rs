//! HTTP clients.
//!
//! What [`crate::grpc::client`] does for gRPC, for plain HTTP: every
//! outgoing request gets a client span (OpenTelemetry HTTP client semantic
//! conventions: `http.request.method`, `server.address`, `server.port`,
//! `url.full`, `http.response.status_code`, `error.type`), carries that
//! span's W3C trace context in its headers (so the server's span becomes
//! its child), and records `http_client_request_duration_seconds` with the
//! labels `http_request_method`, `server_address` and
//! `http_response_status_code` — or `error_type` when no response came.
//!
//! Wrap the service that sends one request to one server, beneath load
//! balancing and retries: each attempt is then a span and a sample of its
//! own, as the conventions ask, and the time measured is the server's.
//!
//! A response of status 400 or above marks the span as failed (a client
//! span's status follows the answer; the server's span does so only for
//! 5xx). A request abandoned before its answer — an attempt timeout of
//! the caller's, a client that went away — ends its span with
//! `error.type = cancelled` and is counted so.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::kept::KeptHistograms;
use crate::observed_client::{Observation, ObservedClient};
use crate::telemetry::concat;

/// Histogram of one request's duration, seconds.
pub const HTTP_CLIENT_DURATION: &str = "http_client_request_duration_seconds";

/// `error.type` of a request dropped before it was answered.
pub const CANCELLED: &str = "cancelled";

/// `error.type` of a request that failed without an answer (connection
/// refused or reset, TLS, a body that could not be read).
pub const TRANSPORT_ERROR: &str = "transport";

/// Tower service tracing and measuring the requests it passes to its inner
/// service; see the module docs. Request URIs must be absolute (scheme and
/// authority): they name the server.
pub type ObserveHttpClient<S> = ObservedClient<S, ClientCall>;

/// One request in flight: its span, its metric labels, its clock. Dropped
/// before it was answered or failed, it counts as [`CANCELLED`].
#[derive(Debug)]
pub struct ClientCall {
    span: Span,
    method: String,
    address: String,
    started: Instant,
    done: bool,
    series: Arc<ClientSeries>,
}

/// The series of [`HTTP_CLIENT_DURATION`] one client has recorded into.
#[derive(Debug, Default)]
pub struct ClientSeries(KeptHistograms<Series>);

/// One series' labels.
struct Series {
    method: String,
    address: String,
    outcome: Outcome,
}

/// How a request ended, as its series tells: answered with a status, or
/// failed with an `error.type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered(http::StatusCode),
    Failed(&'static str),
}

impl ClientSeries {
    fn histogram(&self, method: &str, address: &str, outcome: Outcome) -> metrics::Histogram {
        self.0.get(
            |series| {
                series.outcome == outcome && series.method == method && series.address == address
            },
            || {
                let method = method.to_owned();
                let address = address.to_owned();
                let histogram = match outcome {
                    Outcome::Answered(status) => metrics::histogram!(
                        HTTP_CLIENT_DURATION,
                        "http_request_method" => method.clone(),
                        "server_address" => address.clone(),
                        "http_response_status_code" => status.as_str().to_owned(),
                    ),
                    Outcome::Failed(error_type) => metrics::histogram!(
                        HTTP_CLIENT_DURATION,
                        "http_request_method" => method.clone(),
                        "server_address" => address.clone(),
                        "error_type" => error_type,
                    ),
                };
                let series = Series {
                    method,
                    address,
                    outcome,
                };
                (series, histogram)
            },
        )
    }
}

impl ClientCall {
    /// Opens the client span of `request`, a child of the current span; the
    /// request's duration goes to a series of `series`.
    pub fn open<B>(request: &Request<B>, series: Arc<ClientSeries>) -> Self {
        let method = request.method().as_str().to_owned();
        let uri = request.uri();
        let address = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        // A proxied request keeps the route it came in on: the low
        // cardinality name the conventions prefer to the bare method.
        let template = request
            .extensions()
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned());
        let name = match &template {
            Some(template) => concat(&[&method, " ", template]),
            None => method.clone(),
        };
        // Every value is given as the span opens (`None` leaves a field
        // unset) and as a plain string: each later `record`, and each value
        // formatted through `Display`, costs again in every layer.
        let url = redacted(uri);
        let span = tracing::info_span!(
            "http.client",
            otel.name = name,
            otel.kind = "client",
            http.request.method = method.as_str(),
            server.address = address.as_str(),
            server.port = port.map(i64::from),
            url.full = url.as_str(),
            url.template = template.as_deref(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        Self {
            span,
            method,
            address,
            started: Instant::now(),
            done: false,
            series,
        }
    }

    /// The server answered with `status`.
    pub fn answered(mut self, status: http::StatusCode) {
        self.done = true;
        self.span
            .record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            self.span.record("error.type", status.as_str());
            self.span.set_status(Status::error(status.to_string()));
        }
        self.record(Outcome::Answered(status));
    }

    fn record(&self, outcome: Outcome) {
        self.series
            .histogram(&self.method, &self.address, outcome)
            .record(self.started.elapsed().as_secs_f64());
    }

    /// No answer came: `error_type` says why, `error` is the exception.
    pub fn failed(mut self, error_type: &'static str, error: &dyn Display) {
        self.done = true;
        self.fail(error_type, &error.to_string());
    }

    fn fail(&mut self, error_type: &'static str, message: &str) {
        self.span.record("error.type", error_type);
        self.span.set_status(Status::error(message.to_owned()));
        self.span.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", error_type),
                KeyValue::new("exception.message", message.to_owned()),
            ],
        );
        self.record(Outcome::Failed(error_type));
    }
}

impl Observation for ClientCall {
    type Body<B> = B;
    type Kept = ClientSeries;

    fn start<B>(request: &mut Request<B>, kept: &Arc<ClientSeries>) -> Self {
        let call = Self::open(request, Arc::clone(kept));
        crate::propagation::inject_span(&call.span, request.headers_mut());
        call
    }

    fn span(&self) -> &Span {
        &self.span
    }

    fn finish<RB, E: Display>(self, result: Result<Response<RB>, E>) -> Result<Response<RB>, E> {
        match &result {
            Ok(response) => self.answered(response.status()),
            Err(error) => self.failed(TRANSPORT_ERROR, error),
        }
        result
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        if !self.done {
            self.fail(CANCELLED, "the request was abandoned before its answer");
        }
    }
}

/// `uri` as `url.full` may show it: without credentials; otherwise as
/// `Uri`'s `Display` writes it.
fn redacted(uri: &http::Uri) -> String {
    let Some(authority) = uri.authority() else {
        return uri.to_string();
    };
    let (credentials, host) = match authority.as_str().rsplit_once('@') {
        Some((_, host)) => ("REDACTED:REDACTED@", host),
        None => ("", authority.as_str()),
    };
    let query = uri.query().map_or(["", ""], |query| ["?", query]);
    concat(&[
        uri.scheme_str().unwrap_or("http"),
        "://",
        credentials,
        host,
        uri.path(),
        query[0],
        query[1],
    ])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanKind, TraceContextExt};
    use tower::ServiceExt;
    use tracing::Instrument as _;

    use super::*;
    use crate::telemetry::SpanTrace as _;
    use crate::test_support::{attribute, sampled, series, traced};

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_gets_a_client_span_its_traceparent_and_a_sample() {
        let seen = Arc::new(Mutex::new(None));
        let mut caller_trace = None;
        let spans = traced(async {
            let recorder = seen.clone();
            let server = tower::service_fn(move |request: Request<()>| {
                *recorder.lock().unwrap() = request
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                async { Ok::<_, Infallible>(Response::builder().status(201).body(()).unwrap()) }
            });
            let caller = tracing::info_span!("caller");
            caller_trace = Some(caller.trace_context().span().span_context().trace_id());
            // Through a router, as the gateway's proxy sees it: the request
            // carries the route it matched.
            let app = axum::Router::new().route(
                "/api/v1/users",
                axum::routing::post(move |request: axum::extract::Request| {
                    let server = server.clone();
                    async move {
                        let (mut parts, _) = request.into_parts();
                        parts.uri = format!("http://user.test:8081{}", parts.uri)
                            .parse()
                            .unwrap();
                        let request = Request::from_parts(parts, ());
                        let response = ObserveHttpClient::new(server)
                            .oneshot(request)
                            .await
                            .unwrap();
                        response.status()
                    }
                }),
            );
            let request = Request::post("/api/v1/users?x=1")
                .header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.oneshot(request).instrument(caller).await.unwrap();
            assert_eq!(response.status(), 201);
        })
        .await;

        let client = spans
            .iter()
            .find(|span| span.span_kind == SpanKind::Client)
            .expect("a client span");
        assert_eq!(client.name, "POST /api/v1/users");
        let caller = spans.iter().find(|span| span.name == "caller").unwrap();
        assert_eq!(client.parent_span_id, caller.span_context.span_id());
        assert_eq!(Some(client.span_context.trace_id()), caller_trace);
        for (key, value) in [
            ("http.request.method", "POST"),
            ("server.address", "user.test"),
            ("server.port", "8081"),
            ("url.full", "http://user.test:8081/api/v1/users?x=1"),
            ("url.template", "/api/v1/users"),
            ("http.response.status_code", "201"),
        ] {
            assert_eq!(attribute(client, key).as_deref(), Some(value), "{key}");
        }
        assert_eq!(client.status, Status::Unset);
        // The server sees the client span as its parent, whatever the
        // caller's headers said.
        let traceparent = seen.lock().unwrap().clone().unwrap();
        assert_eq!(
            traceparent,
            format!(
                "00-{}-{}-01",
                client.span_context.trace_id(),
                client.span_context.span_id()
            )
        );
        let series = series(HTTP_CLIENT_DURATION);
        assert!(
            sampled(
                &series,
                &[
                    ("http_request_method", "POST"),
                    ("server_address", "user.test"),
                    ("http_response_status_code", "201"),
                ]
            ),
            "{series:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn error_answers_and_failures_set_the_error_status() {
        let spans = traced(async {
            let server = tower::service_fn(|request: Request<()>| async move {
                match request.uri().path() {
                    "/missing" => Ok(Response::builder().status(404).body(()).unwrap()),
                    _ => Err("connection refused"),
                }
            });
            let client = ObserveHttpClient::new(server);
            let missing = Request::get("http://payment.test/missing")
                .body(())
                .unwrap();
            client.clone().oneshot(missing).await.unwrap();
            let refused = Request::get("https://payment.test/down").body(()).unwrap();
            client.oneshot(refused).await.unwrap_err();
        })
        .await;

        assert_eq!(spans.len(), 2, "{spans:?}");
        let missing = &spans[0];
        assert_eq!(missing.name, "GET");
        assert_eq!(attribute(missing, "server.port").as_deref(), Some("80"));
        assert_eq!(attribute(missing, "error.type").as_deref(), Some("404"));
        assert!(matches!(missing.status, Status::Error { .. }));
        let refused = &spans[1];
        assert_eq!(attribute(refused, "server.port").as_deref(), Some("443"));
        assert_eq!(
            attribute(refused, "error.type").as_deref(),
            Some(TRANSPORT_ERROR)
        );
        assert_eq!(attribute(refused, "http.response.status_code"), None);
        assert_eq!(
            refused.status,
            Status::error("connection refused".to_owned())
        );
        assert!(refused.events.iter().any(|event| event.name == "exception"));
        let series = series(HTTP_CLIENT_DURATION);
        for labels in [
            [
                ("http_request_method", "GET"),
                ("server_address", "payment.test"),
                ("http_response_status_code", "404"),
            ],
            [
                ("http_request_method", "GET"),
                ("server_address", "payment.test"),
                ("error_type", TRANSPORT_ERROR),
            ],
        ] {
            assert!(sampled(&series, &labels), "{labels:?} in {series:?}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_abandoned_request_counts_as_cancelled() {
        let spans = traced(async {
            let server = tower::service_fn(|_: Request<()>| async {
                std::future::pending::<Result<Response<()>, Infallible>>().await
            });
            let request = Request::get("http://slow.test/").body(()).unwrap();
            let call = ObserveHttpClient::new(server).oneshot(request);
            let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
            assert!(timed_out.is_err());
        })
        .await;
        assert_eq!(spans.len(), 1);
        assert_eq!(
            attribute(&spans[0], "error.type").as_deref(),
            Some(CANCELLED)
        );
        assert!(matches!(spans[0].status, Status::Error { .. }));
        let series = series(HTTP_CLIENT_DURATION);
        assert!(
            sampled(
                &series,
                &[
                    ("http_request_method", "GET"),
                    ("server_address", "slow.test"),
                    ("error_type", CANCELLED),
                ]
            ),
            "{series:?}"
        );
    }

    #[test]
    fn credentials_never_reach_url_full() {
        let uri: http::Uri = "http://alice:secret@user.test:8081/a?b=c".parse().unwrap();
        assert_eq!(
            redacted(&uri),
            "http://REDACTED:REDACTED@user.test:8081/a?b=c"
        );
        // Without credentials, the URI as `Display` writes it.
        for plain in [
            "http://user.test/a",
            "http://user.test",
            "https://user.test:8443/a/b?c=d&e",
            "http://10.0.0.7:8081/?",
            "/relative?x=1",
        ] {
            let uri: http::Uri = plain.parse().unwrap();
            assert_eq!(redacted(&uri), uri.to_string(), "{plain}");
        }
    }
}
