//! The services behind the gateway, each behind its resilience stack.
//!
//! User and payment are called over REST (the public routes are theirs,
//! path for path), order and inventory over gRPC. Every upstream gets the
//! `resilience` crate's stack — per-instance circuit breakers with
//! round-robin over healthy instances, a bulkhead that sheds load, timeouts,
//! and budgeted retries of idempotent calls only — so a sick service costs
//! its own routes a fast 503 and nothing else.
//!
//! The gRPC upstreams are also what the public gRPC port forwards to, so
//! REST and gRPC clients share one set of breakers per service.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use platform::http_client::ObserveHttpClient;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use resilience::grpc::{GrpcChannel, Replayable, replayable};
use resilience::{BoxError, Endpoint, Grpc, Http, Resilient, Upstream, UpstreamConfig};

use crate::config::Upstreams as UpstreamUrls;

/// The resilient REST client of one service.
pub type RestClient = Resilient<RestInstance, Http>;

/// Idle connections kept per upstream instance.
const IDLE_PER_INSTANCE: usize = 256;

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One REST instance: a pooled HTTP client aimed at its base URL. Each
/// call (each attempt, beneath the balancer and the retries) gets an HTTP
/// client span whose `traceparent` it carries, and a sample of
/// `http_client_request_duration_seconds` ([`platform::http_client`]).
#[derive(Debug, Clone)]
pub struct RestInstance {
    client: ObserveHttpClient<Transport>,
    endpoint: Endpoint,
}

impl tower::Service<http::Request<Bytes>> for RestInstance {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        match self.endpoint.rebase(request) {
            Ok(request) => self.client.call(request),
            Err(error) => Box::pin(futures::future::ready(Err(error.into()))),
        }
    }
}

/// Sends one request, by the instance's scheme: `http://` with hyper's own
/// pooled client, the request and the answer passed as they are (no URL
/// parsing, no conversion, no added headers); `https://` with reqwest, for
/// its TLS.
#[derive(Debug, Clone)]
enum Transport {
    /// Behind an `Arc`: the client is cloned for every call.
    Plain(Arc<PlainClient>),
    Tls(reqwest::Client),
}

type PlainClient = Client<HttpConnector, Full<Bytes>>;

impl tower::Service<http::Request<Bytes>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        match self {
            Self::Plain(client) => {
                let response = client.request(request.map(Full::new));
                Box::pin(async move {
                    match response.await {
                        Ok(response) => Ok(response.map(Body::new)),
                        Err(error) => Err(SendError::from(&error).into()),
                    }
                })
            }
            Self::Tls(client) => {
                let client = client.clone();
                Box::pin(async move {
                    let request = reqwest::Request::try_from(request)?;
                    let response = client.execute(request).await?;
                    Ok(http::Response::from(response).map(Body::new))
                })
            }
        }
    }
}

/// A request that got no answer, with the causes hyper keeps in its
/// error's sources (`client error (Connect): tcp connect error: Connection
/// refused`), so the problem document and the logs say what happened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SendError(String);

impl From<&hyper_util::client::legacy::Error> for SendError {
    fn from(error: &hyper_util::client::legacy::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self(message)
    }
}

/// The clients every REST instance shares: connections are pooled by host.
#[derive(Debug, Clone)]
struct Clients {
    plain: Arc<PlainClient>,
    tls: reqwest::Client,
}

impl Clients {
    fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let plain = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_INSTANCE)
            .build(connector);
        let plain = Arc::new(plain);
        let tls = reqwest::Client::builder()
            .pool_max_idle_per_host(IDLE_PER_INSTANCE)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self { plain, tls }
    }

    fn for_endpoint(&self, endpoint: &Endpoint) -> Transport {
        if *endpoint.scheme() == http::uri::Scheme::HTTPS {
            Transport::Tls(self.tls.clone())
        } else {
            Transport::Plain(self.plain.clone())
        }
    }
}

/// A gRPC channel to one service, through its resilience stack.
pub type GrpcUpstream = GrpcChannel<Resilient<Replayable<platform::grpc::ClientChannel>, Grpc>>;

/// Every upstream the gateway calls.
#[derive(Debug, Clone)]
pub struct Services {
    pub user: RestClient,
    pub payment: RestClient,
    pub order: OrderServiceClient<GrpcUpstream>,
    pub inventory: InventoryServiceClient<GrpcUpstream>,
    /// Raw channels for the public gRPC port, by service.
    pub grpc: GrpcChannels,
}

/// The channels the public gRPC port forwards to.
#[derive(Debug, Clone)]
pub struct GrpcChannels {
    pub user: GrpcUpstream,
    pub order: GrpcUpstream,
    pub payment: GrpcUpstream,
    pub inventory: GrpcUpstream,
}

/// An upstream URL list that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {source}")]
pub struct UpstreamError {
    name: &'static str,
    #[source]
    source: resilience::ConfigError,
}

