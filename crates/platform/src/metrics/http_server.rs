//! `http_server_request_duration_seconds`, recorded by a tower layer on
//! every route.
//!
//! The layer keeps the histogram handles it has recorded into, per route
//! ([`KeptHistograms`]): a route answers with a handful of (method, status)
//! pairs for the life of the process.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::response::{IntoResponse, Response};
use http::{Method, Request, StatusCode};
use metrics::Histogram;
use tower::{Layer, Service};

use super::kept::KeptHistograms;

/// Histogram of one request's duration, to its response's headers, seconds.
pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";

/// `http_route` of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Tower layer recording [`HTTP_SERVER_DURATION`] with the OpenTelemetry
/// semantic-convention labels (`http_request_method`, `http_route`,
/// `http_response_status_code`), and the `http.server.request` fault point
/// (an injected fault answers 503 problem+json, and is recorded as such).
/// Install it with `route_layer`, so that the matched route template (not
/// the raw path) is the `http_route` label, which keeps the label's
/// cardinality bounded, and so that each route keeps its own series.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackHttpLayer;

impl<S> Layer<S> for TrackHttpLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackHttp {
            inner,
            series: Arc::default(),
        }
    }
}

/// The service made by [`TrackHttpLayer`].
#[derive(Debug, Clone)]
pub struct TrackHttp<S> {
    inner: S,
    series: Arc<RouteSeries>,
}

impl<S, B> Service<Request<B>> for TrackHttp<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let series = self.series.clone();
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        Box::pin(async move {
            let response = match crate::faults::inject("http.server.request").await {
                Ok(()) => inner.call(request).await?,
                Err(fault) => crate::problem::Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "FAULT_INJECTED",
                    fault.to_string(),
                )
                .into_response(),
            };
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            series
                .histogram(route, &method, response.status())
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The series a route has recorded into.
#[derive(Debug, Default)]
struct RouteSeries(KeptHistograms<Series>);

/// One series' labels.
struct Series {
    route: Box<str>,
    method: Method,
    status: StatusCode,
}

impl Series {
    fn is(&self, route: &str, method: &Method, status: StatusCode) -> bool {
        self.status == status && self.method == *method && *self.route == *route
    }
}

impl RouteSeries {
    fn histogram(&self, route: &str, method: &Method, status: StatusCode) -> Histogram {
        self.0.get(
            |series| series.is(route, method, status),
            || {
                let histogram = metrics::histogram!(
                    HTTP_SERVER_DURATION,
                    "http_request_method" => method.as_str().to_owned(),
                    "http_route" => route.to_owned(),
                    "http_response_status_code" => status.as_str().to_owned(),
                );
                let series = Series {
                    route: route.into(),
                    method: method.clone(),
                    status,
                };
                (series, histogram)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::kept;
    use crate::test_support::{sampled, series};

    fn app() -> Router {
        Router::new()
            .route(
                "/items/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                        if id == 0 {
                            StatusCode::NOT_FOUND
                        } else {
                            StatusCode::OK
                        }
                    },
                )
                .post(|| async { StatusCode::CREATED }),
            )
            .route_layer(TrackHttpLayer)
    }

    async fn send(app: &Router, method: Method, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    }

    fn labels<'a>(method: &'a str, status: &'a str) -> [(&'a str, &'a str); 3] {
        [
            ("http_request_method", method),
            ("http_route", "/items/{id}"),
            ("http_response_status_code", status),
        ]
    }

    /// Every request is one sample of the series of its own method, route
    /// template and status, whether its handle was kept or not.
    #[tokio::test(flavor = "current_thread")]
    async fn each_request_is_a_sample_of_its_own_series() {
        series(HTTP_SERVER_DURATION);
        let app = app();
        for (method, path, status) in [
            (Method::GET, "/items/7", StatusCode::OK),
            (Method::GET, "/items/8", StatusCode::OK),
            (Method::GET, "/items/0", StatusCode::NOT_FOUND),
            (Method::POST, "/items/7", StatusCode::CREATED),
            (Method::GET, "/items/9", StatusCode::OK),
        ] {
            assert_eq!(send(&app, method, path).await, status);
        }
        let recorded = series(HTTP_SERVER_DURATION);
        let count = |labels: &[(&str, &str)]| {
            recorded
                .iter()
                .find(|(have, _)| {
                    labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
                })
                .map_or(0, |(_, count)| *count)
        };
        assert_eq!(count(&labels("GET", "200")), 3, "{recorded:?}");
        assert_eq!(count(&labels("GET", "404")), 1, "{recorded:?}");
        assert_eq!(count(&labels("POST", "201")), 1, "{recorded:?}");
        assert_eq!(recorded.len(), 3, "{recorded:?}");
    }

    /// An injected `http.server.request` fault answers 503 problem+json
    /// without running the handler, and is counted as the 503 it is.
    #[tokio::test(flavor = "current_thread")]
    async fn an_injected_fault_is_answered_and_counted() {
        series(HTTP_SERVER_DURATION);
        let app = app();
        crate::faults::set(
            "http.server.request",
            Some(crate::faults::FaultAction::Error { probability: 1.0 }),
        );
        let request = Request::post("/items/7").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        crate::faults::set("http.server.request", None);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(
            send(&app, Method::POST, "/items/7").await,
            StatusCode::CREATED
        );
        let recorded = series(HTTP_SERVER_DURATION);
        assert!(sampled(&recorded, &labels("POST", "503")), "{recorded:?}");
        assert!(sampled(&recorded, &labels("POST", "201")), "{recorded:?}");
    }

    /// A route keeps a bounded number of series; beyond them, requests are
    /// still recorded, through the recorder's own lookup.
    #[test]
    fn a_route_keeps_a_bounded_number_of_series() {
        series(HTTP_SERVER_DURATION);
        let route = RouteSeries::default();
        let statuses = (200..200 + kept::LIMIT as u16 + 8)
            .filter_map(|code| StatusCode::from_u16(code).ok())
            .collect::<Vec<_>>();
        for status in &statuses {
            route.histogram("/r", &Method::GET, *status).record(0.1);
            route.histogram("/r", &Method::GET, *status).record(0.1);
        }
        assert_eq!(route.0.len(), kept::LIMIT);
        let recorded = series(HTTP_SERVER_DURATION);
        for status in &statuses {
            let labels = [
                ("http_request_method", "GET"),
                ("http_route", "/r"),
                ("http_response_status_code", status.as_str()),
            ];
            assert!(sampled(&recorded, &labels), "{status}: {recorded:?}");
        }
        assert!(
            recorded.iter().all(|(_, count)| *count == 2),
            "{recorded:?}"
        );
    }
}
