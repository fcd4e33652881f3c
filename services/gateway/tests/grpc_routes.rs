//! The REST routes the gateway serves over gRPC — catalogue, orders, admin —
//! against the real gateway binary, with inventory, order and the user
//! service's JWKS played by the test (so each answer, and what the gateway
//! sent to get it, is the test's to check), and a real NATS for the fault
//! flags. The journey through all five real binaries is the end-to-end
//! suite's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use proto::ferrishop::common::v1 as common;
use proto::ferrishop::inventory::v1 as inv;
use proto::ferrishop::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use proto::ferrishop::order::v1 as ord;
use proto::ferrishop::order::v1::order_service_server::{OrderService, OrderServiceServer};
use serde_json::{Value, json};
use testkit::brokers::{nats, unique_name};
use testkit::process::{ServiceProcess, Spawn};
use tokio::net::TcpListener;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

type Reply<T> = Result<Response<T>, Status>;

/// A status with the service's stable code, as the real services send it.
fn coded(code: Code, error_code: &'static str, message: &str) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        proto::metadata::ERROR_CODE,
        MetadataValue::from_static(error_code),
    );
    status
}

fn eur(amount: i64) -> Option<common::Money> {
    Some(common::Money {
        amount,
        currency: "EUR".into(),
    })
}

fn now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    })
}

/// What the gateway sent with a call: the caller and the request id.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sent {
    user_id: Option<String>,
    roles: Option<String>,
    request_id: Option<String>,
}

impl Sent {
    fn of(metadata: &MetadataMap) -> Self {
        let get = |key: &str| {
            metadata
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            user_id: get(proto::metadata::USER_ID),
            roles: get(proto::metadata::USER_ROLES),
            request_id: get("x-request-id"),
        }
    }
}

/// The inventory: a catalogue in memory, ordered by id like the real one.
#[derive(Clone, Default)]
struct FakeInventory {
    products: Arc<Mutex<Vec<inv::Product>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    last_list: Arc<Mutex<Option<inv::ListProductsRequest>>>,
}

impl FakeInventory {
    fn add(&self, name: &str, category: inv::Category, available: i64) -> String {
        let id = Uuid::now_v7().to_string();
        let mut products = self.products.lock().unwrap();
        products.push(inv::Product {
            id: id.clone(),
            sku: format!("SKU-{name}"),
            name: name.into(),
            description: format!("A {name}"),
            price: eur(10_000),
            category: category.into(),
            active: true,
            on_hand: available + 1,
            reserved: 1,
            available,
            created_at: now(),
            updated_at: now(),
            reorder_policy: None,
        });
        products.sort_by(|a, b| a.id.cmp(&b.id));
        id
    }

    fn record(&self, metadata: &MetadataMap) {
        self.sent.lock().unwrap().push(Sent::of(metadata));
    }

