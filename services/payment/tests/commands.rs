//! The saga's side of the payment service: `payment.charge` and
//! `payment.refund` over RabbitMQ against a real payment binary, Postgres
//! and brokers. Each test has its own database, exchange and topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use futures::StreamExt;
use payment_contract::{DeclineReason, Outcome, headers};
use serde_json::Value;
use support::{Harness, PATIENCE, charge, command_message, refund};
use uuid::Uuid;

fn declined(outcome: &Outcome) -> Option<DeclineReason> {
    match outcome {
        Outcome::Declined { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn the_same_charge_three_times_moves_money_once_and_answers_alike() {
    let mut harness = Harness::start().await;
    let customer = harness.new_customer().await;
    let order = Uuid::now_v7();
    let command = charge(&format!("{order}:charge_payment"), order, customer, 2_500);

    let (_, first) = harness.request(&command).await;
    let (_, second) = harness.request(&command).await;
    harness.restart().await;
    let (third_message, third) = harness.request(&command).await;

    let Outcome::Charged { payment_id, amount } = &first.outcome else {
        panic!("not charged: {first:?}");
    };
    assert_eq!(amount.amount, 2_500);
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert_eq!(first.command_id, command.command_id());
    assert_eq!(first.order_id, order);
    assert_eq!(
        third_message.headers.get(headers::IDEMPOTENCY_KEY),
        Some(command.command_id()),
        "the reply echoes the correlation headers"
    );
    assert_eq!(
        third_message.headers.get("ce_type"),
        Some(payment_contract::types::CHARGE_REPLY)
    );

    let charges: Vec<Value> = harness
        .stream(customer)
        .await
        .into_iter()
        .filter(|(_, event_type, _)| event_type == "Charged")
        .map(|(_, _, payload)| payload)
        .collect();
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["payment_id"], payment_id.to_string());
    assert_eq!(charges[0]["command_id"], command.command_id());
    assert_eq!(harness.balance(customer).await, 10_000 - 2_500);
}

#[tokio::test]
async fn twenty_concurrent_charges_on_a_hundred_euros_leave_exactly_zero() {
    let harness = Harness::start().await;
    let customer = harness.new_customer().await;
    assert_eq!(harness.balance(customer).await, 10_000);

    let commands: Vec<_> = (0..20)
        .map(|_| {
            let order = Uuid::now_v7();
            charge(&Uuid::now_v7().to_string(), order, customer, 1_000)
        })
        .collect();
    let replies = futures::future::join_all(commands.iter().map(|c| harness.request(c))).await;

    let charged = replies
        .iter()
        .filter(|(_, reply)| matches!(reply.outcome, Outcome::Charged { .. }))
        .count();
    let short = replies
        .iter()
        .filter(|(_, reply)| declined(&reply.outcome) == Some(DeclineReason::InsufficientFunds))
        .count();
    assert_eq!((charged, short), (10, 10), "{replies:?}");
    assert_eq!(harness.balance(customer).await, 0);

    // The stream: versions without gaps, and a balance that never went
    // below zero at any point.
    let stream = harness.stream(customer).await;
    let mut balance = 0_i64;
    for (index, (version, event_type, payload)) in stream.iter().enumerate() {
        assert_eq!(*version, index as i64 + 1);
        let amount = payload["amount"]["amount"].as_i64().unwrap_or_default();
        match event_type.as_str() {
            "Deposited" | "Refunded" => balance += amount,
            "Charged" => balance -= amount,
            _ => {}
        }
        assert!(balance >= 0, "balance {balance} after version {version}");
    }
    assert_eq!(balance, 0);
    let types: Vec<&str> = stream.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types.iter().filter(|t| **t == "Charged").count(), 10);
    assert_eq!(types.iter().filter(|t| **t == "ChargeDeclined").count(), 10);
}

#[tokio::test]
async fn a_frozen_wallet_declines_charges_and_refuses_deposits() {
    let harness = Harness::start().await;
    let customer = harness.new_customer().await;
    let frozen = harness.admin(customer, "freeze").await;
    assert_eq!(frozen.status(), 200);
    let body: Value = frozen.json().await.unwrap();
    assert_eq!(body["status"], "FROZEN");

    let order = Uuid::now_v7();
    let (_, reply) = harness
        .request(&charge("frozen-1", order, customer, 100))
        .await;
    assert_eq!(declined(&reply.outcome), Some(DeclineReason::AccountFrozen));

    let deposit = harness.deposit(customer, "frozen-deposit", 500).await;
    assert_eq!(deposit.status(), 409);
    let problem: Value = deposit.json().await.unwrap();
    assert_eq!(problem["code"], "ACCOUNT_FROZEN");

    assert_eq!(harness.admin(customer, "unfreeze").await.status(), 200);
    let (_, reply) = harness
        .request(&charge("thawed-1", Uuid::now_v7(), customer, 100))
        .await;
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );

    // Only an administrator may freeze.
    let refused = harness
        .http
        .post(harness.url(&format!("/api/v1/admin/wallets/{customer}/freeze")))
        .header("x-user-id", customer.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn refunds_restore_the_balance_once_and_a_refund_before_the_charge_voids_it() {
    let harness = Harness::start().await;
    let customer = harness.new_customer().await;

    // A refund that overtakes its charge voids the order: the charge that
    // arrives afterwards is declined and moves nothing.
    let overtaken = Uuid::now_v7();
    let (_, reply) = harness
        .request(&refund("refund-first", overtaken, customer, 3_000))
        .await;
    assert_eq!(
        declined(&reply.outcome),
        Some(DeclineReason::NothingToRefund)
    );
    let (_, reply) = harness
        .request(&charge("charge-late", overtaken, customer, 3_000))
        .await;
    assert_eq!(declined(&reply.outcome), Some(DeclineReason::OrderVoided));
    assert_eq!(harness.balance(customer).await, 10_000);
    let events: Vec<String> = harness
        .stream(customer)
        .await
        .into_iter()
        .map(|(_, event_type, _)| event_type)
        .filter(|event_type| event_type == "OrderVoided" || event_type == "ChargeDeclined")
        .collect();
    assert_eq!(events, ["OrderVoided", "ChargeDeclined"]);

    let order = Uuid::now_v7();
    let (_, reply) = harness
        .request(&charge("charge-1", order, customer, 3_000))
        .await;
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );
    assert_eq!(harness.balance(customer).await, 7_000);

    let (_, reply) = harness
        .request(&refund("refund-1", order, customer, 3_000))
        .await;
    let Outcome::Refunded { refund_id, amount } = &reply.outcome else {
        panic!("not refunded: {reply:?}");
    };
    assert!(refund_id.is_some());
    assert_eq!(amount.amount, 3_000);
    assert_eq!(harness.balance(customer).await, 10_000);

    // A second refund for the order (another command) changes nothing.
    let (_, reply) = harness
        .request(&refund("refund-2", order, customer, 3_000))
        .await;
    assert_eq!(
        reply.outcome,
        Outcome::Refunded {
            refund_id: None,
            amount: payment_contract::Money::new(0, "EUR")
        }
    );
    assert_eq!(harness.balance(customer).await, 10_000);
    let refunds = harness
        .stream(customer)
        .await
        .into_iter()
        .filter(|(_, t, _)| t == "Refunded")
        .count();
    assert_eq!(refunds, 1);

    // The same command id for another request is refused, not confused.
    let (_, reply) = harness
        .request(&refund("refund-1", Uuid::now_v7(), customer, 10))
        .await;
    assert_eq!(
        declined(&reply.outcome),
        Some(DeclineReason::CommandIdReused)
    );
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_does_not_block_the_queue() {
    let harness = Harness::start().await;
    let customer = harness.new_customer().await;

    harness
        .publish_raw(payment_contract::types::CHARGE, b"{this is not json")
        .await;
    let (_, reply) = harness
        .request(&charge("after-poison", Uuid::now_v7(), customer, 100))
        .await;
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );

    let mut dead = harness
        .rabbit
        .dead_letters(&harness.commands_subscription())
        .await
        .unwrap();
    let letter = tokio::time::timeout(PATIENCE, dead.next())
        .await
        .expect("nothing dead-lettered")
        .expect("stream ended")
        .expect("delivery");
    assert_eq!(letter.payload.as_ref(), b"{this is not json");
    assert!(
        letter
            .headers
            .get("x-failure-reason")
            .is_some_and(|reason| reason.contains("not valid")),
        "{:?}",
        letter.headers
    );
    letter.ack().await.unwrap();
}

#[tokio::test]
async fn a_charge_that_keeps_failing_is_dead_lettered_after_max_attempts() {
    let harness = Harness::start_with(&[
        ("FAULTS", "payment.charge=error(1)"),
        ("PAYMENT_COMMANDS_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let customer = Uuid::now_v7();
    let command = charge("doomed", Uuid::now_v7(), customer, 100);
    harness
        .rabbit
        .publish(command_message(&harness.exchange, &command))
        .await
        .unwrap();

    let mut dead = harness
        .rabbit
        .dead_letters(&harness.commands_subscription())
        .await
        .unwrap();
    let letter = tokio::time::timeout(PATIENCE, dead.next())
        .await
        .expect("nothing dead-lettered")
        .expect("stream ended")
        .expect("delivery");
    assert_eq!(letter.headers.get("x-failure-attempts"), Some("3"));
    assert!(
        letter
            .headers
            .get("x-failure-reason")
            .is_some_and(|reason| reason.contains("payment.charge")),
        "{:?}",
        letter.headers
    );
    letter.ack().await.unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_commands")
        .fetch_one(&harness.database.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "nothing was charged");
}

#[tokio::test]
async fn replies_go_to_the_reply_to_exchange_with_the_saga_headers() {
    let harness = Harness::start().await;
    let customer = harness.new_customer().await;
    let replies = testkit::brokers::unique_name("order-replies");
    let subscription = messaging::Subscription::new(&replies, "order");
    let mut stream = harness.rabbit.subscribe(&subscription).await.unwrap();

    let saga = Uuid::now_v7();
    let order = Uuid::now_v7();
    let command = charge(&format!("{saga}:charge_payment"), order, customer, 4_200);
    let message = command_message(&harness.exchange, &command)
        .with_header(headers::REPLY_TO, &replies)
        .with_header("saga-id", saga.to_string())
        .with_header("saga-step", "charge_payment");
    harness.rabbit.publish(message.clone()).await.unwrap();
    // A re-send after a timeout: a new message, the same command.
    harness.rabbit.publish(message).await.unwrap();

    let mut bodies = BTreeSet::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("no reply")
            .expect("stream ended")
            .expect("delivery");
        assert_eq!(
            delivery.headers.get("saga-id"),
            Some(saga.to_string().as_str())
        );
        assert_eq!(
            delivery.headers.get(headers::IDEMPOTENCY_KEY),
            Some(command.command_id())
        );
        assert_eq!(delivery.key.as_deref(), Some(order.to_string().as_str()));
        bodies.insert(delivery.payload.to_vec());
        delivery.ack().await.unwrap();
    }
    assert_eq!(bodies.len(), 1, "both copies answer alike");
    let charges = harness
        .stream(customer)
        .await
        .into_iter()
        .filter(|(_, t, _)| t == "Charged")
        .count();
    assert_eq!(charges, 1);
}

/// A database outage longer than the attempts of a poison message last (3
/// tries of a 3 s pool timeout) neither dead-letters a command nor loses a
/// registration: both are held, and handled once the database is back.
#[tokio::test]
async fn a_database_outage_holds_commands_and_registrations_until_it_is_over() {
    let (harness, link) = Harness::start_behind_database_link().await;
    let customer = harness.new_customer().await;

    link.cut();
    let newcomer = Uuid::now_v7();
    harness
        .announce_user(newcomer, &Uuid::now_v7().to_string())
        .await;
    let order = Uuid::now_v7();
    let reply = harness.request_in_background(&charge(
        &format!("{order}:charge_payment"),
        order,
        customer,
        700,
    ));
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    let held = harness.log_lines_with("holding the message");
    assert!(held >= 2, "neither message was held during the outage");
    link.restore();

    let reply = reply.await.unwrap();
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );
    assert_eq!(harness.balance(customer).await, 10_000 - 700);
    let wallet = harness.wait_for_wallet(newcomer).await;
    assert_eq!(wallet["balance"]["amount"], 10_000);

    let mut dead = harness
        .rabbit
        .dead_letters(&harness.commands_subscription())
        .await
        .unwrap();
    let letter = tokio::time::timeout(std::time::Duration::from_secs(1), dead.next()).await;
    assert!(letter.is_err(), "dead-lettered: {letter:?}");
}

/// An order placed right after registering can send its charge before this
/// service has opened the wallet: the charge waits for it (requeued until
/// its last attempt) instead of being declined.
#[tokio::test]
async fn a_charge_that_overtakes_the_registration_waits_for_the_wallet() {
    let harness = Harness::start_with(&[("PAYMENT_COMMANDS_RETRY_DELAY", "1s")]).await;
    let customer = Uuid::now_v7();
    let order = Uuid::now_v7();
    let command = charge(&format!("{order}:charge_payment"), order, customer, 1_500);
    let reply = harness.request_in_background(&command);
    let waiting = format!("no wallet for customer {customer} yet");
    let deadline = std::time::Instant::now() + PATIENCE;
    while harness.log_lines_with(&waiting) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the charge never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    harness
        .announce_user(customer, &Uuid::now_v7().to_string())
        .await;

    let reply = reply.await.unwrap();
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );
    assert_eq!(harness.balance(customer).await, 10_000 - 1_500);
}

/// A customer who never gets a wallet: the charge is declined
/// `ACCOUNT_NOT_FOUND` on its last attempt, and that answer is kept.
#[tokio::test]
async fn a_charge_for_a_customer_without_a_wallet_is_declined_on_its_last_attempt() {
    let harness = Harness::start().await;
    let customer = Uuid::now_v7();
    let order = Uuid::now_v7();
    let command = charge(&format!("{order}:charge_payment"), order, customer, 100);

    let (_, first) = harness.request(&command).await;
    assert_eq!(
        declined(&first.outcome),
        Some(DeclineReason::AccountNotFound)
    );
    let waits = harness.log_lines_with(&format!("no wallet for customer {customer} yet"));
    assert_eq!(waits, 2, "tried three times");
    let (_, again) = harness.request(&command).await;
    assert_eq!(again, first);
}
