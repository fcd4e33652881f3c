//! Integration events reach Kafka: the outbox rows written with each stock
//! change are relayed to the events topic (`ferrishop.inventory.events`
//! unless `INVENTORY_EVENTS_TOPIC` says otherwise; each test its own),
//! keyed by product id, as CloudEvents whose `ce_id` is stable across
//! redeliveries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{line, start};
use futures::StreamExt;
use messaging::{Messaging, MessagingArgs, Subscription};
use uuid::Uuid;

#[tokio::test]
async fn stock_changes_are_published_to_kafka_keyed_by_product() {
    let harness = start().await;
    let product = harness.stocked(3).await;
    let reservation_id = Uuid::now_v7().to_string();
    harness
        .reserve(&reservation_id, vec![line(&product.id, 2)])
        .await
        .unwrap();
    harness.release(&reservation_id).await.unwrap();

    let brokers = Messaging::new(&MessagingArgs::default(), "inventory-tests").unwrap();
    let group = format!("inventory-tests-{}", Uuid::now_v7().simple());
    let mut deliveries = brokers
        .events()
        .subscribe(&Subscription::new(&harness.events_topic, group))
        .await
        .unwrap_or_else(|error| {
            panic!("Kafka is unreachable ({error}); start it with `make infra-up`")
        });

    // The topic is this test's own: every message on it is this product's.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(remaining, deliveries.next())
            .await
            .expect("the events did not reach Kafka within 60 s")
            .expect("the subscription ended")
            .expect("the subscription failed");
        assert_eq!(delivery.key.as_deref(), Some(product.id.as_str()));
        received.push(delivery.message().clone());
        delivery.ack().await.unwrap();
    }

    let types: Vec<_> = received
        .iter()
        .map(|message| {
            message
                .headers
                .get("ce_type")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["inventory.stock_reserved", "inventory.stock_released"],
        "in order"
    );
    let outbox_ids: Vec<String> = sqlx::query_scalar(
        "SELECT message_id::text FROM outbox WHERE message_key = $1 ORDER BY sequence",
    )
    .bind(&product.id)
    .fetch_all(&harness.db.pool)
    .await
    .unwrap();
    for (message, outbox_id) in received.iter().zip(&outbox_ids) {
        assert_eq!(message.headers.get("ce_id"), Some(outbox_id.as_str()));
        assert_eq!(
            message.headers.get("ce_source"),
            Some("/ferrishop/inventory")
        );
        assert_eq!(message.headers.get("ce_subject"), Some(product.id.as_str()));
    }
    let reserved: serde_json::Value = serde_json::from_slice(&received[0].payload).unwrap();
    assert_eq!(reserved["reservation_id"], reservation_id);
    assert_eq!(reserved["quantity"], 2);
    assert_eq!(reserved["stock"]["available"], 1);

    // And the relay marked them published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE message_key = $1 AND published_at IS NULL",
        )
        .bind(&product.id)
        .fetch_one(&harness.db.pool)
        .await
        .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} rows still pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deliveries.drain().await;
    harness.assert_invariants().await;
}
