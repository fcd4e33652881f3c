//! gRPC health and reflection, as a client such as grpcurl sees them.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// A channel to `url`, e.g. `http://127.0.0.1:50052`.
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap_or_else(|e| panic!("bad gRPC URL {url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// `grpc.health.v1.Health/Check` for `service` (`""` is the whole server).
pub async fn health(url: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(url).await);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?} at {url} failed: {e}"));
    ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown)
}

/// Polls health until it reports `want` or `within` passes; returns the last status.
pub async fn wait_for_health(
    url: &str,
    service: &str,
    want: ServingStatus,
    within: std::time::Duration,
) -> ServingStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = health(url, service).await;
        if status == want || std::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The services listed by server reflection (v1), sorted.
pub async fn reflected_services(url: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap_or_else(|e| panic!("reflection at {url} failed: {e}"))
        .into_inner();
    let message = responses
        .message()
        .await
        .expect("reflection stream failed")
        .expect("reflection sent no answer");
    let Some(MessageResponse::ListServicesResponse(list)) = message.message_response else {
        panic!("unexpected reflection answer: {message:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}
