//! A small shop for the order service's black-box tests: real `inventory`,
//! `payment` and `order` binaries, each on its own fresh database, wired
//! through RabbitMQ, Kafka and NATS with exchange, topic and subject names
//! of their own, so tests run in parallel without seeing each other.
//!
//! The helpers drive the shop the way its clients do — gRPC for orders and
//! the catalogue (with the caller metadata the gateway sets), REST for
//! wallets, Kafka for `user.registered` — and read the participants'
//! databases only to check the platform's invariants.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use messaging::{
    Broker, CloudEvent, DeliveryStream, Kafka, KafkaConfig, Nats, NatsConfig, OutgoingMessage,
    Subscription,
};
use nix::sys::signal::Signal;
use proto::ferrishop::common::v1::Money;
use proto::ferrishop::inventory::v1 as inventory_pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use serde_json::{Value, json};
use testkit::brokers::{kafka, nats, rabbitmq, unique_name};
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};
use uuid::Uuid;

/// How long a test waits for anything asynchronous by default.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Money every new wallet starts with (100.00 EUR).
pub const WELCOME_CREDIT: i64 = 10_000;

/// One process of the shop and how to start it again.
pub struct Part {
    pub name: &'static str,
    pub database: TestDatabase,
    pub process: Option<ServiceProcess>,
    env: Vec<(String, String)>,
}

impl Part {
    fn process(&self) -> &ServiceProcess {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    async fn start(&mut self, extra: &[(&str, &str)]) {
        let mut spawn = Spawn::new(self.name);
        for (key, value) in &self.env {
            spawn = spawn.env(key, value.clone());
        }
        for (key, value) in extra {
            spawn = spawn.env(key, *value);
        }
        let process = spawn.start().await;
        process.wait_ready(PATIENCE).await;
        self.process = Some(process);
    }

    /// Waits until a log line of the running process contains every one
    /// of `needles`.
    async fn wait_for_log(&self, needles: &[&str]) {
        self.process().wait_for_line(needles, PATIENCE).await;
    }

    /// SIGKILL: no shutdown, no flush, leases left behind.
    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGKILL);
            process.wait(Duration::from_secs(10)).await;
        }
    }

    /// SIGTERM, and the graceful exit that follows.
    async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(30)).await;
        }
    }
}

/// The broker names one shop uses.
#[derive(Debug, Clone)]
pub struct Names {
    pub commands_exchange: String,
    pub replies_exchange: String,
    pub inventory_events: String,
    pub order_events: String,
    pub payment_events: String,
    pub user_events: String,
    pub status_prefix: String,
}

/// Inventory, payment and order, running.
pub struct Shop {
    pub inventory: Part,
    pub payment: Part,
    pub order: Part,
    pub names: Names,
    pub kafka: Broker,
    pub nats: Broker,
    pub http: reqwest::Client,
    inventory_client: InventoryServiceClient<Channel>,
    order_client: Option<OrderServiceClient<Channel>>,
}

