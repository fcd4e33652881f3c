//! The user journey of DESIGN.md through the gateway alone, with all five
//! binaries running: register, log in, browse, quote, deposit, order →
//! CONFIRMED, list, cancel → CANCELLED — over REST (every response body
//! checked against `/api/openapi.json`) and over the public gRPC port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::openapi::OpenApi;
use e2e::stack::{PATIENCE, Session, Stack};
use proto::ferrishop::inventory::v1 as inventory_pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1 as order_pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use proto::ferrishop::payment::v1 as payment_pb;
use proto::ferrishop::payment::v1::payment_service_client::PaymentServiceClient;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use uuid::Uuid;

fn amount(money: &Value) -> i64 {
    assert_eq!(money["currency"], "EUR", "{money}");
    money["amount"]
        .as_i64()
        .unwrap_or_else(|| panic!("no amount: {money}"))
}

async fn balance(session: &Session) -> i64 {
    let wallet = session.api.get("/api/v1/wallet").await;
    assert_eq!(wallet.status, 200, "{wallet}");
    amount(&wallet.body["balance"])
}

#[tokio::test]
async fn rest_journey_from_registration_to_cancellation() {
    let stack = Stack::start().await;
    let api = stack.api();

    // The catalogue: an admin adds a product.
    let admin = stack.admin().await;
    let product = stack.product(&admin, 1_250, 40).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(product["available"], 40, "{product}");

    // Register and log in.
    let email = format!("{}@example.com", testkit::brokers::unique_name("journey"));
    let registered = api
        .post(
            "/api/v1/users",
            &json!({"email": email, "password": e2e::stack::PASSWORD, "name": "Jo Journey"}),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered}");
    assert_eq!(registered.body["email"], email.as_str());
    let again = api
        .post(
            "/api/v1/users",
            &json!({"email": email, "password": e2e::stack::PASSWORD, "name": "Jo Again"}),
        )
        .await;
    again.assert_problem(409, "EMAIL_TAKEN");
    let login = api
        .post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": e2e::stack::PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 200, "{login}");
    assert_eq!(login.body["token_type"], "Bearer");
    let wrong = api
        .post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": "not the password"}),
        )
        .await;
    wrong.assert_problem(401, "INVALID_CREDENTIALS");
    assert_eq!(wrong.header("www-authenticate"), "Bearer", "{wrong}");
    let refreshed = api
        .post(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": login.body["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed}");
    let token = refreshed.body["access_token"].as_str().unwrap().to_owned();
    let customer = Session {
        user_id: registered.body["id"].as_str().unwrap().parse().unwrap(),
        email: email.clone(),
        api: api.with_token(&token),
        token,
    };
    let me = customer.api.get("/api/v1/users/me").await;
    assert_eq!(me.status, 200, "{me}");
    assert_eq!(me.body["id"], customer.user_id.to_string());

    // Browse, anonymously.
    let listed = api.get("/api/v1/products?in_stock=true&limit=10").await;
    assert_eq!(listed.status, 200, "{listed}");
    let items = listed.body["items"].as_array().unwrap();
    assert!(
        items.iter().any(|item| item["id"] == product_id.as_str()),
        "the new product is listed: {listed}"
    );
    let books = api.get("/api/v1/products?category=BOOKS").await;
    assert_eq!(books.status, 200, "{books}");
    let one = api.get(&format!("/api/v1/products/{product_id}")).await;
    assert_eq!(one.status, 200, "{one}");
    assert_eq!(one.body["available"], 40, "{one}");
    let missing = api
        .get(&format!("/api/v1/products/{}", Uuid::now_v7()))
        .await;
    missing.assert_not_found();
    let quote = api
        .get(&format!(
            "/api/v1/products/{product_id}/quote?quantity=2&tax_rate=0.2"
        ))
        .await;
    assert_eq!(quote.status, 200, "{quote}");
    assert_eq!(amount(&quote.body["subtotal"]), 2_500, "{quote}");
    assert_eq!(
        amount(&quote.body["total"]),
        amount(&quote.body["subtotal"]) - amount(&quote.body["discount"])
            + amount(&quote.body["tax"]),
        "{quote}"
    );
    let bad_quote = api
        .get(&format!("/api/v1/products/{product_id}/quote?quantity=0"))
        .await;
    bad_quote.assert_problem(422, "VALIDATION_FAILED");
    assert!(
        bad_quote.body["errors"]["quantity"].is_string(),
        "{bad_quote}"
    );

    // Top up the wallet (opened when the payment service saw the user).
    let wallet = stack.wallet(&customer).await;
    let opening = amount(&wallet["balance"]);
    let deposit_key = Uuid::now_v7().to_string();
    let deposit = customer
        .api
        .post_idempotent(
            "/api/v1/wallet/deposits",
            &json!({"amount": {"amount": 5_000, "currency": "EUR"}}),
            &deposit_key,
        )
        .await;
    assert_eq!(deposit.status, 201, "{deposit}");
    let repeated = customer
        .api
        .post_idempotent(
            "/api/v1/wallet/deposits",
            &json!({"amount": {"amount": 5_000, "currency": "EUR"}}),
            &deposit_key,
        )
        .await;
    assert_eq!(repeated.status, 201, "a repeated deposit: {repeated}");
    assert_eq!(repeated.header("idempotent-replayed"), "true", "{repeated}");
    assert_eq!(repeated.body, deposit.body, "the first answer, replayed");
    assert_eq!(balance(&customer).await, opening + 5_000, "deposited once");

    // Order three, read it back at once, and wait for the saga.
    let order_key = Uuid::now_v7().to_string();
    let body = json!({"items": [{"product_id": product_id, "quantity": 3}]});
    let placed = customer
        .api
        .post_idempotent("/api/v1/orders", &body, &order_key)
        .await;
    assert_eq!(placed.status, 202, "{placed}");
    assert_eq!(placed.body["status"], "PENDING", "{placed}");
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        placed.header("location"),
        format!("/api/v1/orders/{order_id}")
    );
    let read_back = customer
        .api
        .get(&format!("/api/v1/orders/{order_id}"))
        .await;
    assert_eq!(read_back.status, 200, "read-your-writes: {read_back}");
    let same = customer
        .api
        .post_idempotent("/api/v1/orders", &body, &order_key)
        .await;
    assert_eq!(same.status, 202, "{same}");
    assert_eq!(same.body["id"], order_id.as_str(), "one order per key");
    let no_key = customer.api.post("/api/v1/orders", &body).await;
    assert_eq!(
        no_key.status, 422,
        "an order needs an Idempotency-Key: {no_key}"
    );

    let confirmed = stack
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;
    let total = amount(&confirmed["total"]);
    assert_eq!(total, 3 * 1_250, "the sum of the line totals: {confirmed}");
    assert_eq!(confirmed["items"][0]["quantity"], 3, "{confirmed}");
    assert_eq!(confirmed["customer_id"], customer.user_id.to_string());
    assert_eq!(
        balance(&customer).await,
        opening + 5_000 - total,
        "charged once"
    );
    let stock = api.get(&format!("/api/v1/products/{product_id}")).await;
    assert_eq!(stock.body["available"], 37, "{stock}");

    let mine = customer.api.get("/api/v1/orders").await;
    assert_eq!(mine.status, 200, "{mine}");
    assert_eq!(mine.body["items"][0]["id"], order_id.as_str(), "{mine}");
    let transactions = customer.api.get("/api/v1/wallet/transactions").await;
    assert_eq!(transactions.status, 200, "{transactions}");

    // Someone else sees nothing of it, and cannot cancel it.
    let stranger = stack.customer().await;
    let theirs = stranger
        .api
        .get(&format!("/api/v1/orders/{order_id}"))
        .await;
    theirs.assert_not_found();
    let cancel_theirs = stranger
        .api
        .post(&format!("/api/v1/orders/{order_id}/cancel"), &json!({}))
        .await;
    cancel_theirs.assert_not_found();
    let their_list = stranger.api.get("/api/v1/orders").await;
    assert_eq!(their_list.body["items"], json!([]), "{their_list}");
    // The admin may look.
    let as_admin = admin.api.get(&format!("/api/v1/orders/{order_id}")).await;
    assert_eq!(as_admin.status, 200, "{as_admin}");
    let sagas = admin.api.get("/api/v1/admin/sagas").await;
    assert_eq!(sagas.status, 200, "{sagas}");
    let sagas_as_customer = customer.api.get("/api/v1/admin/sagas").await;
    sagas_as_customer.assert_problem(403, "FORBIDDEN");
    let create_as_customer = customer
        .api
        .post("/api/v1/products", &json!({"sku": "NOPE"}))
        .await;
    create_as_customer.assert_problem(403, "FORBIDDEN");

    // Cancel: refunded, stock back.
    let cancelled = customer
        .api
        .post(&format!("/api/v1/orders/{order_id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 202, "{cancelled}");
    stack
        .wait_for_order(&customer, &order_id, "CANCELLED")
        .await;
    let deadline = Instant::now() + PATIENCE;
    while balance(&customer).await != opening + 5_000 {
        assert!(Instant::now() < deadline, "never refunded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stock = api.get(&format!("/api/v1/products/{product_id}")).await;
    assert_eq!(stock.body["available"], 40, "{stock}");
    let twice = customer
        .api
        .post(&format!("/api/v1/orders/{order_id}/cancel"), &json!({}))
        .await;
    assert_eq!(
        twice.status, 409,
        "a CANCELLED order cannot be cancelled: {twice}"
    );
    assert_eq!(twice.content_type(), "application/problem+json", "{twice}");
    let cancelled_list = customer.api.get("/api/v1/orders?status=CANCELLED").await;
    assert_eq!(
        cancelled_list.body["items"][0]["id"],
        order_id.as_str(),
        "{cancelled_list}"
    );
    let confirmed_list = customer.api.get("/api/v1/orders?status=CONFIRMED").await;
    assert_eq!(confirmed_list.body["items"], json!([]), "{confirmed_list}");

    // An order beyond the stock is refused by the saga.
    let too_many = customer
        .api
        .post_idempotent(
            "/api/v1/orders",
            &json!({"items": [{"product_id": product_id, "quantity": 41}]}),
            &Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(too_many.status, 202, "{too_many}");
    let rejected = stack
        .wait_for_order(&customer, too_many.body["id"].as_str().unwrap(), "REJECTED")
        .await;
    assert_eq!(
        rejected["failure_reason"], "INSUFFICIENT_STOCK",
        "{rejected}"
    );

    // Every answer above matches the published contract.
    let document = api.get("/api/openapi.json").await;
    assert_eq!(document.status, 200, "{}", document.status);
    let openapi = OpenApi::new(document.body.clone());
    let exchanges: Vec<_> = stack
        .recorder
        .exchanges()
        .into_iter()
        .filter(|exchange| exchange.path != "/api/openapi.json")
        .collect();
    assert!(exchanges.len() > 40, "{} exchanges", exchanges.len());
    openapi.assert_all(&exchanges);
    assert_documents_every_route(&openapi);
}

/// The document lists every route of DESIGN.md's table.
fn assert_documents_every_route(openapi: &OpenApi) {
    for (method, path) in [
        ("post", "/api/v1/users"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("get", "/api/v1/users/me"),
        ("get", "/api/v1/products"),
        ("post", "/api/v1/products"),
        ("get", "/api/v1/products/{id}"),
        ("get", "/api/v1/products/{id}/quote"),
        ("post", "/api/v1/products/{id}/restock"),
        ("get", "/api/v1/wallet"),
        ("post", "/api/v1/wallet/deposits"),
        ("get", "/api/v1/wallet/transactions"),
        ("post", "/api/v1/orders"),
        ("get", "/api/v1/orders"),
        ("get", "/api/v1/orders/{id}"),
        ("post", "/api/v1/orders/{id}/cancel"),
        ("get", "/api/v1/orders/{id}/events"),
        ("get", "/api/v1/admin/sagas"),
        ("put", "/api/v1/admin/faults/{name}"),
    ] {
        let concrete = path.replace("{id}", "x").replace("{name}", "x");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        assert!(
            openapi.operation(&method, &concrete).is_some(),
            "{method} {path} is missing from /api/openapi.json"
        );
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

#[tokio::test]
async fn grpc_journey_through_the_public_port() {
    let stack = Stack::start().await;
    let grpc = stack.gateway_grpc_url();

    let services = testkit::grpc::reflected_services(&grpc).await;
    for service in [
        "ferrishop.inventory.v1.InventoryService",
        "ferrishop.order.v1.OrderService",
        "ferrishop.payment.v1.PaymentService",
        "ferrishop.user.v1.UserService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|listed| listed == service),
            "reflection lists {service}: {services:?}"
        );
    }

    let admin = stack.admin().await;
    let product = stack.product(&admin, 900, 10).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let customer = stack.customer().await;
    stack.wallet(&customer).await;

    let channel = testkit::grpc::channel(&grpc).await;
    let mut catalogue = InventoryServiceClient::new(channel.clone());
    let mut orders = OrderServiceClient::new(channel.clone());
    let mut payments = PaymentServiceClient::new(channel);

    // The catalogue reads need no token.
    let got = catalogue
        .get_product(inventory_pb::GetProductRequest {
            product_id: product_id.clone(),
        })
        .await
        .expect("GetProduct, anonymous")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(got.available, 10);
    let mut listed = catalogue
        .list_products(inventory_pb::ListProductsRequest::default())
        .await
        .expect("ListProducts")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = listed.message().await.expect("ListProducts stream") {
        seen.push(format!("{message:?}"));
    }
    assert!(
        seen.iter().any(|message| message.contains(&product_id)),
        "the stream lists the product: {seen:?}"
    );

    // Ordering needs one.
    let request = order_pb::PlaceOrderRequest {
        items: vec![order_pb::OrderItem {
            product_id: product_id.clone(),
            quantity: 2,
        }],
        idempotency_key: Uuid::now_v7().to_string(),
    };
    let anonymous = orders.place_order(request.clone()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let forged = orders
        .place_order(with_token(request.clone(), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");

    let placed = orders
        .place_order(with_token(request.clone(), &customer.token))
        .await
        .expect("PlaceOrder through the gateway")
        .into_inner();
    let order_id = placed.order_id.clone();
    let repeated = orders
        .place_order(with_token(request, &customer.token))
        .await
        .expect("PlaceOrder again")
        .into_inner();
    assert_eq!(repeated.order_id, order_id, "one order per idempotency key");

    let deadline = Instant::now() + PATIENCE;
    let order = loop {
        let order = orders
            .get_order(with_token(
                order_pb::GetOrderRequest {
                    order_id: order_id.clone(),
                    consistency_token: String::new(),
                },
                &customer.token,
            ))
            .await
            .expect("GetOrder")
            .into_inner()
            .order
            .unwrap();
        if order.status() == order_pb::OrderStatus::Confirmed {
            break order;
        }
        assert!(Instant::now() < deadline, "not confirmed: {order:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(order.customer_id, customer.user_id.to_string());

    // The same order over REST: one system behind both doors.
    let rest = stack
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;
    assert_eq!(rest["id"], order_id.as_str());

    // Another user's order does not exist for them.
    let stranger = stack.customer().await;
    let hidden = orders
        .get_order(with_token(
            order_pb::GetOrderRequest {
                order_id: order_id.clone(),
                consistency_token: String::new(),
            },
            &stranger.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");

    // Identity comes from the token, never from client metadata.
    let mut spoofed = with_token(
        order_pb::GetOrderRequest {
            order_id: order_id.clone(),
            consistency_token: String::new(),
        },
        &stranger.token,
    );
    spoofed.metadata_mut().insert(
        "x-user-id",
        MetadataValue::try_from(customer.user_id.to_string()).unwrap(),
    );
    let spoofed = orders.get_order(spoofed).await.unwrap_err();
    assert_eq!(spoofed.code(), Code::NotFound, "{spoofed:?}");

    // Internal methods stay internal.
    let reserve = catalogue
        .reserve_stock(with_token(
            inventory_pb::ReserveStockRequest::default(),
            &admin.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reserve.code(), Code::PermissionDenied, "{reserve:?}");

    // The wallet, charged for the order.
    let account = payments
        .get_account(with_token(
            payment_pb::GetAccountRequest::default(),
            &customer.token,
        ))
        .await
        .expect("GetAccount through the gateway")
        .into_inner();
    let balance = account.account.unwrap().balance.unwrap();
    let rest_wallet = customer.api.get("/api/v1/wallet").await;
    assert_eq!(
        balance.amount,
        amount(&rest_wallet.body["balance"]),
        "gRPC and REST agree on the balance: {rest_wallet}"
    );
}
