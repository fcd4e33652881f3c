//! gRPC clients.
//!
//! Every outgoing call gets a client span, carries that span's W3C trace
//! context in its metadata (so the server's span becomes its child), and
//! records `rpc_client_duration_seconds`. Wrapping the channel rather than
//! each call site means no caller can forget.

use std::time::Duration;

use http::Request;
use opentelemetry::global;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::HeaderInjector;

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
    Ok(ObserveGrpcClient { inner: channel })
}

/// Tower service wrapping a gRPC channel; see the module docs.
#[derive(Debug, Clone)]
pub struct ObserveGrpcClient<S> {
    inner: S,
}

impl<S> ObserveGrpcClient<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, RB> Service<Request<B>> for ObserveGrpcClient<S>
where
    S: Service<Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
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
        let context = span.context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = inner.call(request).instrument(span.clone()).await;
            let code = match &result {
                Ok(response) => super::header_status(response),
                // The call never produced a response: the transport failed.
                Err(_) => "14".to_owned(),
            };
            span.record("rpc.grpc.status_code", code.as_str());
            if code != "0" {
                span.record("otel.status_code", "ERROR");
            }
            metrics::histogram!(
                "rpc_client_duration_seconds",
                "rpc_service" => service,
                "rpc_method" => method,
                "rpc_grpc_status_code" => code,
            )
            .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
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
        let caller_trace = caller.context().span().span_context().trace_id();
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
}
