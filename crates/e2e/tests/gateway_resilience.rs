//! The gateway when a service is down: the routes of a stopped service
//! fail fast with 503 `UPSTREAM_UNAVAILABLE` once its circuit breaker is
//! open, everything else keeps working, and the breaker closes again after
//! the service is back (half-open trials); the dashboard serves what it can.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::api::Reply;
use e2e::stack::{PATIENCE, Service, Stack};
use serde_json::json;

/// The breaker's open period in these tests (30 s by default).
const OPEN_FOR: Duration = Duration::from_secs(3);

/// The 10th call after the upstream went away must take less than this.
const FAIL_FAST: Duration = Duration::from_millis(50);

/// `ferrishop_circuit_breaker_state` of `upstream` (the largest over its
/// instances): 0 closed, 1 open, 2 half-open.
async fn breaker_state(stack: &Stack, upstream: &str) -> Option<f64> {
    let metrics = stack.metrics(Service::Gateway).await;
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("ferrishop_circuit_breaker_state{")
                && line.contains(&format!("upstream=\"{upstream}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

/// A stack whose gateway keeps an open breaker open for [`OPEN_FOR`].
async fn breaker_stack() -> Stack {
    Stack::builder()
        .env(
            Service::Gateway,
            "BREAKER_OPEN_DURATION",
            format!("{}s", OPEN_FOR.as_secs()),
        )
        .start()
        .await
}

#[tokio::test]
async fn a_stopped_inventory_fails_fast_behind_an_open_breaker_and_recovers() {
    let mut stack = breaker_stack().await;
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    let product = stack.product(&admin, 500, 5).await;
    let path = format!("/api/v1/products/{}", product["id"].as_str().unwrap());
    let api = stack.api();
    assert_eq!(api.get(&path).await.status, 200);
    assert_eq!(breaker_state(&stack, "inventory").await, Some(0.0));

    stack.stop(Service::Inventory).await;

    let mut calls: Vec<Reply> = Vec::new();
    for _ in 0..10 {
        calls.push(api.get(&path).await);
    }
    let timings: Vec<String> = calls
        .iter()
        .map(|reply| format!("{} in {:?}", reply.status, reply.elapsed))
        .collect();
    eprintln!("catalogue calls with inventory stopped: {timings:?}");
    for reply in &calls {
        assert!(
            matches!(reply.status, 502..=504),
            "every call fails as an upstream failure: {reply}"
        );
        assert_eq!(reply.content_type(), "application/problem+json", "{reply}");
        assert_eq!(reply.body["code"], "UPSTREAM_UNAVAILABLE", "{reply}");
    }
    let tenth = &calls[9];
    assert_eq!(tenth.status, 503, "the breaker is open: {tenth}");
    assert!(
        tenth.elapsed < FAIL_FAST,
        "the 10th call took {:?} (limit {FAIL_FAST:?}): {timings:?}",
        tenth.elapsed
    );
    assert_eq!(breaker_state(&stack, "inventory").await, Some(1.0));
    let listing = api.get("/api/v1/products").await;
    listing.assert_problem(503, "UPSTREAM_UNAVAILABLE");
    assert!(listing.elapsed < FAIL_FAST, "{:?}", listing.elapsed);

    // The other services' routes are not affected.
    let me = customer.api.get("/api/v1/users/me").await;
    assert_eq!(me.status, 200, "{me}");
    let orders = customer.api.get("/api/v1/orders").await;
    assert_eq!(orders.status, 200, "{orders}");

    // Back on the same address: after the open period, trial calls close
    // the breaker again.
    stack.start_again(Service::Inventory).await;
    let back = Instant::now();
    let recovered = loop {
        let reply = api.get(&path).await;
        if reply.status == 200 {
            break reply;
        }
        assert_eq!(reply.body["code"], "UPSTREAM_UNAVAILABLE", "{reply}");
        assert!(
            back.elapsed() < OPEN_FOR + PATIENCE,
            "the catalogue never recovered: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("recovered {:?} after the restart", back.elapsed());
    assert_eq!(recovered.body["available"], 5, "{recovered}");
    // Trial successes close the breaker.
    for _ in 0..3 {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, 200, "{reply}");
    }
    assert_eq!(breaker_state(&stack, "inventory").await, Some(0.0));
    let listing = api.get("/api/v1/products").await;
    assert_eq!(listing.status, 200, "{listing}");

    // And the order saga, which needs inventory too, works again.
    stack.wallet(&customer).await;
    let placed = customer
        .api
        .post_idempotent(
            "/api/v1/orders",
            &json!({"items": [{"product_id": product["id"], "quantity": 1}]}),
            &uuid::Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(placed.status, 202, "{placed}");
    stack
        .wait_for_order(&customer, placed.body["id"].as_str().unwrap(), "CONFIRMED")
        .await;
}

#[tokio::test]
async fn the_dashboard_serves_what_it_can_while_payment_is_down() {
    let mut stack = breaker_stack().await;
    let customer = stack.customer().await;
    stack.wallet(&customer).await;

    let whole = customer.api.get("/api/v1/me/dashboard").await;
    assert_eq!(whole.status, 200, "{whole}");
    assert_eq!(
        whole.body["profile"]["email"],
        customer.email.as_str(),
        "{whole}"
    );
    assert!(whole.body["wallet"]["balance"].is_object(), "{whole}");
    assert!(whole.body["orders"].is_array(), "{whole}");
    assert!(
        whole.body["errors"].as_array().is_none_or(Vec::is_empty),
        "{whole}"
    );

    stack.stop(Service::Payment).await;
    let partial = customer.api.get("/api/v1/me/dashboard").await;
    assert_eq!(partial.status, 200, "{partial}");
    assert!(partial.body["wallet"].is_null(), "wallet: null: {partial}");
    assert_eq!(
        partial.body["profile"]["email"],
        customer.email.as_str(),
        "{partial}"
    );
    assert!(partial.body["orders"].is_array(), "{partial}");
    let errors = partial.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{partial}");
    assert_eq!(errors[0]["part"], "wallet", "{partial}");
    assert_eq!(errors[0]["code"], "UPSTREAM_UNAVAILABLE", "{partial}");
    assert!(
        errors[0]["status"].as_u64().is_some_and(|s| s >= 500),
        "{partial}"
    );

    // The wallet's own route says the same, as a problem.
    let wallet = customer.api.get("/api/v1/wallet").await;
    assert!(wallet.status >= 500, "{wallet}");
    assert_eq!(wallet.body["code"], "UPSTREAM_UNAVAILABLE", "{wallet}");

    stack.start_again(Service::Payment).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let again = customer.api.get("/api/v1/me/dashboard").await;
        if again.body["wallet"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wallet never came back: {again}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
