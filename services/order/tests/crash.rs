//! Crash-proof orchestration: the order process dies at every step boundary
//! of both sagas (an `abort` fault point — no shutdown, no flush, leases
//! left behind, like `kill -9`), and is killed with SIGKILL in the middle
//! of a burst of orders. Restarted, it finishes every saga; no order is
//! charged twice and the stock adds up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use proto::ferrishop::order::v1 as pb;
use support::{PATIENCE, Shop};
use uuid::Uuid;

/// How long a faulty process may take to reach its fault point.
const TO_THE_FAULT: Duration = Duration::from_secs(60);

/// Replaces the order process with one armed with `point=abort`.
async fn arm(shop: &mut Shop, point: &str) {
    shop.kill_order().await;
    let faults = format!("{point}=abort");
    shop.start_order(&[("FAULTS", faults.as_str())]).await;
}

/// Waits for the armed process to die at its fault point and starts a
/// healthy one.
async fn recover(shop: &mut Shop, point: &str) {
    assert!(
        shop.order_exited(TO_THE_FAULT).await,
        "the order process did not die at {point}"
    );
    shop.start_order(&[]).await;
}

/// Places an order through a process armed at `point`. The process may die
/// before its answer is out (the saga starts the moment the order is
/// committed), so the order is placed again with the same idempotency key
/// once a healthy process is up — as a client would — which must answer
/// with the same order.
async fn place_through_crash(
    shop: &mut Shop,
    point: &str,
    customer: Uuid,
    items: &[(&str, u32)],
) -> String {
    arm(shop, point).await;
    let key = Uuid::now_v7().to_string();
    let first = shop.place(customer, items, &key).await;
    recover(shop, point).await;
    let again = shop
        .place(customer, items, &key)
        .await
        .expect("PlaceOrder after the restart");
    if let Ok(first) = first {
        assert_eq!(first.order_id, again.order_id);
    }
    again.order_id
}

#[tokio::test]
async fn killed_at_every_step_boundary_every_saga_still_finishes_and_nobody_pays_twice() {
    let mut shop = Shop::start().await;
    let item = shop.product(1_000, 100).await;
    let customer = shop.customer().await;
    shop.deposit(customer, 50_000).await;
    let poor = shop.customer().await;

    let mut confirmed = Vec::new();
    for point in [
        "saga.place_order.before_reserve_stock",
        "saga.place_order.before_charge_payment",
        "saga.place_order.before_commit_reservation",
        "saga.place_order.before_complete",
        "order.saga.before_confirm",
    ] {
        let placed = place_through_crash(&mut shop, point, customer, &[(&item, 2)]).await;
        let order = shop
            .wait_for(customer, &placed, pb::OrderStatus::Confirmed, PATIENCE)
            .await;
        assert_eq!(order.failure_reason, "", "after a crash at {point}");
        confirmed.push(placed);
    }

    // Compensation boundaries: the poor customer's order is declined.
    for point in [
        "saga.place_order.before_compensate_reserve_stock",
        "saga.place_order.before_compensated",
    ] {
        let placed = place_through_crash(&mut shop, point, poor, &[(&item, 20)]).await;
        let order = shop
            .wait_for(poor, &placed, pb::OrderStatus::Rejected, PATIENCE)
            .await;
        assert_eq!(
            order.failure_reason, "INSUFFICIENT_FUNDS",
            "after a crash at {point}"
        );
    }

    // Cancellation boundaries.
    for (point, order_id) in [
        "saga.cancel_order.before_refund_payment",
        "saga.cancel_order.before_return_stock",
        "saga.cancel_order.before_complete",
    ]
    .into_iter()
    .zip(confirmed.iter())
    {
        arm(&mut shop, point).await;
        // The answer may be lost with the process; the cancellation was
        // committed before the saga could reach the fault point.
        let accepted = shop.cancel(customer, order_id).await;
        assert!(
            accepted.is_ok()
                || accepted
                    .as_ref()
                    .is_err_and(|status| status.code() == tonic::Code::Unknown),
            "{accepted:?}"
        );
        recover(&mut shop, point).await;
        shop.wait_for(customer, order_id, pb::OrderStatus::Cancelled, PATIENCE)
            .await;
    }

    // The two orders left CONFIRMED and the three CANCELLED: 4 units sold.
    let payments = shop.payments().await;
    for order_id in &confirmed {
        let id: Uuid = order_id.parse().unwrap();
        assert_eq!(payments[&id].0, 1, "order {order_id} charged once");
    }
    assert_eq!(shop.stock(&item).await, (96, 0, 96));
    shop.assert_invariants(&[(&item, 100)]).await;
}

#[tokio::test]
async fn killed_in_the_middle_of_a_burst_every_order_settles() {
    let mut shop = Shop::start().await;
    let item = shop.product(100, 50).await;
    let customers = [shop.customer().await, shop.customer().await];

    let mut orders = Vec::new();
    for round in 0..20 {
        let customer = customers[round % 2];
        orders.push((customer, shop.order(customer, &[(&item, 1)]).await));
    }
    // Some sagas are mid-flight: kill -9, and come back.
    let running = shop
        .sagas()
        .await
        .iter()
        .filter(|saga| saga.status() == pb::SagaStatus::Running)
        .count();
    assert!(running > 0, "every saga finished before the kill");
    shop.kill_order().await;
    shop.start_order(&[]).await;

    for (customer, order_id) in &orders {
        let order = shop
            .wait_for(*customer, order_id, pb::OrderStatus::Confirmed, PATIENCE)
            .await;
        assert_eq!(order.failure_reason, "");
    }
    assert_eq!(shop.stock(&item).await, (30, 0, 30));
    shop.assert_invariants(&[(&item, 50)]).await;
}
