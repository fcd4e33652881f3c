//! gRPC clients.
//!
//! Every outgoing call gets a client span, carries that span's W3C trace
//! context in its metadata (so the server's span becomes its child), and
//! records `rpc_client_duration_seconds`. Wrapping the channel rather than
//! each call site means no caller can forget.
//!
//! As on the server side ([`super::ObserveGrpcLayer`]), a call is timed to
//! its response's headers and counted with its final status: that of a
//! trailers-only response (how a failed call is answered), else that of the
//! trailers once the body has been read, so a stream failing halfway counts
//! as failed. A call abandoned before its end (the caller's deadline, a
//! caller that stopped reading) counts as `CANCELLED` (1), as the caller saw
//! it; a transport failure before any answer as `UNAVAILABLE` (14).

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use tonic::transport::{Channel, Endpoint};
use tracing::Span;

use super::{CallEnd, StatusInTrailers};
use crate::metrics::kept::KeptHistograms;
use crate::observed_client::{Observation, ObservedClient};

/// A channel whose calls are traced and measured.
pub type ClientChannel = ObserveGrpcClient<Channel>;

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline of one call (a request's own `grpc-timeout` wins when shorter).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid gRPC endpoint {url:?}: {source}")]
pub struct ChannelError {
    url: String,
    source: tonic::transport::Error,
}

/// A lazily connecting channel to `url` (e.g. `http://127.0.0.1:50055`):
/// nothing is dialled until the first call, and a broken connection is
/// re-established on the next one.
pub fn channel(url: &str) -> Result<ClientChannel, ChannelError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| ChannelError {
        url: url.to_owned(),
        source,
    })?;
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(ObserveGrpcClient::new(channel))
}

/// Tower service tracing and measuring the calls it passes to its inner
/// service (a channel); see the module docs.
pub type ObserveGrpcClient<S> = ObservedClient<S, GrpcCall>;

/// `rpc.grpc.status_code` of a call that produced no response: the transport
/// failed (`UNAVAILABLE`).
pub const UNAVAILABLE: &str = "14";
pub use super::CANCELLED;

/// One call in flight: its span, its method, its clock. Dropped before its
/// status was known, it counts as [`CANCELLED`].
#[derive(Debug)]
pub struct GrpcCall {
    span: Span,
    service: String,
    method: String,
    started: Instant,
    /// How long the response's headers took, once they came.
    to_headers: Option<Duration>,
    done: bool,
    series: Arc<CallSeries>,
}

/// The series of `rpc_client_duration_seconds` one channel has recorded
/// into.
#[derive(Debug, Default)]
pub struct CallSeries(KeptHistograms<Series>);

/// One series' labels.
struct Series {
    service: String,
    method: String,
    code: String,
}

impl CallSeries {
    fn histogram(&self, service: &str, method: &str, code: &str) -> metrics::Histogram {
        self.0.get(
            |series| series.code == code && series.method == method && series.service == service,
            || {
                let series = Series {
                    service: service.to_owned(),
                    method: method.to_owned(),
                    code: code.to_owned(),
                };
                // The name written out: the deployment checks read it from here.
                let histogram = metrics::histogram!(
                    "rpc_client_duration_seconds",
                    "rpc_service" => series.service.clone(),
                    "rpc_method" => series.method.clone(),
                    "rpc_grpc_status_code" => series.code.clone(),
                );
                (series, histogram)
            },
        )
    }
}

impl GrpcCall {
    fn record(&mut self, code: &str) {
        self.done = true;
        super::record_status(&self.span, code);
        self.series
            .histogram(&self.service, &self.method, code)
            .record(
                self.to_headers
                    .unwrap_or_else(|| self.started.elapsed())
                    .as_secs_f64(),
            );
    }
}

impl CallEnd for GrpcCall {
    fn end(mut self, code: &str) {
        self.record(code);
    }
}

/// The body of a response to an observed call.
pub type CallBody<B> = StatusInTrailers<B, GrpcCall>;

impl Observation for GrpcCall {
    type Body<B> = CallBody<B>;
    type Kept = CallSeries;

