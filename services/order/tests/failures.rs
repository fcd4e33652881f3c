//! The payment participant going away: commands are sent again with the same
//! command id while it is down, the order completes if it comes back in
//! time, and the charge is compensated (refunded) if it does not — with
//! money and stock consistent either way, even when the refund overtakes
//! the charge it compensates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use proto::ferrishop::order::v1 as pb;
use support::{PATIENCE, Shop, WELCOME_CREDIT};
use uuid::Uuid;

/// Waits until the admin listing shows the order's placement saga in a
/// state `accept` likes; returns it.
async fn wait_for_saga(
    shop: &Shop,
    order_id: &str,
    accept: impl Fn(&pb::Saga) -> bool,
) -> pb::Saga {
    wait_for_saga_of_type(shop, order_id, "place_order", accept).await
}

/// [`wait_for_saga`] for the order's saga of `saga_type`.
async fn wait_for_saga_of_type(
    shop: &Shop,
    order_id: &str,
    saga_type: &str,
    accept: impl Fn(&pb::Saga) -> bool,
) -> pb::Saga {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let saga = shop
            .sagas()
            .await
            .into_iter()
            .find(|saga| saga.order_id == order_id && saga.saga_type == saga_type);
        if let Some(saga) = saga
            && accept(&saga)
        {
            return saga;
        }
        assert!(
            Instant::now() < deadline,
            "saga of {order_id} never got there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn charge_step(saga: &pb::Saga) -> &pb::SagaStep {
    saga.steps
        .iter()
        .find(|step| step.name == "charge_payment")
        .expect("a charge_payment step")
}

#[tokio::test]
async fn a_payment_service_back_within_the_retry_window_completes_the_order() {
    let mut shop =
        Shop::start_with(&[("PAYMENT_REPLY_TIMEOUT", "2s"), ("PAYMENT_ATTEMPTS", "8")]).await;
    let item = shop.product(1_500, 10).await;
    let customer = shop.customer().await;
    shop.stop_payment().await;

    let order_id = shop.order(customer, &[(&item, 2)]).await;
    // Longer than the step timeout: the command is sent again.
    let retried = wait_for_saga(&shop, &order_id, |saga| charge_step(saga).attempts >= 2).await;
    assert_eq!(retried.status(), pb::SagaStatus::Running);
    assert_eq!(
        shop.get(customer, &order_id).await.unwrap().status(),
        pb::OrderStatus::Pending
    );

    shop.start_payment().await;
    shop.wait_for(customer, &order_id, pb::OrderStatus::Confirmed, PATIENCE)
        .await;
    let id: Uuid = order_id.parse().unwrap();
    assert_eq!(shop.payments().await[&id], (1, 3_000, 0), "charged once");
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT - 3_000);
    shop.assert_invariants(&[(&item, 10)]).await;
}

#[tokio::test]
async fn a_payment_service_down_past_the_retry_window_gets_the_order_compensated() {
    let mut shop =
        Shop::start_with(&[("PAYMENT_REPLY_TIMEOUT", "2s"), ("PAYMENT_ATTEMPTS", "2")]).await;
    let item = shop.product(1_500, 10).await;
    let customer = shop.customer().await;
    shop.stop_payment().await;

    let order_id = shop.order(customer, &[(&item, 2)]).await;
    let compensating = wait_for_saga(&shop, &order_id, |saga| {
        saga.status() == pb::SagaStatus::Compensating
    })
    .await;
    assert_eq!(
        charge_step(&compensating).status(),
        pb::SagaStepStatus::Failed
    );
    // The stock stays reserved until the charge is known to be undone.
    assert_eq!(shop.stock(&item).await, (10, 2, 8));

    // The queued charges and the refund reach the payment service when it
    // is back: whatever was charged is refunded.
    shop.start_payment().await;
    let rejected = shop
        .wait_for(customer, &order_id, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    assert_eq!(rejected.failure_reason, "PAYMENT_TIMEOUT");
    let compensated = wait_for_saga(&shop, &order_id, |saga| {
        saga.status() == pb::SagaStatus::Compensated
    })
    .await;
    assert_eq!(compensated.failure_reason, "PAYMENT_TIMEOUT");
    assert_eq!(shop.stock(&item).await, (10, 0, 10));
    // Give a late duplicate charge command the chance to show up: none may.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT);
    shop.assert_invariants(&[(&item, 10)]).await;
}

#[tokio::test]
async fn a_charge_slower_than_its_step_is_voided_by_the_refund_that_overtakes_it() {
    let mut shop =
        Shop::start_with(&[("PAYMENT_REPLY_TIMEOUT", "1s"), ("PAYMENT_ATTEMPTS", "1")]).await;
    shop.stop_payment().await;
    // Every charge sits in the payment service for 4 s, past the step's
    // only attempt; the refund that compensates it is not delayed.
    shop.start_payment_with(&[("FAULTS", "payment.charge=delay(4000)")])
        .await;
    let item = shop.product(1_500, 10).await;
    let customer = shop.customer().await;

    let order_id = shop.order(customer, &[(&item, 2)]).await;
    let rejected = shop
        .wait_for(customer, &order_id, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    assert_eq!(rejected.failure_reason, "PAYMENT_TIMEOUT");

    // The charge comes out of its delay after the refund voided the order.
    let deadline = Instant::now() + PATIENCE;
    let events = loop {
        let events = shop.wallet_events_of(&order_id).await;
        if events.len() >= 2 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        events,
        ["OrderVoided", "ChargeDeclined:ORDER_VOIDED"],
        "the refund voids the order, the late charge is declined"
    );
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT);
    assert_eq!(shop.stock(&item).await, (10, 0, 10));
    shop.assert_invariants(&[(&item, 10)]).await;
}

#[tokio::test]
async fn a_cancellation_waits_out_a_payment_outage_and_refunds_once() {
    let mut shop =
        Shop::start_with(&[("PAYMENT_REPLY_TIMEOUT", "2s"), ("PAYMENT_ATTEMPTS", "2")]).await;
    let item = shop.product(700, 10).await;
    let customer = shop.customer().await;
    let order_id = shop.order(customer, &[(&item, 3)]).await;
    shop.wait_for(customer, &order_id, pb::OrderStatus::Confirmed, PATIENCE)
        .await;

    shop.stop_payment().await;
    shop.cancel(customer, &order_id)
        .await
        .expect("cancel accepted");
    // Longer than the placement's whole retry window (2 × 2 s): a
    // cancellation does not give up while payment is silent.
    let refunding = wait_for_saga_of_type(&shop, &order_id, "cancel_order", |saga| {
        saga.steps
            .iter()
            .any(|step| step.name == "refund_payment" && step.attempts >= 3)
    })
    .await;
    assert_eq!(refunding.status(), pb::SagaStatus::Running);
    assert_eq!(
        shop.get(customer, &order_id).await.unwrap().status(),
        pb::OrderStatus::Confirmed,
        "still confirmed while the refund is unanswered"
    );

    shop.start_payment().await;
    shop.wait_for(customer, &order_id, pb::OrderStatus::Cancelled, PATIENCE)
        .await;
    let id: Uuid = order_id.parse().unwrap();
    assert_eq!(
        shop.payments().await[&id],
        (1, 2_100, 2_100),
        "charged once, refunded once"
    );
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT);
    shop.assert_invariants(&[(&item, 10)]).await;
}
