//! Inbox: redelivered messages have one effect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{migrated_database, pool_with};
use std::sync::Arc;
use std::time::Duration;

use eventstore::{
    Inbox, InboxError, InboxOutcome, OutboxMessage, OutboxRelay, PublishError, Publisher,
    RelayConfig,
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error("downstream refused")]
    Refused,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

async fn setup(pool: &PgPool) {
    sqlx::query("CREATE TABLE wallet (id int PRIMARY KEY, balance bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO wallet VALUES (1, 0)")
        .execute(pool)
        .await
        .unwrap();
}

async fn balance(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT balance FROM wallet WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The effect under test: a non-idempotent increment.
async fn deposit(connection: &mut PgConnection, amount: i64) -> Result<i64, HandlerError> {
    let balance = sqlx::query_scalar(
        "UPDATE wallet SET balance = balance + $1 WHERE id = 1 RETURNING balance",
    )
    .bind(amount)
    .fetch_one(connection)
    .await?;
    Ok(balance)
}

#[tokio::test]
async fn the_same_message_delivered_three_times_has_one_effect() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    setup(&pool).await;
    let inbox = Inbox::new("payment.deposits");
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(
            inbox
                .handle(&pool, "msg-1", |connection| {
                    Box::pin(async move { deposit(connection, 10).await })
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        outcomes,
        vec![
            InboxOutcome::Processed(10),
            InboxOutcome::Duplicate,
            InboxOutcome::Duplicate
        ]
    );
    assert_eq!(balance(&pool).await, 10);
    // Another message is a new effect.
    inbox
        .handle(&pool, "msg-2", |connection| {
            Box::pin(async move { deposit(connection, 5).await })
        })
        .await
        .unwrap();
    assert_eq!(balance(&pool).await, 15);
}

/// Three deliveries racing each other (a redelivery while the first is
/// still being handled): still one effect.
#[tokio::test]
async fn concurrent_deliveries_have_one_effect() {
    let database = migrated_database().await;
    let pool = pool_with(&database, 6).await;
    setup(&pool).await;
    let inbox = Inbox::new("payment.deposits");
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let pool = pool.clone();
        let inbox = inbox.clone();
        deliveries.push(tokio::spawn(async move {
            inbox
                .handle(&pool, "msg-race", |connection| {
                    Box::pin(async move {
                        let balance = deposit(connection, 7).await?;
                        // Hold the transaction open so the others overlap it.
                        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                        Ok::<_, HandlerError>(balance)
                    })
                })
                .await
                .unwrap()
        }));
    }
    let mut processed = 0;
    for delivery in deliveries {
        if let InboxOutcome::Processed(_) = delivery.await.unwrap() {
            processed += 1;
        }
    }
    assert_eq!(processed, 1);
    assert_eq!(balance(&pool).await, 7);
}

/// A failing handler rolls back its effect and the inbox record together,
/// so the redelivery is processed.
#[tokio::test]
async fn a_failed_handling_is_retried_on_redelivery() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    setup(&pool).await;
    let inbox = Inbox::new("payment.deposits");
    let failed = inbox
        .handle(&pool, "msg-3", |connection| {
            Box::pin(async move {
                deposit(connection, 100).await?;
                Err::<i64, _>(HandlerError::Refused)
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(failed, InboxError::Handler(HandlerError::Refused)));
    assert_eq!(balance(&pool).await, 0, "the failed effect was rolled back");

    let retried = inbox
        .handle(&pool, "msg-3", |connection| {
            Box::pin(async move { deposit(connection, 100).await })
        })
        .await
        .unwrap();
    assert_eq!(retried, InboxOutcome::Processed(100));
    assert_eq!(balance(&pool).await, 100);
}

/// The record is per consumer: two consumers of one message each handle it
/// once.
#[tokio::test]
async fn each_consumer_handles_a_message_once() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    setup(&pool).await;
    for consumer in ["a", "b", "a", "b"] {
        Inbox::new(consumer)
            .handle(&pool, "shared-msg", |connection| {
                Box::pin(async move { deposit(connection, 1).await })
            })
            .await
            .unwrap();
    }
    assert_eq!(balance(&pool).await, 2);

    // The lower-level claim composes with a caller-managed transaction.
    let inbox = Inbox::new("c");
    let mut transaction = pool.begin().await.unwrap();
    assert!(inbox.claim(&mut transaction, "shared-msg").await.unwrap());
    assert!(!inbox.claim(&mut transaction, "shared-msg").await.unwrap());
    transaction.rollback().await.unwrap();
    let mut transaction = pool.begin().await.unwrap();
    assert!(
        inbox.claim(&mut transaction, "shared-msg").await.unwrap(),
        "a rolled-back claim is forgotten"
    );
    transaction.commit().await.unwrap();
}

/// The relay's housekeeping forgets records past the inbox retention, of
/// every consumer, and keeps the younger ones.
#[tokio::test]
async fn records_past_the_retention_are_purged_by_the_relay() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    for (consumer, message) in [("a", "old-1"), ("b", "old-2"), ("a", "recent")] {
        let mut transaction = pool.begin().await.unwrap();
        assert!(
            Inbox::new(consumer)
                .claim(&mut transaction, message)
                .await
                .unwrap()
        );
        transaction.commit().await.unwrap();
    }
    sqlx::query(
        "UPDATE inbox SET processed_at = now() - interval '15 days' WHERE message_id LIKE 'old-%'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NothingToPublish),
        RelayConfig {
            idle_interval: Duration::from_millis(10),
            ..RelayConfig::default()
        },
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { relay.run(cancel).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let remaining = loop {
        let remaining: Vec<String> =
            sqlx::query_scalar("SELECT message_id FROM inbox ORDER BY message_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        if remaining.len() < 3 || tokio::time::Instant::now() > deadline {
            break remaining;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cancel.cancel();
    running.await.unwrap();
    assert_eq!(remaining, ["recent"]);

    // A forgotten message is handled again; a remembered one is not.
    let mut transaction = pool.begin().await.unwrap();
    assert!(
        Inbox::new("a")
            .claim(&mut transaction, "old-1")
            .await
            .unwrap()
    );
    assert!(
        !Inbox::new("a")
            .claim(&mut transaction, "recent")
            .await
            .unwrap()
    );
}

/// A relay over an empty outbox.
struct NothingToPublish;

#[async_trait::async_trait]
impl Publisher for NothingToPublish {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        Err(PublishError::Rejected(format!("unexpected {}", message.id)))
    }
}
