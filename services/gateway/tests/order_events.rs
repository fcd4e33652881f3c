//! `GET /api/v1/orders/{id}/events` against the real gateway binary and a
//! real NATS, with the order service and the user service's JWKS played by
//! the test: the order's status is whatever the test says, and its changes
//! are published on NATS the way the order service's outbox publishes them.
//! The full journey with all five binaries is the end-to-end suite's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_server::{OrderService, OrderServiceServer};
use serde_json::{Value, json};
use testkit::brokers::{nats, unique_name};
use testkit::process::{ServiceProcess, Spawn};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

/// The order service as far as the route needs it: `GetOrder` of the
/// orders the test put in, owner-checked like the real one.
#[derive(Clone, Default)]
struct FakeOrders {
    orders: Arc<Mutex<Vec<pb::Order>>>,
}

impl FakeOrders {
    fn put(&self, id: Uuid, owner: Uuid, status: pb::OrderStatus) {
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

#[tonic::async_trait]
impl OrderService for FakeOrders {
    type WatchOrderStream = BoxStream<'static, Result<pb::WatchOrderResponse, Status>>;

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = request
            .metadata()
            .get(proto::metadata::USER_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Status::unauthenticated("no x-user-id"))?;
        let id = &request.get_ref().order_id;
        let order = self
            .orders
            .lock()
            .unwrap()
            .iter()
            .find(|order| &order.id == id && order.customer_id == caller)
            .cloned()
            .ok_or_else(|| Status::not_found("order not found"))?;
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
        _: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn cancel_order(
        &self,
        _: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn watch_order(
        &self,
        _: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_sagas(
        &self,
        _: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// The gateway with its fakes, a signing key for tokens, and NATS.
struct Setup {
    gateway: ServiceProcess,
    orders: FakeOrders,
    key: Arc<auth::SigningKey>,
    nats: messaging::Nats,
    prefix: String,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with_nats(&nats().await).await
    }

    async fn start_with_nats(nats_url: &str) -> Self {
        let key = Arc::new(auth::SigningKey::generate().unwrap());

        // The user service's JWKS.
        let jwks = auth::jwks([key.public_key()]);
        let users = axum::Router::new().route(
            auth::JWKS_PATH,
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
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
        let gateway = Spawn::new("gateway")
            .env("USER_URL", &user_url)
            .env("ORDER_GRPC_URL", &order_url)
            .env("NATS_URL", nats_url)
            .env("ORDER_STATUS_SUBJECT_PREFIX", &prefix)
            .start()
            .await;
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

    fn token(&self, user: Uuid) -> String {
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

    async fn open(&self, order: &str, user: Uuid) -> reqwest::Response {
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

    /// Publishes a status change as the order service does.
    async fn announce(&self, order: Uuid, status: &str, failure_reason: Option<&str>) {
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

/// Reads SSE frames off a response body.
struct Events {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

/// One frame: its event name and data, or a comment.
#[derive(Debug, PartialEq)]
enum Frame {
    Event { name: String, data: Value },
    Comment(String),
}

impl Events {
    fn of(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                let mut comment = None;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    } else if let Some(value) = line.strip_prefix(':') {
                        comment = Some(value.trim().to_owned());
                    }
                }
                return Some(match (name, comment) {
                    (Some(name), _) => Frame::Event {
                        name,
                        data: serde_json::from_str(&data).unwrap(),
                    },
                    (None, Some(comment)) => Frame::Comment(comment),
                    (None, None) => panic!("empty frame {frame:?}"),
                });
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("no SSE frame in time");
            match chunk {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }

    /// The next event, skipping heartbeats.
    async fn event(&mut self) -> Option<(String, Value)> {
        loop {
            match self.next().await? {
                Frame::Event { name, data } => return Some((name, data)),
                Frame::Comment(_) => continue,
            }
        }
    }
}

#[tokio::test]
async fn follows_an_order_from_its_current_status_to_a_terminal_one() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);

    let response = setup.open(&order.to_string(), owner).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Events::of(response);

    let (name, data) = events.event().await.unwrap();
    assert_eq!(name, "status");
    assert_eq!(data["id"], order.to_string());
    assert_eq!(data["status"], "PENDING");

    // A repeat of the status already sent is not sent again.
    setup.announce(order, "PENDING", None).await;
    setup.announce(order, "CONFIRMED", None).await;
    let (name, data) = events.event().await.unwrap();
    assert_eq!(name, "status");
    assert_eq!(
        data,
        json!({"id": order, "status": "CONFIRMED", "occurred_at": "2025-01-01T00:00:00Z"})
    );
    // CONFIRMED is terminal: the server ends the stream.
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn a_rejection_carries_its_reason_and_ends_the_stream() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");

    setup
        .announce(order, "REJECTED", Some("INSUFFICIENT_STOCK"))
        .await;
    let (_, data) = events.event().await.unwrap();
    assert_eq!(data["status"], "REJECTED");
    assert_eq!(data["failure_reason"], "INSUFFICIENT_STOCK");
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn an_order_already_terminal_is_sent_once_and_the_stream_ends() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Cancelled);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "CANCELLED");
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn another_users_order_is_a_404_problem_before_any_stream() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);

    let response = setup.open(&order.to_string(), Uuid::now_v7()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_FOUND");

    let response = setup.open("not-a-uuid", owner).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"]["id"], "must be a UUID");

    let anonymous = setup
        .http
        .get(format!(
            "{}/api/v1/orders/{order}/events",
            setup.gateway.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn without_nats_the_stream_follows_the_order_by_re_reading_it() {
    // Nothing listens there: the gateway starts and serves all the same.
    let setup = Setup::start_with_nats("nats://127.0.0.1:1").await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");

    setup.orders.put(order, owner, pb::OrderStatus::Confirmed);
    let (_, data) = tokio::time::timeout(Duration::from_secs(10), events.event())
        .await
        .expect("the change was not picked up by a re-read")
        .unwrap();
    assert_eq!(data["status"], "CONFIRMED");
    assert_eq!(events.event().await, None);
}
