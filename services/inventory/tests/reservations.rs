//! Stock reservations through the real binary and a real Postgres: no
//! oversell under concurrency, all or nothing, idempotency, the saga's
//! commit/release paths, expiry, and the events they leave in the outbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, assert_failed, line, start, start_with};
use futures::future::join_all;
use proto::ferrishop::inventory::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

#[tokio::test]
async fn fifty_concurrent_reservations_of_ten_units_sell_exactly_ten() {
    let harness = start().await;
    let product = harness.stocked(10).await;

    let attempts = (0..50).map(|_| {
        let harness = &harness;
        let product_id = product.id.clone();
        async move { harness.reserve(&new_id(), vec![line(&product_id, 1)]).await }
    });
    let results = join_all(attempts).await;

    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert_eq!(succeeded, 10);
    assert_eq!(refused.len(), 40);
    for status in &refused {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(common::error_code(status), "INSUFFICIENT_STOCK");
        let info = status.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "INSUFFICIENT_STOCK");
        assert_eq!(info.metadata["product_id"], product.id);
        assert_eq!(info.metadata["requested"], "1");
        assert_eq!(info.metadata["available"], "0");
    }
    assert_eq!(harness.stock(&product.id).await, (10, 10, 0));
    let reserved_events = harness
        .events()
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "inventory.stock_reserved")
        .count();
    assert_eq!(reserved_events, 10, "one event per successful reservation");
    harness.assert_invariants().await;
}

