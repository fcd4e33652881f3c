//! Prometheus metrics.
//!
//! The `metrics` facade is what code records into; the Prometheus exporter is
//! installed once per process and rendered at `/metrics` on the HTTP port.
//! Latency histograms get explicit buckets (in seconds) sized for what this
//! platform measures: sub-millisecond in-process work up to multi-second
//! sagas.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for every `*_seconds` histogram.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once; later calls return the same
/// handle) and spawns its upkeep task.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn render() -> Response {
    match HANDLE.get() {
        Some(handle) => (
            [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

/// Axum middleware recording `http_server_request_duration_seconds` with the
/// OpenTelemetry semantic-convention labels. Install it with `route_layer` so
/// the matched route template (not the raw path) is the `http_route` label,
/// which keeps the label's cardinality bounded.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    if let Err(fault) = crate::faults::inject("http.server.request").await {
        return crate::problem::Problem::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "FAULT_INJECTED",
            fault.to_string(),
        )
        .into_response();
    }
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "http_request_method" => method,
        "http_route" => route,
        "http_response_status_code" => response.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
