//! The order saga end to end against real inventory and payment binaries,
//! Postgres, RabbitMQ, Kafka and NATS: the happy path, refusals by each
//! participant, idempotent placement, cancellation, and the read models.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use proto::ferrishop::order::v1 as pb;
use support::{PATIENCE, Shop, WELCOME_CREDIT, collect, error_code};
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn a_placed_order_is_confirmed_charged_once_and_announced() {
    let shop = Shop::start().await;
    let (book, pen) = (shop.product(1_250, 10).await, shop.product(300, 5).await);
    let customer = shop.customer().await;
    let mut statuses = shop.status_notifications().await;
    let mut events = shop.order_events().await;

    let placed = shop
        .place(
            customer,
            &[(&book, 2), (&pen, 1), (&book, 1)],
            "first order",
        )
        .await
        .expect("PlaceOrder");
    assert_eq!(placed.status(), pb::OrderStatus::Pending);
    assert!(!placed.consistency_token.is_empty());

    // Read-your-writes: right after the answer, the order is there.
    let pending = shop
        .get_after(customer, &placed.order_id, &placed.consistency_token)
        .await
        .expect("GetOrder right after PlaceOrder");
    assert_eq!(pending.lines.len(), 2, "one line per product: {pending:?}");
    assert_eq!(pending.lines[0].product_id, book);
    assert_eq!(pending.lines[0].quantity, 3);
    assert_eq!(pending.lines[0].unit_price.as_ref().unwrap().amount, 1_250);
    assert_eq!(pending.lines[0].line_total.as_ref().unwrap().amount, 3_750);
    assert!(!pending.lines[0].product_name.is_empty());
    assert_eq!(pending.total.as_ref().unwrap().amount, 4_050);

    let confirmed = shop
        .wait_for(
            customer,
            &placed.order_id,
            pb::OrderStatus::Confirmed,
            PATIENCE,
        )
        .await;
    assert_eq!(confirmed.failure_reason, "");
    assert_eq!(shop.stock(&book).await, (7, 0, 7));
    assert_eq!(shop.stock(&pen).await, (4, 0, 4));
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT - 4_050);

    let order_id: Uuid = placed.order_id.parse().unwrap();
    assert_eq!(shop.payments().await[&order_id], (1, 4_050, 0));

    // Status notifications on NATS, in order.
    let notified = collect(&mut statuses, 2, PATIENCE).await;
    let sequence: Vec<&str> = notified
        .iter()
        .map(|(_, body)| body["status"].as_str().unwrap())
        .collect();
    assert_eq!(sequence, ["PENDING", "CONFIRMED"]);
    assert!(
        notified
            .iter()
            .all(|(kind, _)| kind == "order.status_changed")
    );

    // Integration events on Kafka.
    let announced = collect(&mut events, 2, PATIENCE).await;
    let kinds: Vec<&str> = announced.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["order.placed", "order.confirmed"]);
    assert_eq!(announced[1].1["total"]["amount"], 4_050);
    assert_eq!(announced[1].1["lines"].as_array().unwrap().len(), 2);

    // The history lists it; the saga completed every step.
    let listed = shop
        .orders()
        .list_orders(support::as_user(pb::ListOrdersRequest::default(), customer))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    assert_eq!(listed.orders[0].status(), pb::OrderStatus::Confirmed);
    let sagas = shop.sagas().await;
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].status(), pb::SagaStatus::Completed);
    assert_eq!(sagas[0].order_id, placed.order_id);
    let steps: Vec<(&str, pb::SagaStepStatus)> = sagas[0]
        .steps
        .iter()
        .map(|step| (step.name.as_str(), step.status()))
        .collect();
    assert_eq!(
        steps,
        [
            ("reserve_stock", pb::SagaStepStatus::Succeeded),
            ("charge_payment", pb::SagaStepStatus::Succeeded),
            ("commit_reservation", pb::SagaStepStatus::Succeeded),
        ]
    );
    // The saga and order metrics.
    let metrics = shop
        .http
        .get(format!(
            "{}/metrics",
            shop.order.process.as_ref().unwrap().http_url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"ferrishop_saga_total{saga="place_order",outcome="completed"} 1"#,
        r#"ferrishop_orders_total{status="PENDING"} 1"#,
        r#"ferrishop_orders_total{status="CONFIRMED"} 1"#,
        r#"ferrishop_saga_duration_seconds_count{saga="place_order"} 1"#,
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    // Status notifications are one series for every order, not one each.
    let template = format!(
        r#"messaging_destination_name="{}.{{order_id}}.status""#,
        shop.names.status_prefix
    );
    assert!(metrics.contains(&template), "no {template} in\n{metrics}");
    assert!(
        !metrics.contains(&placed.order_id),
        "an order id in a metric label:\n{metrics}"
    );
    shop.assert_invariants(&[(&book, 10), (&pen, 5)]).await;
}

/// Workers on every replica hear of a placed order and of its payment
/// reply: each commit is followed by a `saga_due` notification.
#[tokio::test]
async fn the_saga_of_a_placed_order_is_announced_at_its_start_and_its_reply() {
    let shop = Shop::start().await;
    let item = shop.product(400, 10).await;
    let customer = shop.customer().await;
    let mut listener = sqlx::postgres::PgListener::connect(&shop.order.database.url)
        .await
        .unwrap();
    listener.listen(saga::NOTIFY_CHANNEL).await.unwrap();

    let order = shop.order(customer, &[(&item, 1)]).await;
    shop.wait_for(customer, &order, pb::OrderStatus::Confirmed, PATIENCE)
        .await;
    let mut announced = 0;
    while announced < 2 {
        let wait = std::time::Duration::from_secs(10);
        let Ok(notification) = tokio::time::timeout(wait, listener.recv()).await else {
            panic!("announced {announced} time(s); expected the start and the charge reply");
        };
        assert_eq!(notification.unwrap().payload(), "place_order");
        announced += 1;
    }
}

#[tokio::test]
async fn insufficient_stock_rejects_the_order_and_leaves_the_wallet_alone() {
    let shop = Shop::start().await;
    let scarce = shop.product(500, 2).await;
    let customer = shop.customer().await;

    let order_id = shop.order(customer, &[(&scarce, 3)]).await;
    let rejected = shop
        .wait_for(customer, &order_id, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    assert_eq!(rejected.failure_reason, "INSUFFICIENT_STOCK");
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT);
    assert_eq!(shop.stock(&scarce).await, (2, 0, 2));
    assert!(shop.payments().await.is_empty());
    shop.assert_invariants(&[(&scarce, 2)]).await;
}

#[tokio::test]
async fn refused_payments_reject_the_order_and_release_the_reservation() {
    let shop = Shop::start().await;
    let pricey = shop.product(6_000, 10).await;
    let (poor, frozen) = (shop.customer().await, shop.customer().await);
    shop.wallet_admin(frozen, "freeze").await;

    let too_expensive = shop.order(poor, &[(&pricey, 2)]).await;
    let rejected = shop
        .wait_for(poor, &too_expensive, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    assert_eq!(rejected.failure_reason, "INSUFFICIENT_FUNDS");

    let from_frozen = shop.order(frozen, &[(&pricey, 1)]).await;
    let rejected = shop
        .wait_for(frozen, &from_frozen, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    assert_eq!(rejected.failure_reason, "ACCOUNT_FROZEN");

    // The reservations were released: available is back where it was.
    assert_eq!(shop.stock(&pricey).await, (10, 0, 10));
    assert_eq!(shop.balance(poor).await, WELCOME_CREDIT);
    shop.assert_invariants(&[(&pricey, 10)]).await;
}

#[tokio::test]
async fn placing_twice_with_one_key_places_one_order_and_charges_once() {
    let shop = Shop::start().await;
    let item = shop.product(700, 10).await;
    let customer = shop.customer().await;

    let first = shop.place(customer, &[(&item, 2)], "key-1").await.unwrap();
    let again = shop.place(customer, &[(&item, 2)], "key-1").await.unwrap();
    assert_eq!(first.order_id, again.order_id);
    // The same items listed differently are the same request.
    let split = shop
        .place(customer, &[(&item, 1), (&item, 1)], "key-1")
        .await
        .unwrap();
    assert_eq!(split.order_id, first.order_id);

    let reused = shop
        .place(customer, &[(&item, 3)], "key-1")
        .await
        .expect_err("a key reused for other items");
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(error_code(&reused), "IDEMPOTENCY_KEY_REUSED");

    // Another customer's key space is their own.
    let other = shop.customer().await;
    let theirs = shop.place(other, &[(&item, 1)], "key-1").await.unwrap();
    assert_ne!(theirs.order_id, first.order_id);

    shop.wait_for(
        customer,
        &first.order_id,
        pb::OrderStatus::Confirmed,
        PATIENCE,
    )
    .await;
    let replayed = shop.place(customer, &[(&item, 2)], "key-1").await.unwrap();
    assert_eq!(replayed.status(), pb::OrderStatus::Confirmed);
    shop.wait_for(
        other,
        &theirs.order_id,
        pb::OrderStatus::Confirmed,
        PATIENCE,
    )
    .await;
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT - 1_400);
    assert_eq!(shop.sagas().await.len(), 2);
    shop.assert_invariants(&[(&item, 10)]).await;
}

#[tokio::test]
async fn invalid_requests_and_other_customers_orders_are_refused() {
    let shop = Shop::start().await;
    let item = shop.product(100, 10).await;
    let customer = shop.customer().await;

    let empty = shop.place(customer, &[], "k").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(error_code(&empty), "VALIDATION_FAILED");
    let zero = shop.place(customer, &[(&item, 0)], "k").await.unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    let no_key = shop.place(customer, &[(&item, 1)], "").await.unwrap_err();
    assert_eq!(no_key.code(), Code::InvalidArgument);
    let unknown = Uuid::now_v7().to_string();
    let missing = shop
        .place(customer, &[(&unknown, 1)], "k")
        .await
        .unwrap_err();
    assert_eq!(error_code(&missing), "PRODUCT_NOT_FOUND");

    let order_id = shop.order(customer, &[(&item, 1)]).await;
    let stranger = Uuid::now_v7();
    let hidden = shop.get(stranger, &order_id).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let hidden = shop.cancel(stranger, &order_id).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // A token that parses but names no event is refused, not waited for.
    let forged = "18446744073709551615.1";
    let refused = shop
        .get_after(customer, &order_id, forged)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("consistency_token"),
        "{refused:?}"
    );
    let refused = shop
        .orders()
        .list_orders(support::as_user(
            pb::ListOrdersRequest {
                consistency_token: forged.to_owned(),
                ..Default::default()
            },
            customer,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // An admin sees every order.
    let seen = shop
        .orders()
        .get_order(support::as_admin(pb::GetOrderRequest {
            order_id: order_id.clone(),
            consistency_token: String::new(),
        }))
        .await
        .unwrap();
    assert_eq!(seen.into_inner().order.unwrap().id, order_id);
    // ListSagas is for admins only.
    let forbidden = shop
        .orders()
        .list_sagas(support::as_user(pb::ListSagasRequest::default(), customer))
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    shop.wait_settled(customer, &order_id, PATIENCE).await;
}

#[tokio::test]
async fn a_confirmed_order_is_cancelled_refunded_and_restocked() {
    let shop = Shop::start().await;
    let item = shop.product(1_000, 10).await;
    let scarce = shop.product(1_000, 0).await;
    let customer = shop.customer().await;
    let mut statuses = shop.status_notifications().await;

    let order_id = shop.order(customer, &[(&item, 3)]).await;
    shop.wait_for(customer, &order_id, pb::OrderStatus::Confirmed, PATIENCE)
        .await;
    assert_eq!(shop.stock(&item).await, (7, 0, 7));
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT - 3_000);

    let accepted = shop.cancel(customer, &order_id).await.expect("CancelOrder");
    assert_eq!(accepted.status(), pb::OrderStatus::Confirmed);
    // Cancelling again while it runs is fine.
    let again = shop.cancel(customer, &order_id).await;
    assert!(
        again.is_ok() || error_code(again.as_ref().unwrap_err()) == "ORDER_NOT_CANCELLABLE",
        "{again:?}"
    );
    shop.wait_for(customer, &order_id, pb::OrderStatus::Cancelled, PATIENCE)
        .await;
    assert_eq!(shop.balance(customer).await, WELCOME_CREDIT);
    assert_eq!(shop.stock(&item).await, (10, 0, 10));
    let id: Uuid = order_id.parse().unwrap();
    assert_eq!(shop.payments().await[&id], (1, 3_000, 3_000));

    let notified = collect(&mut statuses, 3, PATIENCE).await;
    let sequence: Vec<&str> = notified
        .iter()
        .map(|(_, body)| body["status"].as_str().unwrap())
        .collect();
    assert_eq!(sequence, ["PENDING", "CONFIRMED", "CANCELLED"]);

    // A CANCELLED or REJECTED order cannot be cancelled.
    let twice = shop.cancel(customer, &order_id).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert_eq!(error_code(&twice), "ORDER_NOT_CANCELLABLE");
    let rejected = shop.order(customer, &[(&scarce, 1)]).await;
    shop.wait_for(customer, &rejected, pb::OrderStatus::Rejected, PATIENCE)
        .await;
    let refused = shop.cancel(customer, &rejected).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(error_code(&refused), "ORDER_NOT_CANCELLABLE");

    let cancellations: Vec<_> = shop
        .sagas()
        .await
        .into_iter()
        .filter(|saga| saga.saga_type == "cancel_order")
        .collect();
    assert_eq!(cancellations.len(), 1);
    assert_eq!(cancellations[0].status(), pb::SagaStatus::Completed);
    shop.assert_invariants(&[(&item, 10), (&scarce, 0)]).await;
}

#[tokio::test]
async fn watch_order_streams_each_status_and_ends_after_a_final_one() {
    let shop = Shop::start().await;
    let item = shop.product(250, 10).await;
    let customer = shop.customer().await;
    let order_id = shop.order(customer, &[(&item, 1)]).await;

    let mut watch = shop
        .orders()
        .watch_order(support::as_user(
            pb::WatchOrderRequest {
                order_id: order_id.clone(),
            },
            customer,
        ))
        .await
        .expect("WatchOrder")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("a status in time")
        .expect("a healthy stream")
    {
        seen.push(message.status());
        if message.status() == pb::OrderStatus::Confirmed {
            shop.cancel(customer, &order_id).await.expect("cancel");
        }
    }
    // The first message may already be CONFIRMED if the saga was quick.
    assert_eq!(seen.last(), Some(&pb::OrderStatus::Cancelled), "{seen:?}");
    assert!(seen.contains(&pb::OrderStatus::Confirmed), "{seen:?}");

    // Another customer's order, an unknown one, an id that is none.
    for (order_id, caller, code) in [
        (order_id.clone(), Uuid::now_v7(), Code::NotFound),
        (Uuid::now_v7().to_string(), customer, Code::NotFound),
        ("not-an-id".to_owned(), customer, Code::InvalidArgument),
    ] {
        let answer = shop
            .orders()
            .watch_order(support::as_user(
                pb::WatchOrderRequest {
                    order_id: order_id.clone(),
                },
                caller,
            ))
            .await;
        let refused = match answer {
            Err(status) => status,
            Ok(stream) => tokio::time::timeout(PATIENCE, stream.into_inner().message())
                .await
                .expect("an answer in time")
                .expect_err("no status for a refused watch"),
        };
        assert_eq!(refused.code(), code, "{order_id}: {refused:?}");
    }
}
