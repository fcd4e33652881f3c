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
use resilience::{
    BoxError, Endpoint, Grpc, Http, Refresh, Resilient, Resolve, Upstream, UpstreamConfig,
};
use tokio_util::sync::CancellationToken;

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
    fn new() -> Result<Self, reqwest::Error> {
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
            .build()?;
        Ok(Self { plain, tls })
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
    /// Every upstream above, for DNS re-resolution.
    pub discovery: Discovery,
}

/// The channels the public gRPC port forwards to.
#[derive(Debug, Clone)]
pub struct GrpcChannels {
    pub user: GrpcUpstream,
    pub order: GrpcUpstream,
    pub payment: GrpcUpstream,
    pub inventory: GrpcUpstream,
}

/// Why the upstreams cannot be set up; the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// An upstream URL list that cannot be used.
    #[error("upstream {name}: {source}")]
    Config {
        name: &'static str,
        #[source]
        source: resilience::ConfigError,
    },
    /// The HTTPS client could not be built (no TLS backend or resolver).
    #[error("the upstreams' HTTPS client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Services {
    /// Every upstream, each with one instance per configured URL until
    /// [`Discovery::keep_current`] has `resolver` resolve their host names.
    pub fn new(
        urls: &UpstreamUrls,
        config: UpstreamConfig,
        resolver: impl Resolve + Clone,
    ) -> Result<Self, UpstreamError> {
        // One pool for every REST instance: connections are keyed by host.
        let clients = Clients::new()?;
        let mut discovery = Discovery::default();
        let mut rest =
            |name: &'static str, urls: &str, protocol: Http| -> Result<RestClient, UpstreamError> {
                let fail = |source| UpstreamError::Config { name, source };
                let clients = clients.clone();
                let upstream = Upstream::builder(name, urls)
                    .map_err(fail)?
                    .config(config)
                    .resolver(resolver.clone())
                    .build(move |endpoint: &Endpoint| {
                        Ok(RestInstance {
                            client: ObserveHttpClient::new(clients.for_endpoint(endpoint)),
                            endpoint: endpoint.clone(),
                        })
                    })
                    .map_err(fail)?;
                discovery.0.push(Arc::new(upstream.clone()));
                Ok(upstream.service(protocol))
            };
        // Only the payment service deduplicates by `Idempotency-Key` (its
        // deposits): a keyed POST anywhere else is sent once.
        let user = rest("user", &urls.user_url, Http::new())?;
        let payment = rest(
            "payment",
            &urls.payment_url,
            Http::new().deduplicates(DEPOSITS_PATH),
        )?;
        let mut grpc = |name: &'static str,
                        urls: &str,
                        idempotent: &[&str]|
         -> Result<GrpcUpstream, UpstreamError> {
            let fail = |source| UpstreamError::Config { name, source };
            let upstream = Upstream::builder(name, urls)
                .map_err(fail)?
                .config(config)
                .resolver(resolver.clone())
                .build(|endpoint: &Endpoint| {
                    let channel = platform::grpc::channel(&endpoint.to_string())?;
                    Ok(replayable(channel))
                })
                .map_err(fail)?;
            discovery.0.push(Arc::new(upstream.clone()));
            let protocol = idempotent.iter().fold(Grpc::new(), |protocol, method| {
                protocol.idempotent_method(*method)
            });
            // The public gRPC port buffers no more than the REST port reads.
            Ok(
                GrpcChannel::new(upstream.service(protocol)).max_request_bytes(
                    crate::routes::BODY_LIMIT + resilience::grpc::FRAME_HEADER_BYTES,
                ),
            )
        };
        let order = grpc("order", &urls.order_grpc_url, ORDER_IDEMPOTENT)?;
        let inventory = grpc("inventory", &urls.inventory_grpc_url, INVENTORY_IDEMPOTENT)?;
        let grpc = GrpcChannels {
            user: grpc("user-grpc", &urls.user_grpc_url, USER_IDEMPOTENT)?,
            order: order.clone(),
            payment: grpc("payment-grpc", &urls.payment_grpc_url, PAYMENT_IDEMPOTENT)?,
            inventory: inventory.clone(),
        };
        Ok(Self {
            user,
            payment,
            order: OrderServiceClient::new(order),
            inventory: InventoryServiceClient::new(inventory),
            grpc,
            discovery,
        })
    }
}

/// Every upstream, whatever its client type, for DNS re-resolution: in
/// docker compose and Kubernetes, DNS is the service registry.
#[derive(Clone, Default)]
pub struct Discovery(Vec<Arc<dyn Refresh>>);

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("upstreams", &self.0.len())
            .finish()
    }
}

impl Discovery {
    /// Re-resolves every upstream's host names now and every `period` after,
    /// until `cancel`. A name that resolves to several addresses (compose
    /// `--scale`, a headless Kubernetes Service) becomes one instance per
    /// address, each with its own breaker, and calls go round-robin over
    /// them; a failed lookup keeps the instances there are.
    pub async fn keep_current(self, period: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh_all =
            || futures::future::join_all(self.0.iter().map(|upstream| upstream.refresh()));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = refresh_all() => {}
            }
        }
    }
}

