//! Putting a resilience stack under tonic's generated clients.
//!
//! A retry needs a copy of the request, and a tonic request body is a
//! one-shot stream. The two adapters here make the stack work on
//! `http::Request<Bytes>` instead:
//!
//! ```text
//! FooServiceClient<GrpcChannel<Resilient<..>>>
//!   GrpcChannel       buffers the encoded request (≤ 4 MiB) into Bytes
//!                     before the stack gives the call a slot (a caller
//!                     that never sends its message holds none), maps
//!                     resilience errors to gRPC statuses
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
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::Status;
use tonic::body::Body;
use tower::util::MapRequest;
use tower::{Service, ServiceExt};

use crate::error::Error;

/// The bytes before a gRPC message on the wire: a compression flag and the
/// message's length.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Largest request message buffered: gRPC's default 4 MiB message limit
/// plus the frame header.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024 + FRAME_HEADER_BYTES;

/// How long a request's message may take to arrive.
pub const REQUEST_MESSAGE_DEADLINE: Duration = Duration::from_secs(5);

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

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The stack's readiness (a bulkhead slot) is awaited in `call`, once
        // the request's message is in: a caller that opens a call and never
        // sends it must not hold a slot of the upstream's meanwhile.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let max = self.max_request_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let received =
                tokio::time::timeout(REQUEST_MESSAGE_DEADLINE, Limited::new(body, max).collect())
                    .await;
            let bytes = match received {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(error)) if error.is::<LengthLimitError>() => {
                    return Err(Status::resource_exhausted(format!(
                        "request message larger than {max} bytes"
                    )));
                }
                Ok(Err(error)) => return Err(Status::from_error(error)),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "request message not received within {REQUEST_MESSAGE_DEADLINE:?}"
                    )));
                }
            };
            inner
                .oneshot(http::Request::from_parts(parts, bytes))
                .await
                .map_err(status_from)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body::Frame;
    use tonic::Code;

    use super::*;

    /// A stack that answers every request and counts the slots (readiness)
    /// it gave.
    #[derive(Clone, Default)]
    struct Counting {
        slots: Arc<AtomicUsize>,
    }

    impl Service<http::Request<Bytes>> for Counting {
        type Response = http::Response<Body>;
        type Error = Error;
        type Future = std::future::Ready<Result<Self::Response, Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            self.slots.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Bytes>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_message_that_never_comes_takes_no_slot() {
        let stack = Counting::default();
        let channel = GrpcChannel::new(stack.clone());
        let (_sender, frames) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(1);
        let never = http::Request::new(Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(frames),
        )));
        let refused = channel.clone().oneshot(never).await.unwrap_err();
        assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
        assert_eq!(stack.slots.load(Ordering::SeqCst), 0);

        let sent = http::Request::new(Body::new(Full::new(Bytes::from_static(b"\0\0\0\0\0"))));
        channel.oneshot(sent).await.unwrap();
        assert_eq!(stack.slots.load(Ordering::SeqCst), 1);
    }

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