impl Services {
    pub fn new(urls: &UpstreamUrls, config: UpstreamConfig) -> Result<Self, UpstreamError> {
        // One pool for every REST instance: connections are keyed by host.
        let clients = Clients::new();
        let rest = |name: &'static str, urls: &str| -> Result<RestClient, UpstreamError> {
            let fail = |source| UpstreamError { name, source };
            let clients = clients.clone();
            let upstream = Upstream::builder(name, urls)
                .map_err(fail)?
                .config(config)
                .build(move |endpoint: &Endpoint| {
                    Ok(RestInstance {
                        client: ObserveHttpClient::new(clients.for_endpoint(endpoint)),
                        endpoint: endpoint.clone(),
                    })
                })
                .map_err(fail)?;
            Ok(upstream.service(Http))
        };
        let grpc = |name: &'static str,
                    urls: &str,
                    idempotent: &[&str]|
         -> Result<GrpcUpstream, UpstreamError> {
            let fail = |source| UpstreamError { name, source };
            let upstream = Upstream::builder(name, urls)
                .map_err(fail)?
                .config(config)
                .build(|endpoint: &Endpoint| {
                    let channel = platform::grpc::channel(&endpoint.to_string())?;
                    Ok(replayable(channel))
                })
                .map_err(fail)?;
            let protocol = idempotent.iter().fold(Grpc::new(), |protocol, method| {
                protocol.idempotent_method(*method)
            });
            Ok(GrpcChannel::new(upstream.service(protocol)))
        };
        let order = grpc("order", &urls.order_grpc_url, ORDER_IDEMPOTENT)?;
        let inventory = grpc("inventory", &urls.inventory_grpc_url, INVENTORY_IDEMPOTENT)?;
        Ok(Self {
            user: rest("user", &urls.user_url)?,
            payment: rest("payment", &urls.payment_url)?,
            order: OrderServiceClient::new(order.clone()),
            inventory: InventoryServiceClient::new(inventory.clone()),
            grpc: GrpcChannels {
                user: grpc("user-grpc", &urls.user_grpc_url, USER_IDEMPOTENT)?,
                order,
                payment: grpc("payment-grpc", &urls.payment_grpc_url, PAYMENT_IDEMPOTENT)?,
                inventory,
            },
        })
    }
}

/// Reads, and writes that carry their own idempotency key, may be retried;
/// a cancel may not (a retried cancel that had landed would answer 409).
const ORDER_IDEMPOTENT: &[&str] = &[
    "/ferrishop.order.v1.OrderService/GetOrder",
    "/ferrishop.order.v1.OrderService/ListOrders",
    "/ferrishop.order.v1.OrderService/PlaceOrder",
    "/ferrishop.order.v1.OrderService/ListSagas",
];

const INVENTORY_IDEMPOTENT: &[&str] = &[
    "/ferrishop.inventory.v1.InventoryService/GetProduct",
    "/ferrishop.inventory.v1.InventoryService/ListProducts",
    "/ferrishop.inventory.v1.InventoryService/Quote",
];

const USER_IDEMPOTENT: &[&str] = &[
    "/ferrishop.user.v1.UserService/GetUser",
    "/ferrishop.user.v1.UserService/BatchGetUsers",
];

const PAYMENT_IDEMPOTENT: &[&str] = &[
    "/ferrishop.payment.v1.PaymentService/GetAccount",
    "/ferrishop.payment.v1.PaymentService/ListTransactions",
    "/ferrishop.payment.v1.PaymentService/Deposit",
];

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    use super::*;

    /// An upstream answering with the request it got: method, path, and
    /// every header, one `name: value` line each.
    async fn echo() -> Endpoint {
        let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
            let mut lines = vec![format!("{} {}", request.method(), request.uri())];
            lines.extend(
                request
                    .headers()
                    .iter()
                    .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?"))),
            );
            ([("x-upstream", "echo")], lines.join("\n"))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Endpoint::parse(&format!("http://{address}")).unwrap()
    }

    fn instance(endpoint: &Endpoint) -> RestInstance {
        RestInstance {
            client: ObserveHttpClient::new(Clients::new().for_endpoint(endpoint)),
            endpoint: endpoint.clone(),
        }
    }

    #[tokio::test]
    async fn plain_http_requests_reach_the_instance_as_they_were_sent() {
        let endpoint = echo().await;
        let mut instance = instance(&endpoint);
        for _ in 0..2 {
            let request = http::Request::get("/api/v1/users/me?x=1")
                .header("x-user-id", "u-1")
                .body(Bytes::new())
                .unwrap();
            let response = instance.ready().await.unwrap().call(request).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
            assert_eq!(response.headers()["x-upstream"], "echo");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            let mut lines = body.lines();
            assert_eq!(lines.next(), Some("GET /api/v1/users/me?x=1"));
            // Nothing added but the host (and the trace context, when a
            // tracer is installed; none is here).
            let mut headers: Vec<&str> = lines.collect();
            headers.sort_unstable();
            let host = format!("host: {}", endpoint.authority());
            assert_eq!(headers, [host.as_str(), "x-user-id: u-1"]);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = Endpoint::parse(&format!("http://{address}")).unwrap();
        let request = http::Request::get("/").body(Bytes::new()).unwrap();
        let error = instance(&endpoint).oneshot(request).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("Connect"), "{message}");
        assert!(message.contains("refused"), "{message}");
    }
}