#[tokio::test]
async fn one_short_line_reserves_nothing_on_any_line() {
    let harness = start().await;
    let plenty = harness.stocked(10).await;
    let scarce = harness.stocked(2).await;
    let also_scarce = harness.stocked(0).await;
    let reservation_id = new_id();

    let status = assert_failed(
        harness
            .reserve(
                &reservation_id,
                vec![
                    line(&plenty.id, 5),
                    line(&scarce.id, 3),
                    line(&also_scarce.id, 1),
                ],
            )
            .await,
        Code::FailedPrecondition,
        "INSUFFICIENT_STOCK",
    );
    // Every short product is named, with what was asked and what is left.
    let failure = status.get_details_precondition_failure().unwrap();
    let mut violations: Vec<_> = failure
        .violations
        .iter()
        .map(|v| (v.subject.clone(), v.description.clone()))
        .collect();
    violations.sort();
    let mut expected = vec![
        (scarce.id.clone(), "requested 3, available 2".to_owned()),
        (
            also_scarce.id.clone(),
            "requested 1, available 0".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(violations, expected);
    assert!(
        status.message().contains(&scarce.id),
        "{}",
        status.message()
    );

    assert_eq!(harness.stock(&plenty.id).await, (10, 0, 10));
    assert_eq!(harness.stock(&scarce.id).await, (2, 0, 2));
    assert!(
        harness.events().await.is_empty(),
        "a refused reservation announces nothing"
    );

    // Nothing was recorded under the id: once stock arrives, the same
    // request succeeds.
    harness
        .client
        .clone()
        .restock(common::as_admin(pb::RestockRequest {
            product_id: scarce.id.clone(),
            quantity: 1,
        }))
        .await
        .unwrap();
    let reserved = harness
        .reserve(
            &reservation_id,
            vec![line(&plenty.id, 5), line(&scarce.id, 3)],
        )
        .await
        .unwrap();
    assert_eq!(reserved.status(), pb::ReservationStatus::Held);
    assert_eq!(harness.stock(&scarce.id).await, (3, 3, 0));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn the_same_reservation_three_times_is_one_reservation() {
    let harness = start().await;
    let first = harness.stocked(10).await;
    let second = harness.stocked(10).await;
    let reservation_id = new_id();
    // Lines in any order, split or not, ask for the same thing.
    let requests = [
        vec![line(&first.id, 2), line(&second.id, 3)],
        vec![line(&second.id, 3), line(&first.id, 2)],
        vec![line(&first.id, 1), line(&second.id, 3), line(&first.id, 1)],
    ];

    let mut answers = Vec::new();
    for lines in requests {
        answers.push(harness.reserve(&reservation_id, lines).await.unwrap());
    }

    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    assert_eq!(answers[0].status(), pb::ReservationStatus::Held);
    assert_eq!(answers[0].lines.len(), 2);
    assert!(answers[0].expires_at.is_some());
    assert_eq!(harness.stock(&first.id).await, (10, 2, 8));
    assert_eq!(harness.stock(&second.id).await, (10, 3, 7));
    assert_eq!(
        harness.events().await.len(),
        2,
        "events of the first call only"
    );
    harness.assert_invariants().await;
}

#[tokio::test]
async fn concurrent_retries_of_one_reservation_reserve_once() {
    let harness = start().await;
    let product = harness.stocked(100).await;
    let reservation_id = new_id();

    let retries = (0..20).map(|_| harness.reserve(&reservation_id, vec![line(&product.id, 7)]));
    let answers: Vec<_> = join_all(retries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(harness.stock(&product.id).await, (100, 7, 93));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn a_reservation_id_reused_for_other_lines_is_refused() {
    let harness = start().await;
    let product = harness.stocked(10).await;
    let reservation_id = new_id();
    harness
        .reserve(&reservation_id, vec![line(&product.id, 2)])
        .await
        .unwrap();

    assert_failed(
        harness
            .reserve(&reservation_id, vec![line(&product.id, 3)])
            .await,
        Code::AlreadyExists,
        "RESERVATION_MISMATCH",
    );
    assert_eq!(harness.stock(&product.id).await, (10, 2, 8));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn commit_sells_and_releasing_a_sale_returns_the_goods() {
    let harness = start().await;
    let product = harness.stocked(10).await;
    let reservation_id = new_id();
    harness
        .reserve(&reservation_id, vec![line(&product.id, 3)])
        .await
        .unwrap();

    assert_eq!(
        harness.commit(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Committed
    );
    assert_eq!(harness.stock(&product.id).await, (7, 0, 7));
    // Idempotent: a retried commit changes nothing.
    assert_eq!(
        harness.commit(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Committed
    );
    assert_eq!(harness.stock(&product.id).await, (7, 0, 7));
    harness.assert_invariants().await;

    // The order is cancelled after confirmation: the units come back.
    assert_eq!(
        harness.release(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Released
    );
    assert_eq!(harness.stock(&product.id).await, (10, 0, 10));
    assert_eq!(
        harness.release(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Released
    );
    assert_eq!(
        harness.stock(&product.id).await,
        (10, 0, 10),
        "released once"
    );

    assert_failed(
        harness.commit(&reservation_id).await,
        Code::FailedPrecondition,
        "RESERVATION_RELEASED",
    );
    let repeated = harness
        .reserve(&reservation_id, vec![line(&product.id, 3)])
        .await
        .unwrap();
    assert_eq!(repeated.status(), pb::ReservationStatus::Released);
    assert_eq!(harness.stock(&product.id).await, (10, 0, 10));

    let released: Vec<_> = harness
        .events()
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "inventory.stock_released")
        .collect();
    assert_eq!(released.len(), 1);
    let (_, key, payload) = &released[0];
    assert_eq!(key, &product.id);
    assert_eq!(payload["reason"], "returned");
    assert_eq!(payload["quantity"], 3);
    assert_eq!(payload["stock"]["on_hand"], 10);
    harness.assert_invariants().await;
}

#[tokio::test]
async fn releasing_a_hold_makes_its_units_available_again() {
    let harness = start().await;
    let product = harness.stocked(5).await;
    let reservation_id = new_id();
    harness
        .reserve(&reservation_id, vec![line(&product.id, 5)])
        .await
        .unwrap();
    assert_eq!(harness.stock(&product.id).await, (5, 5, 0));
    assert_failed(
        harness.reserve(&new_id(), vec![line(&product.id, 1)]).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_STOCK",
    );

    assert_eq!(
        harness.release(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Released
    );
    assert_eq!(harness.stock(&product.id).await, (5, 0, 5));
    harness
        .reserve(&new_id(), vec![line(&product.id, 5)])
        .await
        .unwrap();
    let (_, _, payload) = harness
        .events()
        .await
        .into_iter()
        .find(|(kind, _, _)| kind == "inventory.stock_released")
        .unwrap();
    assert_eq!(payload["reason"], "released");
    assert_eq!(payload["reservation_id"], reservation_id);
    harness.assert_invariants().await;
}

#[tokio::test]
async fn a_release_that_overtakes_its_reservation_wins() {
    let harness = start().await;
    let product = harness.stocked(5).await;
    let reservation_id = new_id();

    assert_eq!(
        harness.release(&reservation_id).await.unwrap(),
        pb::ReservationStatus::Released
    );
    let late = harness
        .reserve(&reservation_id, vec![line(&product.id, 2)])
        .await
        .unwrap();

    assert_eq!(late.status(), pb::ReservationStatus::Released);
    assert!(late.lines.is_empty());
    assert_eq!(harness.stock(&product.id).await, (5, 0, 5));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn unknown_reservations_and_products_are_not_found() {
    let harness = start().await;
    let product = harness.stocked(5).await;

    assert_failed(
        harness.commit(&new_id()).await,
        Code::NotFound,
        "RESERVATION_NOT_FOUND",
    );
    let status = assert_failed(
        harness
            .reserve(
                &new_id(),
                vec![line(&product.id, 1), line(&Uuid::now_v7().to_string(), 1)],
            )
            .await,
        Code::NotFound,
        "PRODUCT_NOT_FOUND",
    );
    assert!(
        status
            .get_details_error_info()
            .unwrap()
            .metadata
            .contains_key("product_id")
    );
    assert_eq!(harness.stock(&product.id).await, (5, 0, 5));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn malformed_reservations_name_the_bad_fields() {
    let harness = start().await;
    let product = harness.stocked(5).await;

    let status = assert_failed(
        harness
            .reserve("not-a-uuid", vec![line(&product.id, 0), line("nope", 1)])
            .await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    let mut fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["lines[0].quantity", "lines[1].product_id", "reservation_id"]
    );

    let status = assert_failed(
        harness.reserve(&new_id(), vec![]).await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "lines"
    );
    assert_eq!(harness.stock(&product.id).await, (5, 0, 5));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn the_sweeper_expires_forgotten_reservations_and_a_late_commit_fails() {
    let harness = start_with(&[
        ("RESERVATION_TTL", "1s"),
        ("RESERVATION_SWEEP_INTERVAL", "100ms"),
    ])
    .await;
    let product = harness.stocked(10).await;
    let forgotten = new_id();
    let committed = new_id();
    harness
        .reserve(&forgotten, vec![line(&product.id, 4)])
        .await
        .unwrap();
    harness
        .reserve(&committed, vec![line(&product.id, 1)])
        .await
        .unwrap();
    harness.commit(&committed).await.unwrap();
    assert_eq!(harness.stock(&product.id).await, (9, 4, 5));

    // No call touches the reservation: only the sweeper can release it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while harness.stock(&product.id).await != (9, 0, 9) {
        assert!(Instant::now() < deadline, "the sweeper never released it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_failed(
        harness.commit(&forgotten).await,
        Code::FailedPrecondition,
        "RESERVATION_EXPIRED",
    );
    assert_eq!(
        harness.release(&forgotten).await.unwrap(),
        pb::ReservationStatus::Expired,
        "releasing an expired reservation is a no-op"
    );
    assert_eq!(harness.stock(&product.id).await, (9, 0, 9));
    // A committed reservation never expires.
    assert_eq!(
        harness.commit(&committed).await.unwrap(),
        pb::ReservationStatus::Committed
    );
    let (_, _, payload) = harness
        .events()
        .await
        .into_iter()
        .find(|(kind, _, _)| kind == "inventory.stock_released")
        .unwrap();
    assert_eq!(payload["reason"], "expired");
    harness.assert_invariants().await;
}

/// A service whose sweeper will not run during the test, with 4 of a
/// product's 10 units held by a reservation past its 1 s deadline.
async fn overdue_reservation() -> (Harness, pb::Product, String) {
    let harness = start_with(&[
        ("RESERVATION_TTL", "1s"),
        ("RESERVATION_SWEEP_INTERVAL", "1h"),
    ])
    .await;
    let product = harness.stocked(10).await;
    let reservation_id = new_id();
    let held = harness
        .reserve(&reservation_id, vec![line(&product.id, 4)])
        .await
        .unwrap();
    assert_eq!(held.status(), pb::ReservationStatus::Held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (harness, product, reservation_id)
}

#[tokio::test]
async fn an_overdue_reservation_cannot_be_committed_even_before_the_sweep() {
    let (harness, product, reservation_id) = overdue_reservation().await;
    assert_eq!(harness.stock(&product.id).await, (10, 4, 6), "not swept");

    assert_failed(
        harness.commit(&reservation_id).await,
        Code::FailedPrecondition,
        "RESERVATION_EXPIRED",
    );
    assert_eq!(
        harness.stock(&product.id).await,
        (10, 0, 10),
        "expired by the commit"
    );
    harness.assert_invariants().await;
}

#[tokio::test]
async fn an_overdue_reservation_asked_for_again_answers_expired() {
    let (harness, product, reservation_id) = overdue_reservation().await;

    // A saga resumed after its reservation's deadline asks again.
    let again = harness
        .reserve(&reservation_id, vec![line(&product.id, 4)])
        .await
        .unwrap();
    assert_eq!(again.status(), pb::ReservationStatus::Expired);
    assert_eq!(again.lines.len(), 1, "{again:?}");
    assert_eq!(
        harness.stock(&product.id).await,
        (10, 0, 10),
        "expired by the repeated reservation"
    );
    assert_failed(
        harness.commit(&reservation_id).await,
        Code::FailedPrecondition,
        "RESERVATION_EXPIRED",
    );
    harness.assert_invariants().await;
}

#[tokio::test]
async fn falling_below_the_reorder_point_announces_low_stock_once() {
    let harness = start().await;
    let mut request = common::new_product("LOW-1", 500, 20);
    // Reorder point: 2 × 5 + 5 = 15.
    request.reorder_policy = Some(pb::ReorderPolicy {
        avg_daily_demand: 2,
        lead_time_days: 5,
        safety_stock: 5,
        reorder_point: 0,
    });
    let product = harness.create(request).await;
    assert_eq!(product.reorder_policy.unwrap().reorder_point, 15);

    harness
        .reserve(&new_id(), vec![line(&product.id, 5)])
        .await
        .unwrap(); // 15: at the point
    harness
        .reserve(&new_id(), vec![line(&product.id, 1)])
        .await
        .unwrap(); // 14: below
    harness
        .reserve(&new_id(), vec![line(&product.id, 1)])
        .await
        .unwrap(); // 13: still below

    let low: Vec<_> = harness
        .events()
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "inventory.low_stock")
        .collect();
    assert_eq!(low.len(), 1, "{low:?}");
    let (_, key, payload) = &low[0];
    assert_eq!(key, &product.id);
    assert_eq!(payload["sku"], "LOW-1");
    assert_eq!(payload["reorder_point"], 15);
    assert_eq!(payload["stock"]["available"], 14);
    harness.assert_invariants().await;
}

#[tokio::test]
async fn an_injected_fault_fails_the_reservation_without_side_effects() {
    let harness = start_with(&[("FAULTS", "inventory.reserve=error(1.0)")]).await;
    let product = harness.stocked(5).await;

    assert_failed(
        harness.reserve(&new_id(), vec![line(&product.id, 1)]).await,
        Code::Unavailable,
        "UNAVAILABLE",
    );
    assert_eq!(harness.stock(&product.id).await, (5, 0, 5));
    harness.assert_invariants().await;
}
