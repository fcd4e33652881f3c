//! `GET /api/v1/me/dashboard` against the real gateway binary, with the
//! user and order services played by the test and payment stopped (nothing
//! listens at its address): the wallet is `null` with an error entry, the
//! profile and the orders are served, with 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use proto::ferrishop::order::v1 as pb;
use serde_json::Value;
use support::Setup;
use testkit::brokers::nats;
use uuid::Uuid;

#[tokio::test]
async fn a_stopped_payment_service_leaves_the_wallet_null_and_the_rest_served() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let payment_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let setup = Setup::start_with(&nats().await, &[("PAYMENT_URL", payment_url.as_str())]).await;
    let user = Uuid::now_v7();
    let orders: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        setup.orders.put(*order, user, pb::OrderStatus::Confirmed);
    }
    setup
        .orders
        .put(Uuid::now_v7(), Uuid::now_v7(), pb::OrderStatus::Pending);

    let response = setup
        .http
        .get(format!("{}/api/v1/me/dashboard", setup.gateway.http_url()))
        .bearer_auth(setup.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dashboard: Value = response.json().await.unwrap();

    assert_eq!(dashboard["profile"]["id"], user.to_string());
    assert_eq!(dashboard["wallet"], Value::Null);
    let shown: Vec<&str> = dashboard["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["id"].as_str().unwrap())
        .collect();
    let newest: Vec<String> = orders.iter().rev().take(5).map(Uuid::to_string).collect();
    assert_eq!(shown, newest, "the 5 newest of the caller's orders");

    let errors = dashboard["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["part"], "wallet");
    assert_eq!(errors[0]["code"], "UPSTREAM_UNAVAILABLE");
    let status = errors[0]["status"].as_u64().unwrap();
    assert!((500..600).contains(&status), "{status}");
    assert!(errors[0]["detail"].is_string());

    // The answer is what the gateway's own OpenAPI document says it is.
    let document: Value = setup
        .http
        .get(format!("{}/api/openapi.json", setup.gateway.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &document["components"]["schemas"];
    let mut schema = schemas["Dashboard"].clone();
    schema["components"] = serde_json::json!({"schemas": schemas});
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&dashboard)
        .map(|error| format!("{}: {error}", error.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn the_dashboard_needs_a_caller() {
    let setup = Setup::start().await;
    let response = setup
        .http
        .get(format!("{}/api/v1/me/dashboard", setup.gateway.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
