//! The gRPC side of a binary: its services plus `grpc.health.v1.Health` and
//! server reflection (v1 and v1alpha), so `grpcurl -plaintext host:port list`
//! works against every binary.
//!
//! Health mirrors readiness: each service reports `NOT_SERVING` until the
//! readiness checks pass, follows them while the process runs, and turns
//! `NOT_SERVING` for good when shutdown begins.

use std::convert::Infallible;
use std::time::Duration;

use super::CallEnd;

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
/// A call is timed to its response's headers (a stream's lifetime says
/// nothing about latency) and counted with its final status: the
/// `grpc-status` of a trailers-only response (how tonic answers a handler's
/// `Err(Status)`), else that of the trailers once the body has been sent —
/// so a stream failing halfway counts as failed. A body dropped before its
/// end (the client went away) counts as `CANCELLED`. The span lasts until
/// then, so a stream's span covers the stream.
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
    RB: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
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
        use crate::telemetry::SpanTrace;
        use tracing::Instrument;

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
            let _ = span.continue_trace(crate::propagation::extract(request.headers()));
            if let Some(id) = crate::http_layers::request_id(request.headers()) {
                span.record("request_id", id);
            }
        }
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = inner.call(request).instrument(span.clone()).await?;
            let call = ServerCall {
                span,
                service,
                method,
                to_headers: started.elapsed(),
                done: false,
            };
            Ok(match super::trailers_only_status(&response) {
                Some(code) => {
                    call.end(code);
                    response.map(Body::new)
                }
                None => response.map(|body| Body::new(super::StatusInTrailers::new(body, call))),
            })
        })
    }
}

/// One call being answered: its span, its method, the time its response's
/// headers took. Dropped before its status was known, it counts as
/// `CANCELLED`.
struct ServerCall {
    span: tracing::Span,
    service: String,
    method: String,
    to_headers: Duration,
    done: bool,
}

impl CallEnd for ServerCall {
    fn end(mut self, code: &str) {
        self.record(code);
    }
}

impl ServerCall {
    fn record(&mut self, code: &str) {
        self.done = true;
        super::record_status(&self.span, code);
        let (service, method) = if code == super::UNIMPLEMENTED {
            (super::OTHER.to_owned(), super::OTHER.to_owned())
        } else {
            (
                std::mem::take(&mut self.service),
                std::mem::take(&mut self.method),
            )
        };
        // The name written out: the deployment checks read it from here.
        metrics::histogram!(
            "rpc_server_duration_seconds",
            "rpc_service" => service,
            "rpc_method" => method,
            "rpc_grpc_status_code" => code.to_owned(),
        )
        .record(self.to_headers.as_secs_f64());
    }
}

