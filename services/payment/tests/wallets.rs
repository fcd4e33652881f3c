//! The owner's side of the payment service and its choreography: wallets
//! opened by `user.registered`, REST and gRPC as the gateway calls them, and
//! the integration events on Kafka. Each test has its own database, exchange
//! and topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use messaging::Subscription;
use payment_contract::Outcome;
use proto::ferrishop::common::v1::PageRequest;
use proto::ferrishop::payment::v1 as pb;
use proto::ferrishop::payment::v1::payment_service_client::PaymentServiceClient;
use serde_json::{Value, json};
use support::{Harness, PATIENCE, charge, refund};
use uuid::Uuid;

#[tokio::test]
async fn user_registered_opens_a_wallet_with_the_welcome_credit_once() {
    let harness = Harness::start().await;
    let user = Uuid::now_v7();
    let message_id = Uuid::now_v7().to_string();
    harness.announce_user(user, &message_id).await;
    // Delivered twice (a relay that republished), and announced again under
    // another message id.
    harness.announce_user(user, &message_id).await;
    harness
        .announce_user(user, &Uuid::now_v7().to_string())
        .await;

    let wallet = harness.wait_for_wallet(user).await;
    assert_eq!(
        wallet["balance"],
        json!({"amount": 10_000, "currency": "EUR"})
    );
    assert_eq!(wallet["status"], "ACTIVE");
    assert_eq!(wallet["owner_id"], user.to_string());

    // Give the later copies time to arrive, then check nothing changed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let handled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM inbox WHERE consumer = 'payment.user-registered'",
        )
        .fetch_one(&harness.database.pool)
        .await
        .unwrap();
        if handled == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "only {handled} messages handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = harness.stream(user).await;
    let types: Vec<&str> = stream.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types, ["AccountOpened", "Deposited"]);
    assert_eq!(harness.balance(user).await, 10_000);
}

