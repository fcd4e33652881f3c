//! gRPC plumbing shared by every binary: the server side ([`server`]: health,
//! reflection, a span and `rpc_server_duration_seconds` per call) and the
//! client side ([`client`]: channels whose calls carry the caller's trace
//! context and record `rpc_client_duration_seconds`).

pub mod client;
pub mod server;

pub use client::{ClientChannel, channel};
pub(crate) use server::set_health;
pub use server::{GrpcServices, MAX_MESSAGE_BYTES, ObserveGrpcLayer, REQUEST_TIMEOUT};

/// `/ferrishop.order.v1.OrderService/PlaceOrder` → (service, method).
pub(crate) fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_owned();
    let method = parts.next().unwrap_or_default().to_owned();
    (service, method)
}

/// The status of a response whose `grpc-status` came in the headers (a
/// trailers-only response: how a handler's `Err(Status)` travels), else `0`.
pub(crate) fn header_status<B>(response: &http::Response<B>) -> String {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("0")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ferrishop.order.v1.OrderService/PlaceOrder"),
            (
                "ferrishop.order.v1.OrderService".into(),
                "PlaceOrder".into()
            )
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
    }
}
