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

use bytes::Bytes;
use platform::http_client::ObserveHttpClient;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use resilience::grpc::{GrpcChannel, Replayable, replayable};
use resilience::{BoxError, Endpoint, Grpc, Http, Resilient, Upstream, UpstreamConfig};

use crate::config::Upstreams as UpstreamUrls;

/// The resilient REST client of one service.
pub type RestClient = Resilient<RestInstance, Http>;

/// One REST instance: a pooled HTTP client aimed at its base URL. Each
/// call (each attempt, beneath the balancer and the retries) gets an HTTP
/// client span whose `traceparent` it carries, and a sample of
/// `http_client_request_duration_seconds` ([`platform::http_client`]).
#[derive(Debug, Clone)]
pub struct RestInstance {
    client: ObserveHttpClient<Reqwest>,
    endpoint: Endpoint,
}

impl tower::Service<http::Request<Bytes>> for RestInstance {
    type Response = http::Response<reqwest::Body>;
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

/// Sends one request with the shared reqwest client.
#[derive(Debug, Clone)]
pub struct Reqwest(reqwest::Client);

impl tower::Service<http::Request<Bytes>> for Reqwest {
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok(http::Response::from(response))
        })
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
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        let rest = |name: &'static str, urls: &str| -> Result<RestClient, UpstreamError> {
            let fail = |source| UpstreamError { name, source };
            let client = client.clone();
            let upstream = Upstream::builder(name, urls)
                .map_err(fail)?
                .config(config)
                .build(move |endpoint: &Endpoint| {
                    Ok(RestInstance {
                        client: ObserveHttpClient::new(Reqwest(client.clone())),
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
