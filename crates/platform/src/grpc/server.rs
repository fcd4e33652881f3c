//! The gRPC side of a binary: its services plus `grpc.health.v1.Health` and
//! server reflection (v1 and v1alpha), so `grpcurl -plaintext host:port list`
//! works against every binary.
//!
//! Health mirrors readiness: each service reports `NOT_SERVING` until the
//! readiness checks pass, follows them while the process runs, and turns
//! `NOT_SERVING` for good when shutdown begins.

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;

/// Largest message a server accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Per-request deadline enforced by the server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The services one binary serves over gRPC, with the descriptor sets that
/// describe them for reflection.
#[derive(Default)]
pub struct GrpcServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
}

impl std::fmt::Debug for GrpcServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServices")
            .field("names", &self.names)
            .finish()
    }
}

impl GrpcServices {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a generated tonic server (e.g. `UserServiceServer::new(..)`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds an encoded `FileDescriptorSet` describing the registered services.
    pub fn describe(mut self, descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(descriptor_set);
        self
    }

    /// Names of the registered services (without health and reflection).
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Adds health and reflection; returns the routes and the health reporter.
    pub(crate) fn finish(
        mut self,
    ) -> Result<
        (tonic::service::Routes, HealthReporter, Vec<&'static str>),
        tonic_reflection::server::Error,
    > {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in &self.descriptor_sets {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        for name in self.names.iter().chain(["grpc.health.v1.Health"].iter()) {
            v1 = v1.with_service_name(*name);
            v1alpha = v1alpha.with_service_name(*name);
        }
        self.routes.add_service(health);
        self.routes.add_service(v1.build_v1()?);
        self.routes.add_service(v1alpha.build_v1alpha()?);
        Ok((self.routes.routes(), reporter, self.names))
    }
}

/// Sets the overall (`""`) and every named service's serving status.
pub(crate) async fn set_health(reporter: &HealthReporter, names: &[&'static str], serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Tower layer for the gRPC server: a server span per call (parented to the
/// caller's `traceparent`) and `rpc_server_duration_seconds`.
///
/// The status label is the `grpc-status` of a trailers-only response (how
/// tonic answers a handler's `Err(Status)`), otherwise `0`: a unary call that
/// produced a message succeeded, and a stream's later failure is recorded on
/// its span rather than here.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveGrpcLayer;

impl<S> tower::Layer<S> for ObserveGrpcLayer {
    type Service = ObserveGrpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveGrpc { inner }
    }
}

/// The service made by [`ObserveGrpcLayer`].
#[derive(Debug, Clone)]
pub struct ObserveGrpc<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ObserveGrpc<S>
where
    S: Service<Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (service, method) = super::split_path(request.uri().path());
        let infrastructure = service.starts_with("grpc.");
        let span = if infrastructure {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc.server",
                otel.name = format!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                request_id = tracing::field::Empty,
            )
        };
        if !infrastructure {
            let _ = span.set_parent(crate::propagation::extract(request.headers()));
            if let Some(id) = crate::http_layers::request_id(request.headers()) {
                span.record("request_id", id);
            }
        }
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = inner.call(request).instrument(span.clone()).await?;
            let code = super::header_status(&response);
            span.record("rpc.grpc.status_code", code.as_str());
            if code != "0" {
                span.record("otel.status_code", "ERROR");
            }
            metrics::histogram!(
                "rpc_server_duration_seconds",
                "rpc_service" => service,
                "rpc_method" => method,
                "rpc_grpc_status_code" => code,
            )
            .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}
