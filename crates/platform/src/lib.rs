//! Process plumbing shared by every Ferrishop binary.
//!
//! Five services that each re-implemented configuration parsing, logging,
//! metrics, health checks and shutdown would drift apart within weeks, and the
//! black-box checks and dashboards that rely on identical behaviour (exit code
//! 2 on bad configuration, `/readyz` bodies, metric names) would break one
//! service at a time. This crate is the one place where that behaviour lives:
//!
//! - [`config`]: environment-first configuration with clap; bad values exit 2
//!   with one line naming the variable.
//! - [`telemetry`]: JSON logs carrying `trace_id`/`span_id`, OpenTelemetry
//!   tracing exported over OTLP (to `OTEL_EXPORTER_OTLP_ENDPOINT`, unless
//!   `OTEL_TRACES_EXPORTER=none`), the W3C propagator installed either way.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, and the HTTP server
//!   metrics layer.
//! - [`health`]: `/healthz`, `/readyz` and the readiness checks behind them.
//! - [`db`]: a Postgres pool that exists from the first instant, and a
//!   bootstrap task that creates the database and runs migrations with
//!   backoff, so a binary outlives a database that is not there yet.
//! - [`grpc`]: a tonic server with health and reflection for every service.
//! - [`service`]: runs HTTP, gRPC and background tasks until SIGTERM/SIGINT,
//!   then drains them within a deadline and flushes telemetry.
//! - [`startup`]: answers requests that arrive before the database is
//!   migrated with a retryable 503 / `UNAVAILABLE` instead of a 500.
//! - [`faults`]: named fault points for chaos runs; a disabled point costs one
//!   atomic load.
//! - [`http_layers`], [`propagation`]: server spans that continue the
//!   caller's W3C trace context, and the carriers that move it across HTTP
//!   headers and gRPC metadata.
//! - [`http_client`]: client spans, `traceparent` and
//!   `http_client_request_duration_seconds` for outgoing HTTP requests.
//! - [`problem`]: RFC 9457 problem details, the one error body every HTTP
//!   surface speaks.
//! - [`pagination`]: page sizes, read the same way by every list.
//! - [`validation`]: the bad fields of a request, all collected before the
//!   request is refused, for gRPC `BadRequest` details and problem `errors`.

pub mod config;
pub mod db;
pub mod faults;
pub mod grpc;
pub mod health;
pub mod http_client;
pub mod http_layers;
pub mod metrics;
pub mod notify;
pub mod observed_client;
pub mod pagination;
pub mod problem;
pub mod propagation;
pub mod service;
pub mod startup;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod validation;

pub use service::Service;

/// Reports a start-up failure on stderr and exits with status 1.
pub fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1)
}
