//! Two hundred orders placed at once by twenty customers over five
//! products, some of which run out: every order reaches a final status
//! (within a bound far above what it takes), and the money and stock
//! invariants of DESIGN.md hold exactly — charges minus refunds equal the
//! CONFIRMED totals, nobody is charged twice, on_hand = available +
//! reserved, nothing is oversold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::Shop;
use uuid::Uuid;

const CUSTOMERS: usize = 20;
const ORDERS_PER_CUSTOMER: usize = 10;
const PRODUCTS: [(i64, u32); 5] = [(100, 400), (250, 400), (399, 60), (1_000, 40), (5, 400)];

/// A tiny deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[tokio::test]
async fn two_hundred_concurrent_orders_settle_within_a_minute_with_exact_invariants() {
    let shop = Shop::start_with(&[("PAYMENT_REPLY_TIMEOUT", "10s")]).await;
    let mut products = Vec::new();
    for (price, stock) in PRODUCTS {
        products.push((shop.product(price, stock).await, stock));
    }
    let customers = futures::future::join_all((0..CUSTOMERS).map(|_| shop.customer())).await;
    for customer in &customers {
        shop.deposit(*customer, 20_000).await;
    }

    let mut random = Lcg(0x5eed);
    let mut requests = Vec::new();
    for customer in &customers {
        for _ in 0..ORDERS_PER_CUSTOMER {
            let lines: Vec<(usize, u32)> = (0..1 + random.below(3))
                .map(|_| (random.below(products.len()), 1 + random.below(3) as u32))
                .collect();
            requests.push((*customer, lines));
        }
    }

    let started = Instant::now();
    let placed = futures::future::join_all(requests.iter().map(|(customer, lines)| {
        let items: Vec<(&str, u32)> = lines
            .iter()
            .map(|(product, quantity)| (products[*product].0.as_str(), *quantity))
            .collect();
        let shop = &shop;
        async move {
            shop.place(*customer, &items, &Uuid::now_v7().to_string())
                .await
                .expect("PlaceOrder")
                .order_id
        }
    }))
    .await;
    let placing = started.elapsed();
    assert_eq!(placed.len(), CUSTOMERS * ORDERS_PER_CUSTOMER);

    // A liveness bound, not a speed figure (loadgen measures speed).
    let deadline = started + Duration::from_secs(180);
    let settled = loop {
        let rows = shop
            .rows(
                "SELECT count(*) FILTER (WHERE status <> 'PENDING') AS settled, \
                        count(*) FILTER (WHERE status = 'CONFIRMED') AS confirmed, \
                        count(*) FILTER (WHERE status = 'REJECTED') AS rejected \
                   FROM order_view",
            )
            .await;
        let settled = rows[0]["settled"].as_i64().unwrap();
        if settled == placed.len() as i64 {
            break rows[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "only {settled} of {} orders settled within 180 s: {rows:?}",
            placed.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "placed {} orders in {placing:?}; all settled after {:?}: {settled}",
        placed.len(),
        started.elapsed()
    );
    assert!(settled["confirmed"].as_i64().unwrap() > 0, "{settled}");

    let stock: Vec<(&str, u32)> = products
        .iter()
        .map(|(id, stock)| (id.as_str(), *stock))
        .collect();
    shop.assert_invariants(&stock).await;
    // Rejections are stock or money refusals, never timeouts.
    let reasons = shop
        .rows("SELECT DISTINCT failure_reason FROM order_view WHERE status = 'REJECTED'")
        .await;
    for reason in reasons {
        let reason = reason["failure_reason"].as_str().unwrap_or_default();
        assert!(
            reason == "INSUFFICIENT_STOCK" || reason == "INSUFFICIENT_FUNDS",
            "unexpected rejection {reason}"
        );
    }
}
