//! `GET /api/v1/orders/{id}/events` through the whole stack: the order
//! service announces each status on NATS, the gateway turns them into
//! Server-Sent Events for the order's owner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::api::{EventStream, Exchange};
use e2e::openapi::OpenApi;
use e2e::stack::{PATIENCE, Service, Session, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long the saga waits before confirming, so a client connecting right
/// after the 202 sees the order PENDING first.
const CONFIRM_DELAY: Duration = Duration::from_millis(1_500);

async fn place(customer: &Session, product: &Value, quantity: u32) -> String {
    let placed = customer
        .api
        .post_idempotent(
            "/api/v1/orders",
            &json!({"items": [{"product_id": product["id"], "quantity": quantity}]}),
            &Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(placed.status, 202, "{placed}");
    placed.body["id"].as_str().unwrap().to_owned()
}

/// A customer with a funded wallet who ordered one of a product in stock
/// (three of it, at 7.00): the customer, the product and the order's id.
async fn a_customer_with_an_order(stack: &Stack) -> (Session, Value, String) {
    let admin = stack.admin().await;
    let product = stack.product(&admin, 700, 3).await;
    let customer = stack.customer().await;
    stack.wallet(&customer).await;
    let order = place(&customer, &product, 1).await;
    (customer, product, order)
}

fn statuses(stream: &EventStream) -> Vec<String> {
    stream
        .events
        .iter()
        .map(|event| event.data["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn the_owner_sees_pending_then_confirmed_and_the_stream_ends() {
    let stack = Stack::builder()
        .delay_confirmation(CONFIRM_DELAY)
        .start()
        .await;
    let (customer, product, order) = a_customer_with_an_order(&stack).await;
    let path = format!("/api/v1/orders/{order}/events");
    let stream = customer.api.follow(&path, PATIENCE, |_| false).await;
    assert_eq!(stream.status, 200, "{stream:?}");
    assert_eq!(stream.content_type, "text/event-stream");
    assert_eq!(statuses(&stream), ["PENDING", "CONFIRMED"], "{stream:?}");
    assert!(stream.ended, "the stream ends after CONFIRMED: {stream:?}");
    for event in &stream.events {
        assert_eq!(event.event, "status", "{event:?}");
        assert_eq!(event.data["id"], order.as_str(), "{event:?}");
    }
    let confirmed_at = stream.events[1].at;
    assert!(
        confirmed_at >= CONFIRM_DELAY / 2,
        "CONFIRMED came as it happened, not with the first read: {confirmed_at:?}"
    );

    // The events are documented as OrderStatusEvent.
    let openapi = OpenApi::new(stack.api().get("/api/openapi.json").await.body);
    let exchanges: Vec<Exchange> = stream
        .events
        .iter()
        .map(|event| Exchange {
            method: Method::GET,
            path: path.clone(),
            status: 200,
            content_type: "text/event-stream".into(),
            body: event.data.clone(),
        })
        .collect();
    openapi.assert_all(&exchanges);

    // A settled order: its status at once, then the end.
    let again = customer.api.follow(&path, PATIENCE, |_| false).await;
    assert_eq!(statuses(&again), ["CONFIRMED"], "{again:?}");
    assert!(again.ended);

    // A rejected one ends with its reason.
    let too_many = place(&customer, &product, 99).await;
    let rejected = customer
        .api
        .follow(
            &format!("/api/v1/orders/{too_many}/events"),
            PATIENCE,
            |_| false,
        )
        .await;
    let seen = statuses(&rejected);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("REJECTED"),
        "{rejected:?}"
    );
    assert!(seen.len() <= 2, "{seen:?}");
    assert_eq!(
        rejected.events.last().unwrap().data["failure_reason"],
        "INSUFFICIENT_STOCK"
    );
    assert!(rejected.ended);
}

#[tokio::test]
async fn only_the_owner_may_follow_an_order() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let product = stack.product(&admin, 700, 3).await;
    let customer = stack.customer().await;
    stack.wallet(&customer).await;
    let order = place(&customer, &product, 1).await;
    let path = format!("/api/v1/orders/{order}/events");

    let stranger = stack.customer().await;
    let theirs = stranger.api.follow(&path, PATIENCE, |_| false).await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    assert_eq!(theirs.content_type, "application/problem+json");
    assert!(
        theirs.body["code"]
            .as_str()
            .is_some_and(|code| code.ends_with("NOT_FOUND")),
        "{theirs:?}"
    );

    let anonymous = stack.api().follow(&path, PATIENCE, |_| false).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.content_type, "application/problem+json");

    let unknown = customer
        .api
        .follow(
            &format!("/api/v1/orders/{}/events", Uuid::now_v7()),
            PATIENCE,
            |_| false,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    let wildcard = customer
        .api
        .follow("/api/v1/orders/%3E/events", PATIENCE, |_| false)
        .await;
    assert!(
        matches!(wildcard.status, 404 | 422),
        "a NATS wildcard is not an order id: {wildcard:?}"
    );

    // The owner's stream works meanwhile.
    let mine = customer
        .api
        .follow(&path, PATIENCE, |event| event.data["status"] == "CONFIRMED")
        .await;
    assert_eq!(
        statuses(&mine).last().map(String::as_str),
        Some("CONFIRMED"),
        "{mine:?}"
    );
}

/// The order service's read models lag (each projection batch is held open
/// for a second): a stream opened just after the order settled starts from
/// the settled status the stored notification announced, not from the stale
/// PENDING of the read model.
#[tokio::test]
async fn a_stream_opened_after_the_order_settled_starts_from_the_settled_status() {
    let stack = Stack::builder()
        .env(
            Service::Order,
            "FAULTS",
            "eventstore.projection.before_checkpoint=delay(1000)",
        )
        .start()
        .await;
    let (customer, _, order) = a_customer_with_an_order(&stack).await;
    let path = format!("/api/v1/orders/{order}/events");
    let settled = customer.api.follow(&path, PATIENCE, |_| false).await;
    assert_eq!(
        statuses(&settled).last().map(String::as_str),
        Some("CONFIRMED"),
        "{settled:?}"
    );
    let again = customer.api.follow(&path, PATIENCE, |_| false).await;
    assert_eq!(statuses(&again), ["CONFIRMED"], "{again:?}");
    assert!(again.ended, "{again:?}");
}
