//! The public gRPC port (50051) against the real binaries: `user` (tokens,
//! profiles), `inventory` (catalogue), `order` (orders) and `gateway` in
//! front of them, each on its own database and broker names.
//!
//! The first test needs the gateway alone: reflection, and the refusals the
//! gateway answers without asking anyone. The second drives the shop through
//! the port the way `grpcurl` would: catalogue reads without a token, orders
//! with one obtained by registering and logging in at the user service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proto::ferrishop::common::v1::Money;
use proto::ferrishop::inventory::v1 as inventory_pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1 as order_pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use proto::ferrishop::user::v1 as user_pb;
use proto::ferrishop::user::v1::user_service_client::UserServiceClient;
use serde_json::{Value, json};
use testkit::brokers::{kafka, nats, rabbitmq, unique_name};
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";
const ADMIN_EMAIL: &str = "grpc-admin@ferrishop.test";

/// `message` with `authorization: Bearer <token>` and optional extra metadata.
fn with_token<T>(message: T, token: Option<&str>, extra: &[(&'static str, String)]) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
    }
    for (key, value) in extra {
        request
            .metadata_mut()
            .insert(*key, MetadataValue::try_from(value.as_str()).unwrap());
    }
    request
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

/// An address nothing listens on, for upstreams a test does not need.
fn nowhere() -> String {
    format!("http://127.0.0.1:{}", testkit::net::free_port())
}

#[tokio::test]
async fn reflection_lists_the_public_services_and_the_gateway_refuses_on_its_own() {
    // No upstream at all: reflection, health and these refusals are local.
    let gateway = Spawn::new("gateway")
        .env("USER_URL", nowhere())
        .env("USER_GRPC_URL", nowhere())
        .env("ORDER_GRPC_URL", nowhere())
        .env("PAYMENT_GRPC_URL", nowhere())
        .env("INVENTORY_GRPC_URL", nowhere())
        .env("NATS_URL", nats().await)
        .start()
        .await;
    let url = gateway.grpc_url();

    let services = testkit::grpc::reflected_services(&url).await;
    assert_eq!(
        services,
        [
            "ferrishop.inventory.v1.InventoryService",
            "ferrishop.order.v1.OrderService",
            "ferrishop.payment.v1.PaymentService",
            "ferrishop.user.v1.UserService",
            "grpc.health.v1.Health",
        ]
    );
    // Serving without the user service's keys: anonymous calls need none.
    let health = testkit::grpc::health(&url, "ferrishop.order.v1.OrderService").await;
    assert_eq!(format!("{health:?}"), "Serving");

    let channel = testkit::grpc::channel(&url).await;
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let refused = inventory
        .reserve_stock(inventory_pb::ReserveStockRequest {
            reservation_id: Uuid::now_v7().to_string(),
            lines: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The public port buffers no more than the REST port reads (1 MiB).
    let refused = inventory
        .get_product(inventory_pb::GetProductRequest {
            product_id: "x".repeat(2 * 1024 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "{:?}",
        refused.code()
    );

    let mut orders = OrderServiceClient::new(channel.clone());
    let refused = orders
        .place_order(order_pb::PlaceOrderRequest {
            items: vec![],
            idempotency_key: "k".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        refused.metadata().get("x-error-code").unwrap(),
        "UNAUTHENTICATED"
    );

    let refused = orders
        .place_order(with_token(
            order_pb::PlaceOrderRequest::default(),
            Some("forged.token.here"),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let mut users = UserServiceClient::new(channel);
    let refused = users
        .batch_get_users(user_pb::BatchGetUsersRequest { user_ids: vec![] })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

/// User, inventory, order and the gateway in front of them.
struct Shop {
    _databases: Vec<TestDatabase>,
    user: ServiceProcess,
    _inventory: ServiceProcess,
    order: ServiceProcess,
    gateway: ServiceProcess,
    http: reqwest::Client,
}

impl Shop {
    async fn start() -> Self {
        let (amqp, brokers, nats_url) = (rabbitmq().await, kafka().await, nats().await);
        let mut databases = Vec::new();

        let database = fresh_database().await;
        let user = Spawn::new("user")
            .env("DATABASE_URL", &database.url)
            .env("KAFKA_BROKERS", &brokers)
            .env("NATS_URL", &nats_url)
            .env("USER_EVENTS_TOPIC", unique_name("user-events"))
            .env("ADMIN_EMAILS", ADMIN_EMAIL)
            .start()
            .await;
        databases.push(database);

        let database = fresh_database().await;
        let inventory = Spawn::new("inventory")
            .env("DATABASE_URL", &database.url)
            .env("AMQP_URL", &amqp)
            .env("KAFKA_BROKERS", &brokers)
            .env("NATS_URL", &nats_url)
            .env("INVENTORY_EVENTS_TOPIC", unique_name("inventory-events"))
            .start()
            .await;
        databases.push(database);
        inventory.wait_ready(PATIENCE).await;

        let database = fresh_database().await;
        let order = Spawn::new("order")
            .env("DATABASE_URL", &database.url)
            .env("AMQP_URL", &amqp)
            .env("KAFKA_BROKERS", &brokers)
            .env("NATS_URL", &nats_url)
            .env("INVENTORY_GRPC_URL", inventory.grpc_url())
            .env("PAYMENT_COMMANDS_EXCHANGE", unique_name("payment-commands"))
            .env("ORDER_REPLIES_EXCHANGE", unique_name("order-replies"))
            .env("ORDER_EVENTS_TOPIC", unique_name("order-events"))
            .env("ORDER_STATUS_SUBJECT_PREFIX", unique_name("orders"))
            .env("CONSUMER_GROUP", unique_name("order"))
            .start()
            .await;
        databases.push(database);

        user.wait_ready(PATIENCE).await;
        order.wait_ready(PATIENCE).await;
        let gateway = Spawn::new("gateway")
            .env("USER_URL", user.http_url())
            .env("USER_GRPC_URL", user.grpc_url())
            .env("ORDER_GRPC_URL", order.grpc_url())
            .env("INVENTORY_GRPC_URL", inventory.grpc_url())
            .env("PAYMENT_GRPC_URL", nowhere())
            .env("NATS_URL", &nats_url)
            .start()
            .await;
        gateway.wait_ready(PATIENCE).await;
        Self {
            _databases: databases,
            user,
            _inventory: inventory,
            order,
            gateway,
            http: reqwest::Client::new(),
        }
    }

    /// Registers `email` at the user service and logs in: (user id, token).
    async fn signed_in(&self, email: &str) -> (Uuid, String) {
        let url = |path: &str| format!("{}{path}", self.user.http_url());
        let registered: Value = self
            .http
            .post(url("/api/v1/users"))
            .json(&json!({"email": email, "password": PASSWORD, "name": "Grpc Tester"}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = registered["id"].as_str().unwrap().parse().unwrap();
        let login: Value = self
            .http
            .post(url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        (id, login["access_token"].as_str().unwrap().to_owned())
    }

    async fn public(&self) -> Channel {
        testkit::grpc::channel(&self.gateway.grpc_url()).await
    }
}

#[tokio::test]
async fn the_shop_through_the_public_grpc_port() {
    let shop = Shop::start().await;
    let channel = shop.public().await;
    // gRPC health follows readiness (checked now and then).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let health = testkit::grpc::health(&shop.gateway.grpc_url(), "").await;
        if format!("{health:?}") == "Serving" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway health: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let mut orders = OrderServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel);

    // An admin creates a product through the port; a customer may not.
    let (_, admin) = shop.signed_in(ADMIN_EMAIL).await;
    let customer_email = format!("{}@ferrishop.test", unique_name("grpc"));
    let (customer, token) = shop.signed_in(&customer_email).await;
    let create = || inventory_pb::CreateProductRequest {
        sku: unique_name("SKU").to_uppercase(),
        name: "Proxied Product".into(),
        description: "Sold through the public gRPC port".into(),
        price: Some(eur(1_250)),
        category: inventory_pb::Category::Books.into(),
        initial_stock: 10,
        reorder_policy: None,
    };
    let refused = inventory
        .create_product(with_token(create(), Some(&token), &[]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let product = inventory
        .create_product(with_token(create(), Some(&admin), &[]))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();

    // Catalogue reads need no token; ListProducts streams through.
    let got = inventory
        .get_product(inventory_pb::GetProductRequest {
            product_id: product.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(got.name, "Proxied Product");
    assert_eq!(got.available, 10);
    let mut listed = inventory
        .list_products(inventory_pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = listed.message().await.unwrap() {
        seen.push(message.product.unwrap().id);
    }
    assert!(seen.contains(&product.id), "{seen:?}");

    // Internal methods stay internal, whoever asks.
    let refused = inventory
        .reserve_stock(with_token(
            inventory_pb::ReserveStockRequest {
                reservation_id: Uuid::now_v7().to_string(),
                lines: vec![],
            },
            Some(&admin),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // PlaceOrder: refused without a token, accepted with one, and placed
    // for the token's user whatever x-user-id the client claims.
    let place = || order_pb::PlaceOrderRequest {
        items: vec![order_pb::OrderItem {
            product_id: product.id.clone(),
            quantity: 2,
        }],
        idempotency_key: Uuid::now_v7().to_string(),
    };
    let refused = orders.place_order(place()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let someone_else = Uuid::now_v7();
    let forged = [
        ("x-user-id", someone_else.to_string()),
        ("x-user-roles", "admin".to_owned()),
    ];
    let placed = orders
        .place_order(with_token(place(), Some(&token), &forged))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.status(), order_pb::OrderStatus::Pending);

    let order = orders
        .get_order(with_token(
            order_pb::GetOrderRequest {
                order_id: placed.order_id.clone(),
                consistency_token: placed.consistency_token.clone(),
            },
            Some(&token),
            &forged,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.customer_id, customer.to_string());
    assert_eq!(order.total.unwrap().amount, 2_500);

    // Straight at the order service, the forged identity owns nothing.
    let mut direct = OrderServiceClient::new(testkit::grpc::channel(&shop.order.grpc_url()).await);
    let missing = direct
        .get_order(with_token(
            order_pb::GetOrderRequest {
                order_id: placed.order_id.clone(),
                consistency_token: String::new(),
            },
            None,
            &[("x-user-id", someone_else.to_string())],
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // WatchOrder streams through the proxy: the current status first.
    let mut watch = orders
        .watch_order(with_token(
            order_pb::WatchOrderRequest {
                order_id: placed.order_id.clone(),
            },
            Some(&token),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.order_id, placed.order_id);
    drop(watch);

    // GetUser: the caller's own profile, nobody else's.
    let me = users
        .get_user(with_token(
            user_pb::GetUserRequest::default(),
            Some(&token),
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.id, customer.to_string());
    assert_eq!(me.email, customer_email);
    let admin_id = users
        .get_user(with_token(
            user_pb::GetUserRequest::default(),
            Some(&admin),
            &[],
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let hidden = users
        .get_user(with_token(
            user_pb::GetUserRequest { user_id: admin_id },
            Some(&token),
            &[("x-user-roles", "admin".to_owned())],
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let refused = users
        .get_user(user_pb::GetUserRequest {
            user_id: customer.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}
