//! The gateway binary with the services around it played by the test: the
//! user service's JWKS and profile route, and an order service whose orders
//! are whatever the test puts in. Payment is wherever the test says (a
//! closed port plays a stopped service).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_server::{OrderService, OrderServiceServer};
use serde_json::json;
use testkit::brokers::{nats, unique_name};
use testkit::process::{ServiceProcess, Spawn};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub const PATIENCE: Duration = Duration::from_secs(20);

/// The order service as far as the gateway's own routes need it: `GetOrder`
/// and `ListOrders` of the orders the test put in, owner-checked like the
/// real one (the newest is the one put in last).
#[derive(Clone, Default)]
pub struct FakeOrders {
    orders: Arc<Mutex<Vec<pb::Order>>>,
}

impl FakeOrders {
    pub fn put(&self, id: Uuid, owner: Uuid, status: pb::OrderStatus) {
        let mut orders = self.orders.lock().unwrap();
        orders.retain(|order| order.id != id.to_string());
        orders.push(pb::Order {
            id: id.to_string(),
            customer_id: owner.to_string(),
            status: status.into(),
            ..pb::Order::default()
        });
    }
}

impl FakeOrders {
    /// The order `id` if `caller` owns it; NOT_FOUND otherwise, as the real
    /// service answers.
    fn owned(&self, caller: &str, id: &str) -> Result<pb::Order, Status> {
        self.orders
            .lock()
            .unwrap()
            .iter()
            .find(|order| order.id == id && order.customer_id == caller)
            .cloned()
            .ok_or_else(|| Status::not_found("order not found"))
    }
}

/// The `x-user-id` the gateway set.
fn caller<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .metadata()
        .get(proto::metadata::USER_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Status::unauthenticated("no x-user-id"))
}

#[tonic::async_trait]
impl OrderService for FakeOrders {
    type WatchOrderStream = BoxStream<'static, Result<pb::WatchOrderResponse, Status>>;

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let order = self.owned(&caller(&request)?, &request.get_ref().order_id)?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(order) }))
    }

    async fn place_order(
        &self,
        _: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = caller(&request)?;
        let limit = request
            .get_ref()
            .page
            .as_ref()
            .map_or(20, |page| page.limit as usize);
        let orders = self
            .orders
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter(|order| order.customer_id == caller)
            .take(limit)
            .cloned()
            .collect();
        Ok(Response::new(pb::ListOrdersResponse { orders, page: None }))
    }

    async fn cancel_order(
        &self,
        _: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    /// The order's status now, then nothing: a watch that never ends.
    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let order = self.owned(&caller(&request)?, &request.get_ref().order_id)?;
        let now = pb::WatchOrderResponse {
            order_id: order.id,
            status: order.status,
            ..pb::WatchOrderResponse::default()
        };
        let stream =
            futures::stream::once(async move { Ok(now) }).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_sagas(
        &self,
        _: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// The gateway with its fakes, a signing key for tokens, and NATS.
pub struct Setup {
    pub gateway: ServiceProcess,
    pub orders: FakeOrders,
    pub key: Arc<auth::SigningKey>,
    pub nats: messaging::Nats,
    pub prefix: String,
    pub http: reqwest::Client,
}

impl Setup {
    pub async fn start() -> Self {
        Self::start_with_nats(&nats().await).await
    }

    pub async fn start_with_nats(nats_url: &str) -> Self {
        Self::start_with(nats_url, &[]).await
    }

    /// The gateway with `env` on top of the fakes' addresses.
    pub async fn start_with(nats_url: &str, env: &[(&str, &str)]) -> Self {
        let key = Arc::new(auth::SigningKey::generate().unwrap());

        // The user service: its JWKS, and a profile naming the caller.
        let jwks = auth::jwks([key.public_key()]);
        let users = axum::Router::new()
            .route(
                auth::JWKS_PATH,
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            )
            .route(
                "/api/v1/users/me",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    let id = headers[proto::metadata::USER_ID]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    axum::Json(json!({
                        "id": id,
                        "email": "ada@example.com",
                        "name": "Ada",
                        "roles": [],
                        "created_at": "2025-01-01T00:00:00Z"
                    }))
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let user_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, users).await.unwrap() });

        // The order service.
        let orders = FakeOrders::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let order_url = format!("http://{}", listener.local_addr().unwrap());
        let service = OrderServiceServer::new(orders.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });

        let prefix = unique_name("orders");
        let mut spawn = Spawn::new("gateway")
            .env("USER_URL", &user_url)
            .env("ORDER_GRPC_URL", &order_url)
            .env("NATS_URL", nats_url)
            .env("ORDER_STATUS_SUBJECT_PREFIX", &prefix);
        for (key, value) in env {
            spawn = spawn.env(key, *value);
        }
        let gateway = spawn.start().await;
        gateway.wait_ready(PATIENCE).await;
        let nats = messaging::Nats::new(messaging::NatsConfig::new(nats_url, "gateway-test"));
        Self {
            gateway,
            orders,
            key,
            nats,
            prefix,
            http: reqwest::Client::new(),
        }
    }

    pub fn token(&self, user: Uuid) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        self.key
            .sign(&auth::Claims {
                sub: user,
                roles: vec![],
                iat: now,
                exp: now + 600,
                iss: auth::DEFAULT_ISSUER.into(),
                aud: auth::DEFAULT_AUDIENCE.into(),
                jti: Uuid::now_v7(),
            })
            .unwrap()
    }

    pub async fn open(&self, order: &str, user: Uuid) -> reqwest::Response {
        self.http
            .get(format!(
                "{}/api/v1/orders/{order}/events",
                self.gateway.http_url()
            ))
            .bearer_auth(self.token(user))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
    }

    /// As [`Setup::open`], accepting compressed answers as browsers do.
    pub async fn open_as_browser(&self, order: &str, user: Uuid) -> reqwest::Response {
        self.http
            .get(format!(
                "{}/api/v1/orders/{order}/events",
                self.gateway.http_url()
            ))
            .bearer_auth(self.token(user))
            .header("accept", "text/event-stream")
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .await
            .unwrap()
    }

    /// Publishes a status change as the order service does.
    pub async fn announce(&self, order: Uuid, status: &str, failure_reason: Option<&str>) {
        let mut body = json!({
            "order_id": order,
            "status": status,
            "occurred_at": "2025-01-01T00:00:00Z",
        });
        if let Some(reason) = failure_reason {
            body["failure_reason"] = json!(reason);
        }
        let client = self.nats.client().await.unwrap();
        client
            .publish(
                format!("{}.{order}.status", self.prefix),
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
    }
}
