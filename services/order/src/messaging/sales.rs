//! The integration events the `product_sales` read model is built from
//! (Kafka): `order.confirmed` and `order.cancelled`, from every configured
//! topic (`PRODUCT_SALES_TOPICS`, this service's own events topic by
//! default). Other event types are acknowledged and ignored.
//!
//! Kafka delivers at least once (a rebalance, a crash before the offset
//! commit); each message is applied in one transaction with its inbox record
//! (by `ce_id`), so a redelivery changes nothing. While the database cannot
//! be reached, an event is held until it can.

use chrono::{DateTime, Utc};
use eventstore::{Inbox, InboxError, InboxOutcome};
use integration::database_nack;
use messaging::{Broker, Nack, ReceivedMessage, Subscription, envelope};
use platform::db::Database;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::contract::{LineV1, OrderCancelledV1, OrderConfirmedV1, types};
use crate::projections::product_sales::{self, Movement};

/// Messages handled at once.
const CONCURRENCY: usize = 4;

/// Consumes `subscription` until `cancel` fires.
pub async fn consume(
    database: Database,
    broker: Broker,
    subscription: Subscription,
    cancel: CancellationToken,
) {
    let Some(deliveries) = super::subscribe(&database, &broker, &subscription, &cancel).await
    else {
        return;
    };
    let pool = database.pool().clone();
    deliveries
        .consume(CONCURRENCY, cancel, |message| {
            let pool = pool.clone();
            async move { handle(&pool, &message).await }
        })
        .await;
}

async fn handle(pool: &PgPool, message: &ReceivedMessage) -> Result<(), Nack> {
    let (movement, at, lines) = match message.headers.get(envelope::TYPE) {
        Some(types::CONFIRMED) => {
            let event: OrderConfirmedV1 = decode(message)?;
            (Movement::Sold, event.confirmed_at, event.lines)
        }
        Some(types::CANCELLED) => {
            let event: OrderCancelledV1 = decode(message)?;
            (Movement::Cancelled, event.cancelled_at, event.lines)
        }
        _ => return Ok(()),
    };
    let Some(message_id) = message.message_id() else {
        return Err(Nack::reject(
            "an event without ce_id cannot be deduplicated",
        ));
    };
    apply(pool, message_id, movement, at, lines)
        .await
        .map_err(|error| match error {
            InboxError::Handler(error) | InboxError::Database(error) => database_nack(&error),
        })
}

async fn apply(
    pool: &PgPool,
    message_id: &str,
    movement: Movement,
    at: DateTime<Utc>,
    lines: Vec<LineV1>,
) -> Result<(), InboxError<sqlx::Error>> {
    let outcome = Inbox::new(product_sales::CONSUMER)
        .handle(pool, message_id, |connection| {
            Box::pin(async move {
                product_sales::record(connection, movement, at.date_naive(), &lines).await
            })
        })
        .await?;
    if outcome == InboxOutcome::Duplicate {
        tracing::debug!(message_id, "duplicate sales event skipped");
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(message: &ReceivedMessage) -> Result<T, Nack> {
    serde_json::from_slice(&message.payload)
        .map_err(|error| Nack::reject(format!("undecodable order event: {error}")))
}
