//! `gateway`: wiring only. The public REST and gRPC edge of Ferrishop.

use std::process::ExitCode;

use platform::Service;
use platform::grpc::GrpcServices;

mod config;

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("gateway", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    tracing::debug!(upstreams = ?config.upstreams, "upstreams");
    service
        .http(config.http_addr, axum::Router::new())
        .grpc(config.grpc_addr, GrpcServices::new())
        .run()
        .await
}
