//! gRPC plumbing shared by every binary: the server side ([`server`]: health,
//! reflection, a span and `rpc_server_duration_seconds` per call) and the
//! client side ([`client`]: channels whose calls carry the caller's trace
//! context and record `rpc_client_duration_seconds`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::Frame;
use pin_project_lite::pin_project;

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

/// `rpc.grpc.status_code` of a call dropped before its status was known.
pub const CANCELLED: &str = "1";
/// `rpc.grpc.status_code` of a call whose response ended without a
/// `grpc-status` (`UNKNOWN`).
pub const UNKNOWN: &str = "2";
/// `rpc.grpc.status_code` of a call to a method nobody serves.
pub const UNIMPLEMENTED: &str = "12";
/// The `rpc_service` and `rpc_method` of such a call: its path is the
/// caller's invention, and one series per invented path would grow the
/// metrics without bound (OpenTelemetry's name for "not a known value").
pub const OTHER: &str = "_OTHER";

/// The `grpc-status` in `headers` (a response's, or its trailers), if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
}

/// The `grpc-status` of a trailers-only response (how a handler's
/// `Err(Status)` travels): the status in the headers, if any.
pub(crate) fn trailers_only_status<B>(response: &http::Response<B>) -> Option<&str> {
    grpc_status(response.headers())
}

/// A call's final status on its span: failed unless `0`.
fn record_status(span: &tracing::Span, code: &str) {
    span.record("rpc.grpc.status_code", code);
    if code != "0" {
        span.record("otel.status_code", "ERROR");
    }
}

/// An observed call, told its final status once.
pub trait CallEnd {
    fn end(self, code: &str);
}

pin_project! {
    /// A response body that ends its call with the `grpc-status` of its
    /// trailers, when they pass; with [`UNKNOWN`] when it ends or fails
    /// without any. Dropped before then, it drops the call unended (which
    /// counts it as cancelled).
    pub struct StatusInTrailers<B, C> {
        #[pin]
        body: B,
        call: Option<C>,
    }
}

impl<B, C> StatusInTrailers<B, C> {
    pub(crate) fn new(body: B, call: C) -> Self {
        Self {
            body,
            call: Some(call),
        }
    }

    /// The body of a call already ended (a trailers-only response).
    pub(crate) fn ended(body: B) -> Self {
        Self { body, call: None }
    }
}

impl<B: http_body::Body, C: CallEnd> http_body::Body for StatusInTrailers<B, C> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        let status = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(UNKNOWN)),
            Some(Err(_)) | None => Some(UNKNOWN),
        };
        if let Some(code) = status
            && let Some(call) = this.call.take()
        {
            call.end(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // Polled once more past its end when the status is still to come.
        self.call.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
