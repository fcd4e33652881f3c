//! The gRPC path: a generated tonic client over `GrpcChannel`, the stack,
//! and real tonic channels to a real server (the standard health service).

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use resilience::grpc::{GrpcChannel, replayable};
use resilience::{Endpoint, Error, Grpc, State, Upstream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn serve_health() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
}

async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn upstream(urls: &str) -> Upstream<resilience::grpc::Replayable<Channel>> {
    Upstream::builder("inventory", urls)
        .unwrap()
        .build(|endpoint: &Endpoint| {
            Ok(replayable(
                Channel::from_shared(endpoint.to_string())?.connect_lazy(),
            ))
        })
        .unwrap()
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test]
async fn idempotent_calls_are_retried_past_a_dead_instance_which_is_then_ejected() {
    let live = serve_health().await;
    let dead = closed_port().await;
    let upstream = upstream(&format!("http://{dead},http://{live}"));
    let protocol = Grpc::new().idempotent_service("grpc.health.v1.Health");
    let mut client = HealthClient::new(GrpcChannel::new(upstream.service(protocol)));

    for _ in 0..20 {
        let response = client.check(check()).await.unwrap().into_inner();
        assert_eq!(response.status(), ServingStatus::Serving);
    }
    assert_eq!(upstream.instances()[0].breaker().state(), State::Open);
    assert_eq!(upstream.instances()[1].breaker().state(), State::Closed);
}

#[tokio::test]
async fn other_calls_are_not_retried_and_fail_fast_once_nothing_is_healthy() {
    let dead = closed_port().await;
    let upstream = upstream(&format!("http://{dead}"));
    let mut client = HealthClient::new(GrpcChannel::new(upstream.service(Grpc::new())));

    for _ in 0..5 {
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let typed = std::error::Error::source(&status).and_then(|e| e.downcast_ref::<Error>());
    assert!(
        matches!(typed, Some(Error::NoHealthyInstance { .. })),
        "{status:?}"
    );
}