/// The payment service's deposits, deduplicated by their `Idempotency-Key`.
const DEPOSITS_PATH: &str = "/api/v1/wallet/deposits";

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
    use std::collections::HashMap;
    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;

    use http_body_util::BodyExt;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tower::{Service, ServiceExt};

    use super::*;

    /// An upstream answering with the request it got: method, path, and
    /// every header, one `name: value` line each; `x-upstream` says which.
    async fn echo(name: &'static str) -> Endpoint {
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| async move {
            let mut lines = vec![format!("{} {}", request.method(), request.uri())];
            lines.extend(
                request
                    .headers()
                    .iter()
                    .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?"))),
            );
            ([("x-upstream", name)], lines.join("\n"))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Endpoint::parse(&format!("http://{address}")).unwrap()
    }

    fn instance(endpoint: &Endpoint) -> RestInstance {
        RestInstance {
            client: ObserveHttpClient::new(Clients::new().unwrap().for_endpoint(endpoint)),
            endpoint: endpoint.clone(),
        }
    }

    #[tokio::test]
    async fn plain_http_requests_reach_the_instance_as_they_were_sent() {
        let endpoint = echo("echo").await;
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

    /// DNS as the test says: a configured URL's host name resolves to the
    /// addresses set for its port.
    #[derive(Clone, Default)]
    struct Dns(Arc<std::sync::Mutex<HashMap<u16, Vec<SocketAddr>>>>);

    impl Resolve for Dns {
        fn resolve(
            &self,
            _host: &str,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
            let addresses = self
                .0
                .lock()
                .unwrap()
                .get(&port)
                .cloned()
                .unwrap_or_default();
            Box::pin(async move { Ok(addresses) })
        }
    }

    /// `localhost` for the user service (REST) and the order service
    /// (gRPC); the others at a port nothing listens on.
    fn urls(user: SocketAddr, order: SocketAddr) -> UpstreamUrls {
        let unused = "http://127.0.0.1:9".to_owned();
        UpstreamUrls {
            user_url: format!("http://localhost:{}", user.port()),
            order_url: unused.clone(),
            payment_url: unused.clone(),
            inventory_url: unused.clone(),
            user_grpc_url: unused.clone(),
            order_grpc_url: format!("http://localhost:{}", order.port()),
            payment_grpc_url: unused.clone(),
            inventory_grpc_url: unused,
            dns_refresh: Duration::from_secs(30),
        }
    }

    /// Which echo instance answered a `GET /`.
    async fn rest_answer(services: &Services) -> String {
        let request = http::Request::get("/").body(Bytes::new()).unwrap();
        let response = services.user.clone().oneshot(request).await.unwrap();
        response.headers()["x-upstream"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// A gRPC health service whose `probe` is serving or not, which tells
    /// the instances apart.
    async fn health(status: tonic_health::ServingStatus) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("probe", status).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    /// Which health instance answered, by its `probe` status.
    async fn grpc_answer(services: &Services) -> ServingStatus {
        let request = HealthCheckRequest {
            service: "probe".to_owned(),
        };
        let mut client = HealthClient::new(services.grpc.order.clone());
        let status = client.check(request).await.unwrap().into_inner().status;
        ServingStatus::try_from(status).unwrap()
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_is_balanced_once_discovery_resolved_it() {
        let address =
            |endpoint: Endpoint| -> SocketAddr { endpoint.authority().as_str().parse().unwrap() };
        let (rest_a, rest_b) = (address(echo("a").await), address(echo("b").await));
        let grpc_a = health(tonic_health::ServingStatus::Serving).await;
        let grpc_b = health(tonic_health::ServingStatus::NotServing).await;
        let dns = Dns::default();
        let services = Services::new(
            &urls(rest_a, grpc_a),
            UpstreamConfig::default(),
            dns.clone(),
        )
        .unwrap();

        // Before discovery, `localhost` is one instance, the first one.
        for _ in 0..4 {
            assert_eq!(rest_answer(&services).await, "a");
            assert_eq!(grpc_answer(&services).await, ServingStatus::Serving);
        }

        // `localhost` now resolves to two instances of each service.
        dns.0.lock().unwrap().extend([
            (rest_a.port(), vec![rest_a, rest_b]),
            (grpc_a.port(), vec![grpc_a, grpc_b]),
        ]);
        let cancel = CancellationToken::new();
        let discovery = tokio::spawn(
            services
                .discovery
                .clone()
                .keep_current(Duration::from_secs(30), cancel.clone()),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rest_answer(&services).await != "b"
            || grpc_answer(&services).await != ServingStatus::NotServing
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "discovery never resolved localhost"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Round-robin: each instance takes every other call.
        let mut rest = Vec::new();
        let mut grpc = Vec::new();
        for _ in 0..6 {
            rest.push(rest_answer(&services).await);
            grpc.push(grpc_answer(&services).await);
        }
        assert_eq!(
            rest.iter().filter(|name| *name == "b").count(),
            3,
            "{rest:?}"
        );
        assert_eq!(
            grpc.iter()
                .filter(|s| **s == ServingStatus::NotServing)
                .count(),
            3,
            "{grpc:?}"
        );

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), discovery)
            .await
            .unwrap()
            .unwrap();
    }
}