impl Shop {
    /// A shop with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A shop whose order service gets `order_env` on top of the test
    /// defaults (short reply timeout, short leases).
    pub async fn start_with(order_env: &[(&str, &str)]) -> Self {
        let (amqp, brokers, nats_url) = (rabbitmq().await, kafka().await, nats().await);
        let names = Names {
            commands_exchange: unique_name("payment-commands"),
            replies_exchange: unique_name("order-replies"),
            inventory_events: unique_name("inventory-events"),
            order_events: unique_name("order-events"),
            payment_events: unique_name("payment-events"),
            user_events: unique_name("user-events"),
            status_prefix: unique_name("orders"),
        };
        let common = |database: &TestDatabase| {
            vec![
                ("DATABASE_URL".to_owned(), database.url.clone()),
                ("AMQP_URL".to_owned(), amqp.clone()),
                ("KAFKA_BROKERS".to_owned(), brokers.clone()),
                ("NATS_URL".to_owned(), nats_url.clone()),
            ]
        };

        let database = fresh_database().await;
        let mut env = common(&database);
        env.push((
            "INVENTORY_EVENTS_TOPIC".to_owned(),
            names.inventory_events.clone(),
        ));
        let mut inventory = Part {
            name: "inventory",
            database,
            process: None,
            env,
        };
        inventory.start(&[]).await;

        let payment_group = unique_name("payment");
        let database = fresh_database().await;
        let mut env = common(&database);
        env.extend(
            [
                (
                    "PAYMENT_COMMANDS_EXCHANGE",
                    names.commands_exchange.as_str(),
                ),
                ("PAYMENT_COMMANDS_RETRY_DELAY", "200ms"),
                ("USER_EVENTS_TOPIC", names.user_events.as_str()),
                ("PAYMENT_EVENTS_TOPIC", names.payment_events.as_str()),
                ("WELCOME_CREDIT", "10000"),
                // Kafka consumer groups are shared by every member that names
                // them, across topics: one per shop keeps parallel tests from
                // rebalancing each other.
                ("CONSUMER_GROUP", payment_group.as_str()),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let mut payment = Part {
            name: "payment",
            database,
            process: None,
            env,
        };
        payment.start(&[]).await;
        payment
            .wait_for_log(&["\"consuming\"", &names.commands_exchange])
            .await;
        payment
            .wait_for_log(&["\"consuming\"", &names.user_events])
            .await;

        let database = fresh_database().await;
        let mut env = common(&database);
        env.extend(
            [
                ("INVENTORY_GRPC_URL", inventory.process().grpc_url()),
                ("PAYMENT_COMMANDS_EXCHANGE", names.commands_exchange.clone()),
                ("ORDER_REPLIES_EXCHANGE", names.replies_exchange.clone()),
                ("ORDER_EVENTS_TOPIC", names.order_events.clone()),
                ("ORDER_STATUS_SUBJECT_PREFIX", names.status_prefix.clone()),
                ("CONSUMER_GROUP", unique_name("order")),
                ("PAYMENT_REPLY_TIMEOUT", "3s".to_owned()),
                ("LEASE_TTL", "2s".to_owned()),
                ("SHUTDOWN_TIMEOUT", "10s".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        for (key, value) in order_env {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let mut order = Part {
            name: "order",
            database,
            process: None,
            env,
        };
        order.start(&[]).await;
        order
            .wait_for_log(&["\"consuming\"", &names.replies_exchange])
            .await;

        let kafka = Kafka::new(KafkaConfig::new(&brokers, "order-test"))
            .expect("Kafka client")
            .into_broker("/ferrishop/user");
        let nats = Nats::new(NatsConfig::new(&nats_url, "order-test")).into_broker("/test");
        let inventory_client = InventoryServiceClient::new(
            testkit::grpc::channel(&inventory.process().grpc_url()).await,
        );
        let order_client = Some(OrderServiceClient::new(
            testkit::grpc::channel(&order.process().grpc_url()).await,
        ));
        Self {
            inventory,
            payment,
            order,
            names,
            kafka,
            nats,
            http: reqwest::Client::new(),
            inventory_client,
            order_client,
        }
    }

    // ----------------------------------------------------------- processes

    /// Kills the order service (SIGKILL).
    pub async fn kill_order(&mut self) {
        self.order_client = None;
        self.order.kill().await;
    }

    /// Starts the order service again (on the same database and names),
    /// with `extra` environment on top of its usual one.
    pub async fn start_order(&mut self, extra: &[(&str, &str)]) {
        self.order.start(extra).await;
        self.order_client = Some(OrderServiceClient::new(
            testkit::grpc::channel(&self.order.process().grpc_url()).await,
        ));
    }

    /// Waits for the order service to exit by itself (at an `abort` fault
    /// point); `true` if it did within `within`.
    pub async fn order_exited(&mut self, within: Duration) -> bool {
        let Some(process) = self.order.process.as_mut() else {
            return true;
        };
        let exited = tokio::time::timeout(within, process.wait(within + Duration::from_secs(1)))
            .await
            .is_ok();
        if exited {
            self.order.process = None;
            self.order_client = None;
        }
        exited
    }

    pub async fn stop_payment(&mut self) {
        self.payment.stop().await;
    }

    pub async fn start_payment(&mut self) {
        self.start_payment_with(&[]).await;
    }

    /// Starts the payment service with `extra` environment on top of its
    /// usual one (`FAULTS`, say).
    pub async fn start_payment_with(&mut self, extra: &[(&str, &str)]) {
        self.payment.start(extra).await;
        self.payment
            .wait_for_log(&["\"consuming\"", &self.names.commands_exchange])
            .await;
    }

    // ------------------------------------------------------------ catalogue

    /// A new product at `price` (minor units) with `stock` units.
    pub async fn product(&self, price: i64, stock: u32) -> String {
        let request = admin(inventory_pb::CreateProductRequest {
            sku: unique_name("SKU").to_uppercase(),
            name: format!("Product {}", &Uuid::now_v7().simple().to_string()[20..]),
            description: "A test product".into(),
            price: Some(eur(price)),
            category: inventory_pb::Category::Books.into(),
            initial_stock: stock,
            reorder_policy: None,
        });
        let product = self
            .inventory_client
            .clone()
            .create_product(request)
            .await
            .expect("CreateProduct")
            .into_inner()
            .product
            .expect("a product");
        product.id
    }

    /// `(on_hand, reserved, available)` of a product.
    pub async fn stock(&self, product: &str) -> (i64, i64, i64) {
        let product = self
            .inventory_client
            .clone()
            .get_product(inventory_pb::GetProductRequest {
                product_id: product.to_owned(),
            })
            .await
            .expect("GetProduct")
            .into_inner()
            .product
            .expect("a product");
        (product.on_hand, product.reserved, product.available)
    }

    // ------------------------------------------------------------ customers

    /// A registered user with a wallet holding the welcome credit.
    pub async fn customer(&self) -> Uuid {
        let user = Uuid::now_v7();
        let deadline = Instant::now() + PATIENCE;
        // Announced again now and then: a consumer group that is still
        // settling on a fresh topic may take a while to see the first copy,
        // and the payment service opens one wallet per user however many
        // copies arrive.
        loop {
            self.announce(user).await;
            let announced = Instant::now();
            while announced.elapsed() < Duration::from_secs(10) {
                if self.wallet(user).await.0 == 200 {
                    return user;
                }
                assert!(Instant::now() < deadline, "no wallet for {user}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn announce(&self, user: Uuid) {
        let event = CloudEvent::new("user.registered", "/ferrishop/user")
            .with_id(Uuid::now_v7().to_string())
            .with_subject(user.to_string());
        let body = json!({
            "user_id": user,
            "email": format!("{user}@example.com"),
            "name": "Test Customer",
            "registered_at": "2025-01-01T00:00:00Z",
        });
        self.kafka
            .publish(
                OutgoingMessage::new(&self.names.user_events, body.to_string())
                    .with_key(user.to_string())
                    .with_event(&event),
            )
            .await
            .expect("publish user.registered");
    }

    async fn wallet(&self, user: Uuid) -> (u16, Value) {
        let response = self
            .http
            .get(format!(
                "{}/api/v1/wallet",
                self.payment.process().http_url()
            ))
            .header("x-user-id", user.to_string())
            .send()
            .await
            .expect("GET /api/v1/wallet");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn balance(&self, user: Uuid) -> i64 {
        let (status, wallet) = self.wallet(user).await;
        assert_eq!(status, 200, "{wallet}");
        wallet["balance"]["amount"].as_i64().expect("balance")
    }

    pub async fn deposit(&self, user: Uuid, amount: i64) {
        let response = self
            .http
            .post(format!(
                "{}/api/v1/wallet/deposits",
                self.payment.process().http_url()
            ))
            .header("x-user-id", user.to_string())
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&json!({"amount": {"amount": amount, "currency": "EUR"}}))
            .send()
            .await
            .expect("deposit");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }

    /// `POST /api/v1/admin/wallets/{user}/{action}` (freeze, unfreeze, close).
    pub async fn wallet_admin(&self, user: Uuid, action: &str) {
        let response = self
            .http
            .post(format!(
                "{}/api/v1/admin/wallets/{user}/{action}",
                self.payment.process().http_url()
            ))
            .header("x-user-id", Uuid::now_v7().to_string())
            .header("x-user-roles", "admin")
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .expect("wallet admin call");
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    /// Every charge (`Charged`) and refund (`Refunded`) the payment service
    /// recorded, per order: `(charges, charged amount, refunded amount)`.
    pub async fn payments(&self) -> HashMap<Uuid, (u32, i64, i64)> {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT event_type, payload FROM es_events \
              WHERE event_type IN ('Charged', 'Refunded')",
        )
        .fetch_all(&self.payment.database.pool)
        .await
        .expect("read the wallet events");
        let mut payments: HashMap<Uuid, (u32, i64, i64)> = HashMap::new();
        for (event_type, payload) in rows {
            let order: Uuid = payload["order_id"].as_str().unwrap().parse().unwrap();
            let amount = payload["amount"]["amount"].as_i64().unwrap();
            let entry = payments.entry(order).or_default();
            if event_type == "Charged" {
                entry.0 += 1;
                entry.1 += amount;
            } else {
                entry.2 += amount;
            }
        }
        payments
    }

    /// The types of the wallet events recorded for `order` (payload
    /// `order_id`), oldest first, with the decline reason where there is
    /// one: `["OrderVoided", "ChargeDeclined:ORDER_VOIDED"]`.
    pub async fn wallet_events_of(&self, order: &str) -> Vec<String> {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT event_type, payload FROM es_events \
              WHERE payload->>'order_id' = $1 ORDER BY position",
        )
        .bind(order)
        .fetch_all(&self.payment.database.pool)
        .await
        .expect("read the wallet events");
        rows.into_iter()
            .map(|(event_type, payload)| match payload["reason"].as_str() {
                Some(reason) => format!("{event_type}:{reason}"),
                None => event_type,
            })
            .collect()
    }

    // --------------------------------------------------------------- orders

    pub fn orders(&self) -> OrderServiceClient<Channel> {
        self.order_client
            .clone()
            .expect("the order service is not running")
    }

    /// PlaceOrder as `customer`.
    pub async fn place(
        &self,
        customer: Uuid,
        items: &[(&str, u32)],
        key: &str,
    ) -> Result<pb::PlaceOrderResponse, Status> {
        let request = pb::PlaceOrderRequest {
            items: items
                .iter()
                .map(|(product_id, quantity)| pb::OrderItem {
                    product_id: (*product_id).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
            idempotency_key: key.to_owned(),
        };
        self.orders()
            .place_order(as_user(request, customer))
            .await
            .map(tonic::Response::into_inner)
    }

    /// PlaceOrder with a fresh key; panics on failure. Returns the order id.
    pub async fn order(&self, customer: Uuid, items: &[(&str, u32)]) -> String {
        self.place(customer, items, &Uuid::now_v7().to_string())
            .await
            .expect("PlaceOrder")
            .order_id
    }

    pub async fn get(&self, customer: Uuid, order_id: &str) -> Result<pb::Order, Status> {
        self.get_after(customer, order_id, "").await
    }

    pub async fn get_after(
        &self,
        customer: Uuid,
        order_id: &str,
        token: &str,
    ) -> Result<pb::Order, Status> {
        let request = pb::GetOrderRequest {
            order_id: order_id.to_owned(),
            consistency_token: token.to_owned(),
        };
        self.orders()
            .get_order(as_user(request, customer))
            .await
            .map(|response| response.into_inner().order.expect("an order"))
    }

    pub async fn cancel(
        &self,
        customer: Uuid,
        order_id: &str,
    ) -> Result<pb::CancelOrderResponse, Status> {
        let request = pb::CancelOrderRequest {
            order_id: order_id.to_owned(),
        };
        self.orders()
            .cancel_order(as_user(request, customer))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Polls GetOrder until the order is in `status`.
    pub async fn wait_for(
        &self,
        customer: Uuid,
        order_id: &str,
        status: pb::OrderStatus,
        within: Duration,
    ) -> pb::Order {
        let deadline = Instant::now() + within;
        loop {
            let order = self.get(customer, order_id).await;
            if let Ok(order) = &order
                && order.status() == status
            {
                return order.clone();
            }
            assert!(
                Instant::now() < deadline,
                "order {order_id} not {status:?} within {within:?}: {order:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls GetOrder until the order is CONFIRMED, REJECTED or CANCELLED
    /// and no cancellation is pending.
    pub async fn wait_settled(
        &self,
        customer: Uuid,
        order_id: &str,
        within: Duration,
    ) -> pb::Order {
        let deadline = Instant::now() + within;
        loop {
            let order = self.get(customer, order_id).await;
            if let Ok(order) = &order
                && order.status() != pb::OrderStatus::Pending
                && !order.cancellation_pending
            {
                return order.clone();
            }
            assert!(
                Instant::now() < deadline,
                "order {order_id} not settled within {within:?}: {order:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sagas as the admin listing shows them.
    pub async fn sagas(&self) -> Vec<pb::Saga> {
        let request = pb::ListSagasRequest {
            status: 0,
            page: Some(proto::ferrishop::common::v1::PageRequest {
                limit: 100,
                cursor: String::new(),
            }),
        };
        self.orders()
            .list_sagas(as_admin(request))
            .await
            .expect("ListSagas")
            .into_inner()
            .sagas
    }

    // ---------------------------------------------------------- observation

    /// A core NATS subscription to every status notification of this shop.
    pub async fn status_notifications(&self) -> DeliveryStream {
        let subject = format!("{}.>", self.names.status_prefix);
        self.nats
            .subscribe(&Subscription::new(subject, unique_name("watch")).transient())
            .await
            .expect("subscribe to status notifications")
    }

    /// A consumer of this shop's order events topic, from the beginning.
    pub async fn order_events(&self) -> DeliveryStream {
        self.kafka
            .subscribe(&Subscription::new(
                &self.names.order_events,
                unique_name("order-events-reader"),
            ))
            .await
            .expect("subscribe to order events")
    }

    /// Rows of the order service's database.
    pub async fn rows(&self, query: &str) -> Vec<Value> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb(t) FROM ({query}) AS t"
        )))
        .fetch_all(&self.order.database.pool)
        .await
        .unwrap_or_else(|error| panic!("{query}: {error}"))
    }

    /// The platform's invariants over `products` and every order in the
    /// order service: stock adds up and was never oversold, money moved
    /// exactly for what was confirmed and not cancelled, nobody was charged
    /// twice, every saga ended.
    pub async fn assert_invariants(&self, products: &[(&str, u32)]) {
        let orders = self
            .rows("SELECT order_id, status, total_amount, lines FROM order_view")
            .await;
        let payments = self.payments().await;
        let mut sold: HashMap<String, i64> = HashMap::new();
        for order in &orders {
            let id: Uuid = order["order_id"].as_str().unwrap().parse().unwrap();
            let status = order["status"].as_str().unwrap();
            let total = order["total_amount"].as_i64().unwrap();
            let (charges, charged, refunded) = payments.get(&id).copied().unwrap_or_default();
            assert!(charges <= 1, "order {id} charged {charges} times");
            let kept = charged - refunded;
            match status {
                "CONFIRMED" => assert_eq!(kept, total, "order {id} is CONFIRMED: {order}"),
                "REJECTED" | "CANCELLED" => {
                    assert_eq!(kept, 0, "order {id} is {status} but {kept} was kept")
                }
                other => panic!("order {id} is still {other}"),
            }
            if status == "CONFIRMED" {
                for line in order["lines"].as_array().unwrap() {
                    *sold
                        .entry(line["product_id"].as_str().unwrap().to_owned())
                        .or_default() += line["quantity"].as_i64().unwrap();
                }
            }
        }
        for (id, (_, charged, refunded)) in &payments {
            assert!(
                orders
                    .iter()
                    .any(|order| order["order_id"].as_str() == Some(&id.to_string())),
                "money moved for unknown order {id}: charged {charged}, refunded {refunded}"
            );
        }
        for (product, initial) in products {
            let (on_hand, reserved, available) = self.stock(product).await;
            assert_eq!(on_hand, available + reserved, "{product}");
            assert!(available >= 0, "{product} oversold");
            assert_eq!(reserved, 0, "{product} still has units reserved");
            let sold = sold.get(*product).copied().unwrap_or_default();
            assert_eq!(
                on_hand,
                i64::from(*initial) - sold,
                "{product}: {initial} initially, {sold} sold"
            );
        }
        let unfinished = self
            .rows("SELECT id, saga_type, status FROM saga_instances WHERE status NOT IN ('COMPLETED', 'COMPENSATED')")
            .await;
        assert!(unfinished.is_empty(), "unfinished sagas: {unfinished:?}");
    }
}

/// Waits until `stream` yielded `count` messages (acking each) and returns
/// their payloads with their CloudEvents type.
pub async fn collect(
    stream: &mut DeliveryStream,
    count: usize,
    within: Duration,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + within;
    let mut messages = Vec::new();
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, stream.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            panic!(
                "only {} of {count} messages within {within:?}: {messages:?}",
                messages.len()
            );
        };
        let message = delivery.message().clone();
        let kind = message
            .headers
            .get("ce_type")
            .unwrap_or_default()
            .to_owned();
        let payload = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        delivery.ack().await.ok();
        messages.push((kind, payload));
    }
    messages
}

pub fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

/// `message` as the gateway forwards it for `user`.
pub fn as_user<T>(message: T, user: Uuid) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-user-id",
        MetadataValue::try_from(user.to_string()).unwrap(),
    );
    request
}

/// `message` as the gateway forwards it for an admin.
pub fn admin<T>(message: T) -> Request<T> {
    as_admin(message)
}

pub fn as_admin<T>(message: T) -> Request<T> {
    let mut request = as_user(message, Uuid::now_v7());
    request
        .metadata_mut()
        .insert("x-user-roles", MetadataValue::from_static("admin"));
    request
}

/// The `x-error-code` of a failed call.
pub fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get("x-error-code")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}
