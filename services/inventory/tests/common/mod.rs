//! The inventory binary under test: a fresh database, the real process on
//! free ports, a gRPC client, and the stock invariants checked against the
//! database at the end of every test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proto::ferrishop::common::v1::Money;
use proto::ferrishop::inventory::v1 as pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use sqlx::Row;
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

pub type Client = InventoryServiceClient<Channel>;

pub struct Harness {
    pub db: TestDatabase,
    pub process: ServiceProcess,
    pub client: Client,
    /// This harness's own integration events topic.
    pub events_topic: String,
}

/// The service with default settings on a fresh database.
pub async fn start() -> Harness {
    start_with(&[]).await
}

/// The service with extra environment variables.
pub async fn start_with(env: &[(&str, &str)]) -> Harness {
    let db = fresh_database().await;
    let events_topic = testkit::brokers::unique_name("inventory-events");
    let mut env = env.to_vec();
    env.push(("INVENTORY_EVENTS_TOPIC", &events_topic));
    let process = spawn(&db, &env).await;
    let client = InventoryServiceClient::new(testkit::grpc::channel(&process.grpc_url()).await);
    Harness {
        db,
        process,
        client,
        events_topic,
    }
}

/// Another process of the service on the same database.
pub async fn spawn(db: &TestDatabase, env: &[(&str, &str)]) -> ServiceProcess {
    let mut spawn = Spawn::new("inventory").env("DATABASE_URL", &db.url);
    for (key, value) in env {
        spawn = spawn.env(key, *value);
    }
    let process = spawn.start().await;
    process.wait_ready(Duration::from_secs(30)).await;
    process
}

/// `message` as sent by the gateway for a user with `roles`.
pub fn as_user<T>(message: T, roles: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "x-user-id",
        MetadataValue::try_from(Uuid::now_v7().to_string()).unwrap(),
    );
    metadata.insert("x-user-roles", MetadataValue::try_from(roles).unwrap());
    request
}

pub fn as_admin<T>(message: T) -> Request<T> {
    as_user(message, "admin")
}

pub fn eur(amount: i64) -> Option<Money> {
    Some(Money {
        amount,
        currency: "EUR".into(),
    })
}

/// A valid CreateProduct request.
pub fn new_product(sku: &str, price: i64, stock: u32) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        sku: sku.into(),
        name: format!("Product {sku}"),
        description: "A product under test.".into(),
        price: eur(price),
        category: pb::Category::Electronics.into(),
        initial_stock: stock,
        reorder_policy: None,
    }
}

/// The `x-error-code` of a failed call.
pub fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get("x-error-code")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// Asserts a call failed with `code` and `x-error-code` `error_code`.
#[track_caller]
pub fn assert_failed<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    x_error_code: &str,
) -> Status {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_code(&status), x_error_code, "{status:?}");
    status
}

pub fn line(product_id: &str, quantity: u32) -> pb::ReservationLine {
    pb::ReservationLine {
        product_id: product_id.into(),
        quantity,
    }
}

impl Harness {
    pub async fn create(&self, request: pb::CreateProductRequest) -> pb::Product {
        self.client
            .clone()
            .create_product(as_admin(request))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// A product with `stock` units at 10.00 EUR.
    pub async fn stocked(&self, stock: u32) -> pb::Product {
        let sku = format!("T-{}", Uuid::now_v7().simple());
        self.create(new_product(&sku, 1_000, stock)).await
    }

    pub async fn product(&self, id: &str) -> pb::Product {
        self.client
            .clone()
            .get_product(pb::GetProductRequest {
                product_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// `(on_hand, reserved, available)` of a product.
    pub async fn stock(&self, id: &str) -> (i64, i64, i64) {
        let product = self.product(id).await;
        (product.on_hand, product.reserved, product.available)
    }

    pub async fn reserve(
        &self,
        reservation_id: &str,
        lines: Vec<pb::ReservationLine>,
    ) -> Result<pb::ReserveStockResponse, Status> {
        self.client
            .clone()
            .reserve_stock(pb::ReserveStockRequest {
                reservation_id: reservation_id.into(),
                lines,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn commit(&self, reservation_id: &str) -> Result<pb::ReservationStatus, Status> {
        self.client
            .clone()
            .commit_reservation(pb::CommitReservationRequest {
                reservation_id: reservation_id.into(),
            })
            .await
            .map(|response| response.into_inner().status())
    }

    pub async fn release(&self, reservation_id: &str) -> Result<pb::ReservationStatus, Status> {
        self.client
            .clone()
            .release_reservation(pb::ReleaseReservationRequest {
                reservation_id: reservation_id.into(),
            })
            .await
            .map(|response| response.into_inner().status())
    }

    /// `(type, key, payload)` of every outbox message, oldest first.
    pub async fn events(&self) -> Vec<(String, String, serde_json::Value)> {
        sqlx::query(
            "SELECT headers->>'ce_type' AS event_type, message_key, payload \
             FROM outbox WHERE destination = $1 ORDER BY sequence",
        )
        .bind(&self.events_topic)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let payload: Vec<u8> = row.get("payload");
            (
                row.get("event_type"),
                row.get("message_key"),
                serde_json::from_slice(&payload).unwrap(),
            )
        })
        .collect()
    }

    /// The stock invariants, checked on every product in the database:
    /// `on_hand = available + reserved`, nothing negative, and `reserved`
    /// equal to the units of the HELD reservations — plus the same identity
    /// as the API reports it.
    pub async fn assert_invariants(&self) {
        let rows = sqlx::query(
            "SELECT s.product_id::text AS id, s.on_hand, s.reserved, s.available, \
                    COALESCE(h.held, 0)::bigint AS held \
             FROM stock s LEFT JOIN ( \
                 SELECT l.product_id, sum(l.quantity) AS held \
                 FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id \
                 WHERE r.status = 'HELD' GROUP BY l.product_id \
             ) h ON h.product_id = s.product_id",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        for row in rows {
            let id: String = row.get("id");
            let (on_hand, reserved, available, held): (i64, i64, i64, i64) = (
                row.get("on_hand"),
                row.get("reserved"),
                row.get("available"),
                row.get("held"),
            );
            assert_eq!(on_hand, available + reserved, "product {id}");
            assert!(
                on_hand >= 0 && reserved >= 0 && available >= 0,
                "product {id}"
            );
            assert_eq!(
                reserved, held,
                "product {id}: reserved vs held reservations"
            );
            let (api_on_hand, api_reserved, api_available) = self.stock(&id).await;
            assert_eq!(
                api_on_hand,
                api_available + api_reserved,
                "product {id} via the API"
            );
        }
    }
}