    fn start<B>(request: &mut Request<B>, kept: &Arc<CallSeries>) -> Self {
        let (service, method) = super::split_path(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = format!("{service}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            server.address = request.uri().host().unwrap_or_default(),
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        crate::propagation::inject_span(&span, request.headers_mut());
        Self {
            span,
            service,
            method,
            started: Instant::now(),
            to_headers: None,
            done: false,
            series: Arc::clone(kept),
        }
    }

    fn span(&self) -> &Span {
        &self.span
    }

    fn finish<RB, E: Display>(
        mut self,
        result: Result<http::Response<RB>, E>,
    ) -> Result<http::Response<CallBody<RB>>, E> {
        match result {
            Ok(response) => {
                self.to_headers = Some(self.started.elapsed());
                Ok(match super::trailers_only_status(&response) {
                    Some(code) => {
                        self.end(code);
                        response.map(StatusInTrailers::ended)
                    }
                    None => response.map(|body| StatusInTrailers::new(body, self)),
                })
            }
            Err(error) => {
                self.end(UNAVAILABLE);
                Err(error)
            }
        }
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        if !self.done {
            self.record(CANCELLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::telemetry::SpanTrace as _;
    use opentelemetry::global;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tower::Service as _;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[tokio::test]
    async fn calls_carry_a_child_of_the_callers_trace() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let seen = Arc::new(Mutex::new(None));
        let recorder = seen.clone();
        let inner = tower::service_fn(move |request: Request<()>| {
            let traceparent = request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            *recorder.lock().unwrap() = traceparent;
            async { Ok::<_, Infallible>(http::Response::new(())) }
        });
        let mut client = ObserveGrpcClient::new(inner);

        let caller = tracing::info_span!("caller");
        let caller_trace = caller.trace_context().span().span_context().trace_id();
        let request = Request::builder()
            .uri("http://inventory:50055/ferrishop.inventory.v1.InventoryService/GetProduct")
            .body(())
            .unwrap();
        // As in tonic's generated clients, `call` runs inside the caller's future.
        async { client.call(request).await }
            .instrument(caller)
            .await
            .unwrap();

        let traceparent = seen.lock().unwrap().clone().expect("no traceparent sent");
        assert!(
            traceparent.contains(&caller_trace.to_string()),
            "{traceparent} is not in trace {caller_trace}"
        );
    }

    fn get_order_request() -> Request<()> {
        Request::post("http://order:50053/ferrishop.order.v1.OrderService/GetOrder")
            .body(())
            .unwrap()
    }

    /// Whether `rpc_client_duration_seconds` has a sample of `GetOrder`
    /// with `code`.
    fn get_order_sampled(series: &crate::test_support::Series, code: &str) -> bool {
        crate::test_support::sampled(
            series,
            &[
                ("rpc_service", "ferrishop.order.v1.OrderService"),
                ("rpc_method", "GetOrder"),
                ("rpc_grpc_status_code", code),
            ],
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_abandoned_call_counts_as_cancelled() {
        let spans = crate::test_support::traced(async {
            let server = tower::service_fn(|_: Request<()>| async {
                std::future::pending::<Result<http::Response<()>, Infallible>>().await
            });
            let request = get_order_request();
            let call = tower::ServiceExt::oneshot(ObserveGrpcClient::new(server), request);
            let timed_out = tokio::time::timeout(Duration::from_millis(10), call).await;
            assert!(timed_out.is_err());
        })
        .await;
        assert_eq!(spans.len(), 1);
        assert_eq!(
            crate::test_support::attribute(&spans[0], "rpc.grpc.status_code").as_deref(),
            Some(CANCELLED)
        );
        let series = crate::test_support::series("rpc_client_duration_seconds");
        assert!(get_order_sampled(&series, CANCELLED), "{series:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answered_call_counts_its_status() {
        crate::test_support::traced(async {
            let server = tower::service_fn(|_: Request<()>| async {
                let response = http::Response::builder()
                    .header("grpc-status", "5")
                    .body(())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            let request = get_order_request();
            tower::ServiceExt::oneshot(ObserveGrpcClient::new(server), request)
                .await
                .unwrap();
        })
        .await;
        let series = crate::test_support::series("rpc_client_duration_seconds");
        assert!(get_order_sampled(&series, "5"), "{series:?}");
        assert_eq!(
            series.len(),
            1,
            "a finished call is counted once: {series:?}"
        );
    }

    /// A stream read to its end is counted with the status of its
    /// trailers; one the caller stops reading, as cancelled.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_is_counted_with_its_final_status() {
        use http_body_util::BodyExt;
        use tonic::codegen::Bytes;

        let streaming = |status: &'static str| {
            tower::service_fn(move |_: Request<()>| async move {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
                    Ok(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
                Ok::<_, Infallible>(http::Response::new(body))
            })
        };
        let spans = crate::test_support::traced(async {
            crate::test_support::series("rpc_client_duration_seconds");
            let response = tower::ServiceExt::oneshot(
                ObserveGrpcClient::new(streaming("13")),
                get_order_request(),
            )
            .await
            .unwrap();
            let answered = crate::test_support::series("rpc_client_duration_seconds");
            assert!(
                answered.iter().all(|(_, count)| *count == 0),
                "{answered:?}"
            );
            response.into_body().collect().await.unwrap();
            let read = crate::test_support::series("rpc_client_duration_seconds");
            assert!(get_order_sampled(&read, "13"), "{read:?}");

            let response = tower::ServiceExt::oneshot(
                ObserveGrpcClient::new(streaming("0")),
                get_order_request(),
            )
            .await
            .unwrap();
            let mut body = response.into_body();
            body.frame().await.unwrap().unwrap();
            drop(body);
            let left = crate::test_support::series("rpc_client_duration_seconds");
            assert!(get_order_sampled(&left, CANCELLED), "{left:?}");
        })
        .await;
        assert_eq!(spans.len(), 2, "{spans:?}");
        let codes: Vec<_> = spans
            .iter()
            .map(|span| crate::test_support::attribute(span, "rpc.grpc.status_code"))
            .collect();
        assert_eq!(codes, [Some("13".to_owned()), Some(CANCELLED.to_owned())]);
    }
}