#[tokio::test]
async fn deposits_are_idempotent_by_key() {
    let harness = Harness::start().await;
    let user = harness.new_customer().await;

    let first = harness.deposit(user, "key-1", 2_500).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["kind"], "DEPOSIT");
    assert_eq!(first["balance_after"]["amount"], 12_500);

    let again = harness.deposit(user, "key-1", 2_500).await;
    assert_eq!(again.status(), 201);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(b"true".as_slice())
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same response");
    assert_eq!(harness.balance(user).await, 12_500);

    let other = harness.deposit(user, "key-1", 9_999).await;
    assert_eq!(other.status(), 422);
    let problem: Value = other.json().await.unwrap();
    assert_eq!(problem["code"], "IDEMPOTENCY_KEY_REUSED");

    let missing = harness
        .http
        .post(harness.url("/api/v1/wallet/deposits"))
        .header("x-user-id", user.to_string())
        .json(&json!({"amount": {"amount": 0, "currency": "eur"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["code"], "VALIDATION_FAILED");
    assert!(
        problem["errors"]["Idempotency-Key"].is_string(),
        "{problem}"
    );
    assert!(
        problem["errors"]["amount.currency"].is_string(),
        "{problem}"
    );

    let anonymous = harness
        .http
        .get(harness.url("/api/v1/wallet"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, problem) = harness.get_wallet(Uuid::now_v7()).await;
    assert_eq!(status, 404);
    assert_eq!(problem["code"], "ACCOUNT_NOT_FOUND");
}

#[tokio::test]
async fn transactions_are_listed_newest_first_page_by_page() {
    let harness = Harness::start().await;
    let user = harness.new_customer().await;
    for n in 1..=3 {
        assert_eq!(
            harness
                .deposit(user, &format!("d{n}"), n * 100)
                .await
                .status(),
            201
        );
    }
    let order = Uuid::now_v7();
    harness.request(&charge("c1", order, user, 1_000)).await;
    harness.request(&refund("r1", order, user, 400)).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = harness.url("/api/v1/wallet/transactions?limit=2");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = harness
            .http
            .get(url)
            .header("x-user-id", user.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        assert!(items.len() <= 2);
        seen.extend(items);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "REFUND", "CHARGE", "DEPOSIT", "DEPOSIT", "DEPOSIT", "DEPOSIT"
        ]
    );
    let balances: Vec<i64> = seen
        .iter()
        .map(|t| t["balance_after"]["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(balances, [10_000, 9_600, 10_600, 10_300, 10_100, 10_000]);
    assert_eq!(seen[1]["order_id"], order.to_string());

    let charges_only: Value = harness
        .get_as(user, "/api/v1/wallet/transactions?kind=CHARGE")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(charges_only["items"].as_array().map(Vec::len), Some(1));

    let bad = harness
        .get_as(user, "/api/v1/wallet/transactions?cursor=nope&limit=x")
        .await;
    assert_eq!(bad.status(), 422);
    for (query, status) in [
        ("limit=0", 422),
        ("limit=101", 422),
        ("limit=5&limit=6", 400),
    ] {
        let refused = harness
            .get_as(user, &format!("/api/v1/wallet/transactions?{query}"))
            .await;
        assert_eq!(refused.status(), status, "{query}");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
}

#[tokio::test]
async fn charges_and_refunds_are_announced_on_the_events_topic() {
    let harness = Harness::start().await;
    let user = harness.new_customer().await;
    let order = Uuid::now_v7();
    let (_, charged) = harness
        .request(&charge("announce-c", order, user, 700))
        .await;
    let Outcome::Charged { payment_id, .. } = charged.outcome else {
        panic!("{charged:?}");
    };
    harness
        .request(&charge("announce-big", Uuid::now_v7(), user, 1_000_000))
        .await;
    harness
        .request(&refund("announce-r", order, user, 700))
        .await;

    let mut events = harness
        .kafka
        .subscribe(&Subscription::new(
            &harness.events_topic,
            testkit::brokers::unique_name("test-reader"),
        ))
        .await
        .unwrap();
    let mut types = Vec::new();
    while types.len() < 3 {
        let delivery = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("events not published")
            .expect("stream ended")
            .expect("delivery");
        assert_eq!(delivery.key.as_deref(), Some(user.to_string().as_str()));
        let body: Value = serde_json::from_slice(&delivery.payload).unwrap();
        let event_type = delivery
            .headers
            .get("ce_type")
            .unwrap_or_default()
            .to_owned();
        if event_type == "payment.charged" {
            assert_eq!(body["payment_id"], payment_id.to_string());
            assert_eq!(body["order_id"], order.to_string());
        }
        if event_type == "payment.declined" {
            assert_eq!(body["reason"], "INSUFFICIENT_FUNDS");
        }
        types.push(event_type);
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        types,
        ["payment.charged", "payment.declined", "payment.refunded"]
    );
}

#[tokio::test]
async fn the_grpc_service_answers_for_the_caller() {
    let harness = Harness::start().await;
    let user = harness.new_customer().await;
    let channel = testkit::grpc::channel(&harness.process.grpc_url()).await;
    let mut client = PaymentServiceClient::new(channel);
    let with_caller = |message| as_caller(user, message);

    let account = client
        .get_account(with_caller(pb::GetAccountRequest {}))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.owner_id, user.to_string());
    assert_eq!(account.balance.unwrap().amount, 10_000);

    let deposit = client
        .deposit(as_caller(
            user,
            pb::DepositRequest {
                amount: Some(proto::ferrishop::common::v1::Money {
                    amount: 500,
                    currency: "EUR".into(),
                }),
                idempotency_key: "grpc-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deposit.account.unwrap().balance.unwrap().amount, 10_500);
    assert_eq!(
        deposit.transaction.unwrap().balance_after.unwrap().amount,
        10_500
    );

    let page = client
        .list_transactions(as_caller(
            user,
            pb::ListTransactionsRequest {
                kind: pb::TransactionKind::Deposit.into(),
                page: Some(PageRequest {
                    limit: 1,
                    cursor: String::new(),
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.transactions.len(), 1);
    assert_eq!(page.transactions[0].idempotency_key, "grpc-1");
    assert!(!page.page.unwrap().next_cursor.is_empty());

    let anonymous = client
        .get_account(tonic::Request::new(pb::GetAccountRequest {}))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let frozen = harness.admin(user, "freeze").await;
    assert_eq!(frozen.status(), 200);
    let refused = client
        .deposit(as_caller(
            user,
            pb::DepositRequest {
                amount: Some(proto::ferrishop::common::v1::Money {
                    amount: 500,
                    currency: "EUR".into(),
                }),
                idempotency_key: "grpc-2".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused
            .metadata()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("ACCOUNT_FROZEN")
    );
}

#[tokio::test]
async fn closing_pays_out_to_the_payout_iban() {
    let harness = Harness::start().await;
    let user = harness.new_customer().await;
    let set_iban = |iban: &str| {
        harness
            .http
            .put(harness.url("/api/v1/wallet/payout-iban"))
            .header("x-user-id", user.to_string())
            .json(&json!({ "iban": iban }))
            .send()
    };
    let mistyped = set_iban("DE89 3704 0044 0532 0130 01").await.unwrap();
    assert_eq!(mistyped.status(), 422);
    // An order paid before the wallet closes, compensated after.
    let order = Uuid::now_v7();
    let (_, reply) = harness
        .request(&charge("paid-before-close", order, user, 3_000))
        .await;
    assert!(
        matches!(reply.outcome, Outcome::Charged { .. }),
        "{reply:?}"
    );

    let without_iban = harness.admin(user, "close").await;
    assert_eq!(without_iban.status(), 409);
    let problem: Value = without_iban.json().await.unwrap();
    assert_eq!(problem["code"], "PAYOUT_IBAN_REQUIRED");

    let set = set_iban("DE89 3704 0044 0532 0130 00").await.unwrap();
    assert_eq!(set.status(), 200);
    let closed = harness.admin(user, "close").await;
    assert_eq!(closed.status(), 200);
    let wallet: Value = closed.json().await.unwrap();
    assert_eq!(wallet["status"], "CLOSED");
    assert_eq!(wallet["balance"]["amount"], 0);

    let (_, reply) = harness
        .request(&charge("after-close", Uuid::now_v7(), user, 1))
        .await;
    assert!(matches!(
        reply.outcome,
        Outcome::Declined {
            reason: payment_contract::DeclineReason::AccountClosed,
            ..
        }
    ));

    // The refund is not refused: it goes straight out to the IBAN.
    let (_, reply) = harness
        .request(&refund("refund-after-close", order, user, 3_000))
        .await;
    let Outcome::Refunded { amount, .. } = &reply.outcome else {
        panic!("not refunded: {reply:?}");
    };
    assert_eq!(amount.amount, 3_000);
    assert_eq!(harness.balance(user).await, 0);
    let history: Value = harness
        .get_as(user, "/api/v1/wallet/transactions?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["PAYOUT", "REFUND"], "{history}");
}

/// A request from `user`, as the gateway forwards it.
fn as_caller<T>(user: Uuid, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-user-id", user.to_string().parse().unwrap());
    request
}
