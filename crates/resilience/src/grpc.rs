//! Putting a resilience stack under tonic's generated clients.
//!
//! A retry needs a copy of the request, and a tonic request body is a
//! one-shot stream. The two adapters here make the stack work on
//! `http::Request<Bytes>` instead:
//!
//! ```text
//! FooServiceClient<GrpcChannel<Resilient<..>>>
//!   GrpcChannel       buffers the encoded request (≤ 4 MiB) into Bytes,
//!                     maps resilience errors to gRPC statuses
//!    └ Resilient      the stack, on http::Request<Bytes>
//!      └ replayable(channel)   Bytes back into a tonic body, per attempt
//! ```
//!
//! Buffering suits unary and server-streaming calls, whose request is one
//! message: every call between Ferrishop's services is one of those. Do not
//! use it for client-streaming or bidirectional calls; the request stream
//! would have to end before the call starts.
//!
//! Errors become statuses a gRPC caller understands: fail-fast rejections
//! (breaker open, bulkhead full, no healthy instance) are `UNAVAILABLE`, a
//! timeout is `DEADLINE_EXCEEDED`, a transport error keeps tonic's own
//! mapping (`UNAVAILABLE` when tonic has none: the call got no answer). The
//! typed [`Error`] stays reachable as the status's `source()`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::Status;
use tonic::body::Body;
use tower::Service;
use tower::util::MapRequest;

use crate::error::Error;

/// Largest request message buffered: gRPC's default 4 MiB message limit
/// plus the 5-byte frame header.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024 + 5;

/// A client that takes buffered requests, for the instance factory: wrap the
/// instance's tonic `Channel` in it.
pub type Replayable<S> = MapRequest<S, fn(http::Request<Bytes>) -> http::Request<Body>>;

/// Wraps an instance's channel so that it accepts `http::Request<Bytes>`.
pub fn replayable<S>(channel: S) -> Replayable<S> {
    MapRequest::new(channel, into_tonic_body)
}

fn into_tonic_body(request: http::Request<Bytes>) -> http::Request<Body> {
    request.map(|bytes| Body::new(Full::new(bytes)))
}

/// The service tonic's generated clients call; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct GrpcChannel<S> {
    inner: S,
    max_request_bytes: usize,
}

impl<S> GrpcChannel<S> {
    /// Wraps a stack taking `http::Request<Bytes>`, such as
    /// [`Upstream::service`](crate::Upstream::service) with
    /// [`Grpc`](crate::Grpc).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            max_request_bytes: MAX_REQUEST_BYTES,
        }
    }

    /// Changes the largest request buffered (default [`MAX_REQUEST_BYTES`]).
    #[must_use]
    pub fn max_request_bytes(mut self, max: usize) -> Self {
        self.max_request_bytes = max;
        self
    }
}

/// The gRPC status for a resilience error; see the [module docs](self).
pub fn status_from(error: Error) -> Status {
    let mut status = match error {
        Error::Upstream { upstream, source } => {
            return Status::try_from_error(source).unwrap_or_else(|source| {
                let mut status =
                    Status::unavailable(format!("call to {upstream} failed: {source}"));
                status.set_source(Arc::from(source));
                status
            });
        }
        Error::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    };
    status.set_source(Arc::new(error));
    status
}

impl<S, ResBody> Service<http::Request<Body>> for GrpcChannel<S>
where
    S: Service<http::Request<Bytes>, Response = http::Response<ResBody>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(status_from)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let max = self.max_request_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, max).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<LengthLimitError>() => {
                    return Err(Status::resource_exhausted(format!(
                        "request message larger than {max} bytes"
                    )));
                }
                Err(error) => return Err(Status::from_error(error)),
            };
            ready
                .call(http::Request::from_parts(parts, bytes))
                .await
                .map_err(status_from)
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn errors_map_to_the_statuses_callers_expect() {
        let upstream: Arc<str> = Arc::from("inventory");
        let open = status_from(Error::CircuitOpen {
            upstream: upstream.clone(),
        });
        assert_eq!(open.code(), Code::Unavailable);
        let typed = std::error::Error::source(&open).and_then(|e| e.downcast_ref::<Error>());
        assert!(matches!(typed, Some(Error::CircuitOpen { .. })));

        let shed = status_from(Error::Overloaded {
            upstream: upstream.clone(),
        });
        assert_eq!(shed.code(), Code::Unavailable);
        let late = status_from(Error::Timeout {
            upstream: upstream.clone(),
        });
        assert_eq!(late.code(), Code::DeadlineExceeded);
        let inner = status_from(Error::Upstream {
            upstream,
            source: Box::new(Status::not_found("no such product")),
        });
        assert_eq!(inner.code(), Code::NotFound);
        let reset = status_from(Error::Upstream {
            upstream: Arc::from("inventory"),
            source: "connection reset".into(),
        });
        assert_eq!(reset.code(), Code::Unavailable);
        assert_eq!(
            reset.message(),
            "call to inventory failed: connection reset"
        );
    }
}
