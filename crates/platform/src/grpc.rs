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
    pub fn add<S>(mut self, service: S) -> Self
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