impl Drop for ServerCall {
    fn drop(&mut self) {
        if !self.done {
            self.record(super::CANCELLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, StreamBody};
    use opentelemetry::trace::Status;
    use tonic::codegen::Bytes;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::test_support::{Series, attribute, sampled, series, traced};

    type Frames = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame, Infallible>>>>;
    type Frame = http_body::Frame<Bytes>;

    /// A server streaming `messages` then trailers with `status` (none: no
    /// trailers at all).
    fn streaming(
        messages: usize,
        status: Option<&'static str>,
    ) -> impl Service<
        Request<()>,
        Response = http::Response<Frames>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_: Request<()>| async move {
            let mut frames: Vec<Result<Frame, Infallible>> = (0..messages)
                .map(|_| Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))))
                .collect();
            if let Some(status) = status {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                frames.push(Ok(Frame::trailers(trailers)));
            }
            Ok(http::Response::new(StreamBody::new(tokio_stream::iter(
                frames,
            ))))
        })
    }

    fn list_products() -> Request<()> {
        Request::post("/ferrishop.inventory.v1.InventoryService/ListProducts")
            .body(())
            .unwrap()
    }

    fn counted(series: &Series, code: &str) -> bool {
        sampled(
            series,
            &[
                ("rpc_service", "ferrishop.inventory.v1.InventoryService"),
                ("rpc_method", "ListProducts"),
                ("rpc_grpc_status_code", code),
            ],
        )
    }

    /// A stream that fails halfway is counted, once it has ended, with the
    /// status of its trailers; its span lasts until then and fails.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_is_counted_with_the_status_of_its_trailers() {
        let spans = traced(async {
            series("rpc_server_duration_seconds");
            let response = ObserveGrpcLayer
                .layer(streaming(3, Some("13")))
                .oneshot(list_products())
                .await
                .unwrap();
            let before = series("rpc_server_duration_seconds");
            assert!(before.iter().all(|(_, count)| *count == 0), "{before:?}");
            let body = response.into_body().collect().await.unwrap();
            assert_eq!(body.trailers().unwrap()["grpc-status"], "13");
            let after = series("rpc_server_duration_seconds");
            assert!(counted(&after, "13"), "{after:?}");
            assert_eq!(after.iter().map(|(_, count)| count).sum::<usize>(), 1);
        })
        .await;
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(
            attribute(&spans[0], "rpc.grpc.status_code").as_deref(),
            Some("13")
        );
        assert!(matches!(spans[0].status, Status::Error { .. }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_succeeds_counts_as_ok() {
        let spans = traced(async {
            series("rpc_server_duration_seconds");
            let response = ObserveGrpcLayer
                .layer(streaming(1, Some("0")))
                .oneshot(list_products())
                .await
                .unwrap();
            response.into_body().collect().await.unwrap();
            let after = series("rpc_server_duration_seconds");
            assert!(counted(&after, "0"), "{after:?}");
        })
        .await;
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert!(!matches!(spans[0].status, Status::Error { .. }));
    }

    /// A handler's `Err(Status)` comes as a trailers-only response: counted
    /// at once, body or no body.
    #[tokio::test(flavor = "current_thread")]
    async fn a_trailers_only_answer_is_counted_at_once() {
        traced(async {
            series("rpc_server_duration_seconds");
            let refusing = tower::service_fn(|_: Request<()>| async {
                let response = http::Response::builder()
                    .header("grpc-status", "5")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            let response = ObserveGrpcLayer
                .layer(refusing)
                .oneshot(list_products())
                .await
                .unwrap();
            let now = series("rpc_server_duration_seconds");
            assert!(counted(&now, "5"), "{now:?}");
            drop(response);
            let later = series("rpc_server_duration_seconds");
            assert!(later.iter().all(|(_, count)| *count == 0), "{later:?}");
        })
        .await;
    }

    /// Calls to methods nobody serves share one series, whatever path the
    /// caller made up.
    #[tokio::test(flavor = "current_thread")]
    async fn unimplemented_calls_are_counted_under_other() {
        traced(async {
            series("rpc_server_duration_seconds");
            let unimplemented = tower::service_fn(|_: Request<()>| async {
                let response = http::Response::builder()
                    .header("grpc-status", super::super::UNIMPLEMENTED)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            for path in ["/made.up.Service/Method1", "/another/Method2", "/x"] {
                let request = Request::post(path).body(()).unwrap();
                ObserveGrpcLayer
                    .layer(unimplemented)
                    .oneshot(request)
                    .await
                    .unwrap();
            }
            let after = series("rpc_server_duration_seconds");
            let other = super::super::OTHER;
            let counted: Vec<_> = after.iter().filter(|(_, count)| *count > 0).collect();
            assert_eq!(counted.len(), 1, "{after:?}");
            assert!(
                sampled(
                    &after,
                    &[
                        ("rpc_service", other),
                        ("rpc_method", other),
                        ("rpc_grpc_status_code", "12"),
                    ],
                ),
                "{after:?}"
            );
            assert_eq!(counted[0].1, 3, "{after:?}");
        })
        .await;
    }

    /// A client that leaves mid-stream drops the body: `CANCELLED`. A
    /// stream that ends without any status is `UNKNOWN`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_left_or_without_status_is_not_ok() {
        traced(async {
            series("rpc_server_duration_seconds");
            let response = ObserveGrpcLayer
                .layer(streaming(3, Some("0")))
                .oneshot(list_products())
                .await
                .unwrap();
            let mut body = response.into_body();
            body.frame().await.unwrap().unwrap();
            drop(body);
            let left = series("rpc_server_duration_seconds");
            assert!(counted(&left, super::super::CANCELLED), "{left:?}");

            let response = ObserveGrpcLayer
                .layer(streaming(2, None))
                .oneshot(list_products())
                .await
                .unwrap();
            response.into_body().collect().await.unwrap();
            let unfinished = series("rpc_server_duration_seconds");
            assert!(
                counted(&unfinished, super::super::UNKNOWN),
                "{unfinished:?}"
            );
        })
        .await;
    }
}
