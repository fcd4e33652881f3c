//! Requests that arrive before a service can serve them.
//!
//! A binary listens from its first instant — probes get an answer, an
//! orchestrator sees it start — while its database is still being created
//! and migrated in the background ([`crate::db::Database::bootstrap`]). A
//! request in that window would reach a handler whose queries fail against
//! tables that do not exist yet: a 500 for what is really "not yet". The
//! gate answers such requests itself: HTTP 503 problem+json
//! `SERVICE_STARTING` with `Retry-After: 1`, gRPC `UNAVAILABLE` — both
//! retryable for clients and for the gateway. `/healthz`, `/readyz`,
//! `/metrics`, gRPC health and reflection are never gated: they are how
//! the outside learns that the service is starting.

use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use http::{HeaderValue, StatusCode, header};

use crate::db::Database;
use crate::problem::Problem;

/// The problem `code` of a request refused while the service starts.
pub const SERVICE_STARTING: &str = "SERVICE_STARTING";

const DETAIL: &str = "the service is starting: its database is not migrated yet";

/// Open once the service's database is migrated (it never closes again);
/// always open for a service without one.
#[derive(Debug, Clone, Default)]
pub struct StartupGate {
    database: Option<Database>,
}

impl StartupGate {
    pub fn new(database: Database) -> Self {
        Self {
            database: Some(database),
        }
    }

    /// No database to wait for: the gate need not be installed at all.
    pub fn is_always_open(&self) -> bool {
        self.database.is_none()
    }

    pub fn is_open(&self) -> bool {
        self.database.as_ref().is_none_or(Database::is_migrated)
    }
}

/// Axum middleware (`from_fn_with_state`) for the application's routes.
pub async fn gate_http(State(gate): State<StartupGate>, request: Request, next: Next) -> Response {
    if gate.is_open() {
        return next.run(request).await;
    }
    let mut response =
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, SERVICE_STARTING, DETAIL).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Tower layer for the gRPC server: `UNAVAILABLE` for the application's
/// methods while the gate is closed.
#[derive(Debug, Clone)]
pub struct StartupGateLayer {
    gate: StartupGate,
}

impl StartupGateLayer {
    pub fn new(gate: StartupGate) -> Self {
        Self { gate }
    }
}

impl<S> tower::Layer<S> for StartupGateLayer {
    type Service = GatedGrpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatedGrpc {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service made by [`StartupGateLayer`].
#[derive(Debug, Clone)]
pub struct GatedGrpc<S> {
    inner: S,
    gate: StartupGate,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GatedGrpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // `/grpc.health.v1.Health/Check`, `/grpc.reflection.v1.ServerReflection/...`
        let infrastructure = request.uri().path().starts_with("/grpc.");
        if infrastructure || self.gate.is_open() {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(ready(Ok(tonic::Status::unavailable(DETAIL).into_http())))
        }
    }
}