    fn last_sent(&self) -> Sent {
        self.sent
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn find(&self, id: &str) -> Result<inv::Product, Status> {
        self.products
            .lock()
            .unwrap()
            .iter()
            .find(|product| product.id == id)
            .cloned()
            .ok_or_else(|| coded(Code::NotFound, "PRODUCT_NOT_FOUND", "no such product"))
    }

    fn admin_only(metadata: &MetadataMap) -> Result<(), Status> {
        let roles = Sent::of(metadata).roles.unwrap_or_default();
        if roles.split(',').any(|role| role == "admin") {
            Ok(())
        } else {
            Err(coded(Code::PermissionDenied, "FORBIDDEN", "admin only"))
        }
    }
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    type ListProductsStream = BoxStream<'static, Result<inv::ListProductsResponse, Status>>;
    type WatchStockStream = BoxStream<'static, Result<inv::WatchStockResponse, Status>>;

    async fn get_product(
        &self,
        request: Request<inv::GetProductRequest>,
    ) -> Reply<inv::GetProductResponse> {
        self.record(request.metadata());
        let product = self.find(&request.get_ref().product_id)?;
        Ok(Response::new(inv::GetProductResponse {
            product: Some(product),
        }))
    }

    async fn list_products(
        &self,
        request: Request<inv::ListProductsRequest>,
    ) -> Reply<Self::ListProductsStream> {
        self.record(request.metadata());
        let request = request.into_inner();
        *self.last_list.lock().unwrap() = Some(request.clone());
        let page = request.page.unwrap_or_default();
        if page.cursor == "broken" {
            let mut details = ErrorDetails::new();
            details.add_bad_request_violation("page.cursor", "is not a cursor of this service");
            return Err(Status::with_error_details(
                Code::InvalidArgument,
                "invalid request",
                details,
            ));
        }
        let products: Vec<_> = self
            .products
            .lock()
            .unwrap()
            .iter()
            .filter(|product| product.id > page.cursor)
            .filter(|product| request.category == 0 || product.category == request.category)
            .filter(|product| {
                request
                    .in_stock
                    .is_none_or(|wanted| (product.available > 0) == wanted)
            })
            .take(if page.limit == 0 {
                usize::MAX
            } else {
                page.limit as usize
            })
            .map(|product| {
                Ok(inv::ListProductsResponse {
                    cursor: product.id.clone(),
                    product: Some(product.clone()),
                })
            })
            .collect();
        Ok(Response::new(stream::iter(products).boxed()))
    }

    async fn create_product(
        &self,
        request: Request<inv::CreateProductRequest>,
    ) -> Reply<inv::CreateProductResponse> {
        self.record(request.metadata());
        Self::admin_only(request.metadata())?;
        let request = request.into_inner();
        if request.name.is_empty() {
            let mut details = ErrorDetails::new();
            details.add_bad_request_violation("name", "must be 1 to 200 characters");
            let mut status =
                Status::with_error_details(Code::InvalidArgument, "invalid product", details);
            status.metadata_mut().insert(
                proto::metadata::ERROR_CODE,
                MetadataValue::from_static("VALIDATION_FAILED"),
            );
            return Err(status);
        }
        if self
            .products
            .lock()
            .unwrap()
            .iter()
            .any(|product| product.sku == request.sku)
        {
            return Err(coded(Code::AlreadyExists, "SKU_TAKEN", "the SKU is in use"));
        }
        let id = self.add(
            &request.name,
            request.category(),
            i64::from(request.initial_stock),
        );
        let mut products = self.products.lock().unwrap();
        let product = products
            .iter_mut()
            .find(|product| product.id == id)
            .ok_or_else(|| Status::internal("lost the new product"))?;
        product.sku = request.sku;
        product.price = request.price;
        product.on_hand = i64::from(request.initial_stock);
        product.reserved = 0;
        let product = product.clone();
        Ok(Response::new(inv::CreateProductResponse {
            product: Some(product),
        }))
    }

    async fn restock(&self, request: Request<inv::RestockRequest>) -> Reply<inv::RestockResponse> {
        self.record(request.metadata());
        Self::admin_only(request.metadata())?;
        let request = request.into_inner();
        let mut product = self.find(&request.product_id)?;
        product.available += i64::from(request.quantity);
        product.on_hand += i64::from(request.quantity);
        Ok(Response::new(inv::RestockResponse {
            product: Some(product),
        }))
    }

    async fn quote(&self, request: Request<inv::QuoteRequest>) -> Reply<inv::QuoteResponse> {
        self.record(request.metadata());
        let request = request.into_inner();
        let product = self.find(&request.product_id)?;
        let unit = product.price.map(|price| price.amount).unwrap_or_default();
        let subtotal = unit * i64::from(request.quantity);
        let discount_rate_bps = if request.quantity >= 10 { 500 } else { 0 };
        let discount = subtotal * discount_rate_bps / 10_000;
        let tax = (subtotal - discount) * i64::from(request.tax_rate_bps) / 10_000;
        Ok(Response::new(inv::QuoteResponse {
            product_id: request.product_id,
            quantity: request.quantity,
            unit_price: eur(unit),
            subtotal: eur(subtotal),
            discount_rate_bps: discount_rate_bps as u32,
            discount: eur(discount),
            tax: eur(tax),
            total: eur(subtotal - discount + tax),
        }))
    }

    async fn reserve_stock(
        &self,
        _: Request<inv::ReserveStockRequest>,
    ) -> Reply<inv::ReserveStockResponse> {
        Err(Status::unimplemented("internal"))
    }

    async fn commit_reservation(
        &self,
        _: Request<inv::CommitReservationRequest>,
    ) -> Reply<inv::CommitReservationResponse> {
        Err(Status::unimplemented("internal"))
    }

    async fn release_reservation(
        &self,
        _: Request<inv::ReleaseReservationRequest>,
    ) -> Reply<inv::ReleaseReservationResponse> {
        Err(Status::unimplemented("internal"))
    }

    async fn watch_stock(
        &self,
        _: Request<inv::WatchStockRequest>,
    ) -> Reply<Self::WatchStockStream> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// The order service: orders in memory, owner-checked like the real one.
#[derive(Clone, Default)]
struct FakeOrders {
    orders: Arc<Mutex<Vec<ord::Order>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl FakeOrders {
    fn caller(&self, metadata: &MetadataMap) -> Result<Sent, Status> {
        let sent = Sent::of(metadata);
        self.sent.lock().unwrap().push(sent.clone());
        if sent.user_id.is_none() {
            return Err(coded(Code::Unauthenticated, "UNAUTHENTICATED", "no caller"));
        }
        Ok(sent)
    }

    fn put(&self, owner: Uuid, status: ord::OrderStatus) -> String {
        let id = Uuid::now_v7().to_string();
        self.orders.lock().unwrap().insert(
            0,
            ord::Order {
                id: id.clone(),
                customer_id: owner.to_string(),
                status: status.into(),
                lines: vec![ord::OrderLine {
                    product_id: Uuid::nil().to_string(),
                    product_name: "Keyboard".into(),
                    quantity: 2,
                    unit_price: eur(4999),
                    line_total: eur(9998),
                }],
                total: eur(9998),
                failure_reason: String::new(),
                created_at: now(),
                updated_at: now(),
                cancellation_pending: false,
            },
        );
        id
    }

    fn visible(&self, caller: &Sent, id: &str) -> Result<ord::Order, Status> {
        let admin = caller
            .roles
            .as_deref()
            .unwrap_or_default()
            .contains("admin");
        self.orders
            .lock()
            .unwrap()
            .iter()
            .find(|order| order.id == id)
            .filter(|order| admin || Some(&order.customer_id) == caller.user_id.as_ref())
            .cloned()
            .ok_or_else(|| coded(Code::NotFound, "ORDER_NOT_FOUND", "order not found"))
    }
}

#[tonic::async_trait]
impl OrderService for FakeOrders {
    type WatchOrderStream = BoxStream<'static, Result<ord::WatchOrderResponse, Status>>;

    async fn place_order(
        &self,
        request: Request<ord::PlaceOrderRequest>,
    ) -> Reply<ord::PlaceOrderResponse> {
        let caller = self.caller(request.metadata())?;
        let request = request.into_inner();
        if request.idempotency_key.len() > 255 {
            let mut details = ErrorDetails::new();
            details.add_bad_request_violation("idempotency_key", "must be at most 255 characters");
            return Err(Status::with_error_details(
                Code::InvalidArgument,
                "invalid order",
                details,
            ));
        }
        if request.idempotency_key == "used-for-other-items" {
            return Err(coded(
                Code::AlreadyExists,
                "IDEMPOTENCY_KEY_REUSED",
                "the key was used for other items",
            ));
        }
        let owner = Uuid::parse_str(caller.user_id.as_deref().unwrap_or_default()).unwrap();
        let id = self.put(owner, ord::OrderStatus::Pending);
        Ok(Response::new(ord::PlaceOrderResponse {
            order_id: id,
            status: ord::OrderStatus::Pending.into(),
            consistency_token: "17".into(),
        }))
    }

    async fn get_order(
        &self,
        request: Request<ord::GetOrderRequest>,
    ) -> Reply<ord::GetOrderResponse> {
        let caller = self.caller(request.metadata())?;
        let request = request.into_inner();
        self.tokens
            .lock()
            .unwrap()
            .push(request.consistency_token.clone());
        let order = self.visible(&caller, &request.order_id)?;
        Ok(Response::new(ord::GetOrderResponse { order: Some(order) }))
    }

    async fn list_orders(
        &self,
        request: Request<ord::ListOrdersRequest>,
    ) -> Reply<ord::ListOrdersResponse> {
        let caller = self.caller(request.metadata())?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let mine: Vec<_> = self
            .orders
            .lock()
            .unwrap()
            .iter()
            .filter(|order| Some(&order.customer_id) == caller.user_id.as_ref())
            .filter(|order| request.status == 0 || order.status == request.status)
            .filter(|order| page.cursor.is_empty() || order.id < page.cursor)
            .cloned()
            .collect();
        let limit = page.limit as usize;
        let next_cursor = if mine.len() > limit {
            mine[limit - 1].id.clone()
        } else {
            String::new()
        };
        Ok(Response::new(ord::ListOrdersResponse {
            orders: mine.into_iter().take(limit).collect(),
            page: Some(common::PageResponse { next_cursor }),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<ord::CancelOrderRequest>,
    ) -> Reply<ord::CancelOrderResponse> {
        let caller = self.caller(request.metadata())?;
        let order = self.visible(&caller, &request.get_ref().order_id)?;
        if order.status != i32::from(ord::OrderStatus::Confirmed) {
            return Err(coded(
                Code::FailedPrecondition,
                "ORDER_NOT_CANCELLABLE",
                "only a CONFIRMED order can be cancelled",
            ));
        }
        Ok(Response::new(ord::CancelOrderResponse {
            order_id: order.id,
            status: ord::OrderStatus::Confirmed.into(),
            consistency_token: "18".into(),
        }))
    }

    async fn watch_order(
        &self,
        _: Request<ord::WatchOrderRequest>,
    ) -> Reply<Self::WatchOrderStream> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_sagas(
        &self,
        request: Request<ord::ListSagasRequest>,
    ) -> Reply<ord::ListSagasResponse> {
        let caller = self.caller(request.metadata())?;
        if !caller
            .roles
            .as_deref()
            .unwrap_or_default()
            .contains("admin")
        {
            return Err(coded(Code::PermissionDenied, "FORBIDDEN", "admin only"));
        }
        let request = request.into_inner();
        let saga = ord::Saga {
            id: Uuid::now_v7().to_string(),
            saga_type: "place_order".into(),
            order_id: Uuid::now_v7().to_string(),
            status: ord::SagaStatus::Compensated.into(),
            steps: vec![ord::SagaStep {
                name: "reserve_stock".into(),
                status: ord::SagaStepStatus::Failed.into(),
                attempts: 1,
                error: "INSUFFICIENT_STOCK".into(),
                started_at: now(),
                finished_at: now(),
            }],
            failure_reason: "INSUFFICIENT_STOCK".into(),
            created_at: now(),
            updated_at: now(),
        };
        let sagas = if request.status == 0 || request.status == saga.status {
            vec![saga]
        } else {
            vec![]
        };
        Ok(Response::new(ord::ListSagasResponse {
            sagas,
            page: Some(common::PageResponse::default()),
        }))
    }
}

async fn serve_grpc<S>(service: S) -> String
where
    S: tonic::server::NamedService
        + tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    url
}

/// The gateway with its fakes and a key to sign tokens with.
struct Setup {
    gateway: ServiceProcess,
    inventory: FakeInventory,
    orders: FakeOrders,
    key: Arc<auth::SigningKey>,
    nats_url: String,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Self {
        let key = Arc::new(auth::SigningKey::generate().unwrap());
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

        let inventory = FakeInventory::default();
        let orders = FakeOrders::default();
        let inventory_url = serve_grpc(InventoryServiceServer::new(inventory.clone())).await;
        let order_url = serve_grpc(OrderServiceServer::new(orders.clone())).await;
        let nats_url = nats().await;
        let gateway = Spawn::new("gateway")
            .env("USER_URL", &user_url)
            .env("INVENTORY_GRPC_URL", &inventory_url)
            .env("ORDER_GRPC_URL", &order_url)
            .env("NATS_URL", &nats_url)
            .start()
            .await;
        gateway.wait_ready(PATIENCE).await;
        Self {
            gateway,
            inventory,
            orders,
            key,
            nats_url,
            http: reqwest::Client::new(),
        }
    }

    fn token(&self, user: Uuid, roles: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        self.key
            .sign(&auth::Claims {
                sub: user,
                roles: roles.iter().map(|role| (*role).to_owned()).collect(),
                iat: now,
                exp: now + 600,
                iss: auth::DEFAULT_ISSUER.into(),
                aud: auth::DEFAULT_AUDIENCE.into(),
                jti: Uuid::now_v7(),
            })
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.http_url())
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }
}

/// Status and JSON body; problem documents must say so in their media type.
async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    if status >= 400 {
        assert_eq!(media, "application/problem+json", "{status} {json}");
    }
    (status, json)
}

#[tokio::test]
async fn the_catalogue_pages_filters_and_quotes() {
    let setup = Setup::start().await;
    let keyboard = setup
        .inventory
        .add("keyboard", inv::Category::Electronics, 5);
    let mouse = setup.inventory.add("mouse", inv::Category::Electronics, 0);
    let novel = setup.inventory.add("novel", inv::Category::Books, 3);

    // Pages of two: the first has a cursor, the last none.
    let (status, page) = setup.get("/api/v1/products?limit=2", None).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(ids, [json!(keyboard), json!(mouse)]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, mouse);
    let (_, last) = setup
        .get(&format!("/api/v1/products?limit=2&cursor={cursor}"), None)
        .await;
    assert_eq!(last["items"][0]["id"], novel);
    assert_eq!(last["next_cursor"], Value::Null);

    // Filters reach the stream request.
    let (_, in_stock) = setup
        .get("/api/v1/products?category=electronics&in_stock=true", None)
        .await;
    assert_eq!(in_stock["items"].as_array().unwrap().len(), 1);
    assert_eq!(in_stock["items"][0]["id"], keyboard);
    let sent = setup.inventory.last_list.lock().unwrap().clone().unwrap();
    assert_eq!(sent.category(), inv::Category::Electronics);
    assert_eq!(sent.in_stock, Some(true));
    assert_eq!(
        sent.page.unwrap().limit,
        21,
        "one more than the default page"
    );

    // Bad values are 422 problems naming the field, locally or upstream.
    let (status, problem) = setup
        .get("/api/v1/products?category=food&limit=0", None)
        .await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["category"].is_string(), "{problem}");
    assert!(problem["errors"]["limit"].is_string(), "{problem}");
    let (status, problem) = setup.get("/api/v1/products?cursor=broken", None).await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["cursor"].is_string(), "{problem}");

    // One product.
    let (status, product) = setup
        .get(&format!("/api/v1/products/{keyboard}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(product["available"], 5);
    assert_eq!(product["category"], "ELECTRONICS");
    assert_eq!(
        product["price"],
        json!({"amount": 10_000, "currency": "EUR"})
    );
    let (status, problem) = setup
        .get(&format!("/api/v1/products/{}", Uuid::now_v7()), None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("PRODUCT_NOT_FOUND"))
    );
    let (status, problem) = setup.get("/api/v1/products/nope", None).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"]["id"], "must be a UUID");

    // A quote: 20 × 100.00 at 8 %, 5 % bulk discount.
    let (status, quote) = setup
        .get(
            &format!("/api/v1/products/{keyboard}/quote?quantity=20&tax_rate=0.08"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{quote}");
    assert_eq!(quote["subtotal"]["amount"], 200_000);
    assert_eq!(quote["discount"]["amount"], 10_000);
    assert_eq!(quote["tax"]["amount"], 15_200);
    assert_eq!(
        quote["total"],
        json!({"amount": 205_200, "currency": "EUR"})
    );
    let (status, problem) = setup
        .get(
            &format!("/api/v1/products/{keyboard}/quote?tax_rate=2"),
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["quantity"].is_string());
    assert!(problem["errors"]["tax_rate"].is_string());
}

#[tokio::test]
async fn only_admins_change_the_catalogue() {
    let setup = Setup::start().await;
    let admin = setup.token(Uuid::now_v7(), &["admin"]);
    let shopper = setup.token(Uuid::now_v7(), &[]);
    let new_product = json!({
        "sku": "KB-1", "name": "Keyboard", "description": "Clicky",
        "price": {"amount": 4999, "currency": "EUR"},
        "category": "ELECTRONICS", "initial_stock": 4
    });
    let create = |token: Option<&str>, body: &Value| {
        let mut request = setup.http.post(setup.url("/api/v1/products")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let (status, _) = read(create(None, &new_product).await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, problem) = read(create(Some(&shopper), &new_product).await.unwrap()).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("FORBIDDEN")));

    let response = create(Some(&admin), &new_product).await.unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (status, product) = read(response).await;
    assert_eq!(status, 201, "{product}");
    assert_eq!(
        location,
        format!("/api/v1/products/{}", product["id"].as_str().unwrap())
    );
    assert_eq!(product["sku"], "KB-1");
    assert_eq!(product["available"], 4);
    let sent = setup.inventory.last_sent();
    assert_eq!(sent.roles.as_deref(), Some("admin"));
    assert!(sent.request_id.is_some(), "the request id goes upstream");

    let (status, problem) = read(create(Some(&admin), &new_product).await.unwrap()).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("SKU_TAKEN")));
    let mut nameless = new_product.clone();
    nameless["name"] = json!("");
    nameless["sku"] = json!("KB-2");
    let (status, problem) = read(create(Some(&admin), &nameless).await.unwrap()).await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["name"].is_string(), "{problem}");
    let mut food = new_product.clone();
    food["category"] = json!("FOOD");
    let (status, _) = read(create(Some(&admin), &food).await.unwrap()).await;
    assert_eq!(status, 422);

    let id = product["id"].as_str().unwrap();
    let restock = setup
        .http
        .post(setup.url(&format!("/api/v1/products/{id}/restock")))
        .bearer_auth(&admin)
        .json(&json!({"quantity": 6}))
        .send()
        .await
        .unwrap();
    let (status, restocked) = read(restock).await;
    assert_eq!(status, 200, "{restocked}");
    assert_eq!(restocked["available"], 10);
    let refused = setup
        .http
        .post(setup.url(&format!("/api/v1/products/{id}/restock")))
        .bearer_auth(&shopper)
        .json(&json!({"quantity": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(read(refused).await.0, 403);
}

#[tokio::test]
async fn orders_are_placed_read_listed_and_cancelled_by_their_owner() {
    let setup = Setup::start().await;
    let (owner, stranger) = (Uuid::now_v7(), Uuid::now_v7());
    let token = setup.token(owner, &[]);
    let items = json!({"items": [{"product_id": Uuid::now_v7(), "quantity": 2}]});
    let place = |key: Option<&str>| {
        let mut request = setup
            .http
            .post(setup.url("/api/v1/orders"))
            .bearer_auth(&token)
            .json(&items);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };

    let (status, problem) = read(place(None).await.unwrap()).await;
    assert_eq!(status, 422);
    assert!(
        problem["errors"]["Idempotency-Key"].is_string(),
        "{problem}"
    );
    let long = "k".repeat(300);
    let (status, problem) = read(place(Some(&long)).await.unwrap()).await;
    assert_eq!(status, 422);
    assert!(
        problem["errors"]["Idempotency-Key"].is_string(),
        "{problem}"
    );
    let (status, problem) = read(place(Some("used-for-other-items")).await.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );

    let response = place(Some("order-1")).await.unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (status, accepted) = read(response).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["consistency_token"], "17");
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/orders/{id}"));
    let sent = setup.orders.sent.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.user_id, Some(owner.to_string()));

    // Read back with the token; another user sees nothing.
    let (status, order) = setup
        .get(&format!("{location}?consistency_token=17"), Some(&token))
        .await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["id"], id);
    assert_eq!(order["customer_id"], owner.to_string());
    assert_eq!(order["items"][0]["line_total"]["amount"], 9998);
    assert_eq!(setup.orders.tokens.lock().unwrap().last().unwrap(), "17");
    let (status, problem) = setup
        .get(&location, Some(&setup.token(stranger, &[])))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("ORDER_NOT_FOUND"))
    );
    let (status, _) = setup.get(&location, None).await;
    assert_eq!(status, 401);

    // The list: newest first, paged, filtered.
    let confirmed = setup.orders.put(owner, ord::OrderStatus::Confirmed);
    let (status, page) = setup.get("/api/v1/orders?limit=1", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["id"], confirmed);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = setup
        .get(
            &format!("/api/v1/orders?limit=1&cursor={cursor}"),
            Some(&token),
        )
        .await;
    assert_eq!(next["items"][0]["id"], id);
    assert_eq!(next["next_cursor"], Value::Null);
    let (_, pending) = setup
        .get("/api/v1/orders?status=pending", Some(&token))
        .await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let (status, problem) = setup
        .get("/api/v1/orders?status=SHIPPED", Some(&token))
        .await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["status"].is_string());

    // Cancel: a PENDING order is not cancellable, a CONFIRMED one is.
    let cancel = |id: &str, token: &str| {
        setup
            .http
            .post(setup.url(&format!("/api/v1/orders/{id}/cancel")))
            .bearer_auth(token)
            .send()
    };
    let (status, problem) = read(cancel(&id, &token).await.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("ORDER_NOT_CANCELLABLE"))
    );
    let (status, accepted) = read(cancel(&confirmed, &token).await.unwrap()).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["id"], confirmed);
    let (status, _) = read(
        cancel(&confirmed, &setup.token(stranger, &[]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, problem) = read(cancel("nope", &token).await.unwrap()).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"]["id"], "must be a UUID");
}

#[tokio::test]
async fn admins_list_sagas_and_switch_fault_flags_in_nats() {
    let setup = Setup::start().await;
    let admin = setup.token(Uuid::now_v7(), &["admin"]);
    let shopper = setup.token(Uuid::now_v7(), &[]);

    let (status, page) = setup
        .get("/api/v1/admin/sagas?status=compensated", Some(&admin))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["status"], "COMPENSATED");
    assert_eq!(page["items"][0]["steps"][0]["error"], "INSUFFICIENT_STOCK");
    assert_eq!(page["next_cursor"], Value::Null);
    let (status, _) = setup.get("/api/v1/admin/sagas", Some(&shopper)).await;
    assert_eq!(status, 403);
    let (status, _) = setup
        .get("/api/v1/admin/sagas?status=CREATED", Some(&admin))
        .await;
    assert_eq!(status, 422);

    // A point no service has, so parallel tests' services are not disturbed.
    let point = unique_name("tests.gateway");
    let put = |action: &str, token: &str| {
        setup
            .http
            .put(setup.url(&format!("/api/v1/admin/faults/{point}")))
            .bearer_auth(token)
            .json(&json!({"action": action}))
            .send()
    };
    let nats = messaging::Nats::new(messaging::NatsConfig::new(&setup.nats_url, "gateway-test"));
    let bucket = nats.key_value(messaging::FAULTS_BUCKET).await.unwrap();

    let (status, fault) = read(put("error( 0.5 )", &admin).await.unwrap()).await;
    assert_eq!(status, 200, "{fault}");
    assert_eq!(fault, json!({"name": point, "action": "error(0.5)"}));
    let stored = bucket.get(&point).await.unwrap().unwrap();
    assert_eq!(&stored[..], b"error(0.5)");
    // The gateway arms its own points from the bucket, as every service does.
    setup
        .gateway
        .wait_for_line(&["fault point armed", &point], PATIENCE)
        .await;

    let (status, problem) = read(put("explode", &admin).await.unwrap()).await;
    assert_eq!(status, 422);
    assert!(problem["errors"]["action"].is_string(), "{problem}");
    assert_eq!(read(put("abort", &shopper).await.unwrap()).await.0, 403);
    assert_eq!(
        &bucket.get(&point).await.unwrap().unwrap()[..],
        b"error(0.5)"
    );

    let (status, fault) = read(put("off", &admin).await.unwrap()).await;
    assert_eq!((status, fault["action"].as_str()), (200, Some("off")));
    assert_eq!(bucket.get(&point).await.unwrap(), None);

    read(put("delay(20)", &admin).await.unwrap()).await;
    let deleted = setup
        .http
        .delete(setup.url(&format!("/api/v1/admin/faults/{point}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(bucket.get(&point).await.unwrap(), None);
}

#[tokio::test]
async fn fault_flags_answer_503_while_nats_is_down_and_the_rest_is_served() {
    let key = auth::SigningKey::generate().unwrap();
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
    let inventory = FakeInventory::default();
    inventory.add("keyboard", inv::Category::Electronics, 1);
    let inventory_url = serve_grpc(InventoryServiceServer::new(inventory)).await;
    // Nothing listens on port 1.
    let gateway = Spawn::new("gateway")
        .env("USER_URL", &user_url)
        .env("INVENTORY_GRPC_URL", &inventory_url)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .start()
        .await;
    gateway.wait_ready(PATIENCE).await;
    let http = reqwest::Client::new();

    let listed = http
        .get(format!("{}/api/v1/products", gateway.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let admin = key
        .sign(&auth::Claims {
            sub: Uuid::now_v7(),
            roles: vec!["admin".into()],
            iat: now,
            exp: now + 600,
            iss: auth::DEFAULT_ISSUER.into(),
            aud: auth::DEFAULT_AUDIENCE.into(),
            jti: Uuid::now_v7(),
        })
        .unwrap();
    let response = http
        .put(format!(
            "{}/api/v1/admin/faults/payment.charge",
            gateway.http_url()
        ))
        .bearer_auth(admin)
        .json(&json!({"action": "abort"}))
        .send()
        .await
        .unwrap();
    let (status, problem) = read(response).await;
    assert!(matches!(status, 503 | 504), "{status} {problem}");
    assert_eq!(problem["code"], "UPSTREAM_UNAVAILABLE");
}
