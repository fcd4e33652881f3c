//! Integration events on the wire: the outbox messages announcing stock
//! changes, and the relay that moves them to Kafka.
//!
//! Events are never published from a use case. A reservation writes its
//! `inventory.stock_reserved` messages into the outbox in the reservation's
//! own transaction, and the relay publishes committed rows afterwards, so an
//! event goes out if and only if the stock changed — also when Kafka is down
//! at that moment: the row waits. (That is also why the broker is not a
//! readiness check: stock can be reserved while Kafka is away.)
//!
//! Each [`InventoryEvent`] becomes one message on [`TOPIC`], keyed by product
//! id, so a consumer sees one product's changes in the order they were made.
//! Messages are CloudEvents 1.0 in binary mode — one header per attribute,
//! the payload plain JSON — carrying the W3C trace context of the request
//! that caused them, so the trace continues through the broker. The outbox
//! message id doubles as `ce_id`: consumers deduplicate redeliveries by it.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{OutboxMessage, OutboxRelay, PublishError, Publisher, RelayConfig};
use messaging::{Broker, DestinationSpec, MessagingError, envelope};
use platform::db::Database;
use tokio_util::sync::CancellationToken;

use crate::domain::events::InventoryEvent;

/// The service's integration event topic.
pub const TOPIC: &str = "ferrishop.inventory.events";

/// CloudEvents `source` of every event this service emits.
pub const SOURCE: &str = "/ferrishop/inventory";

/// The outbox message announcing `event`.
pub fn outbox_message(event: &InventoryEvent) -> Result<OutboxMessage, serde_json::Error> {
    let key = event.product_id().to_string();
    let message = match event {
        InventoryEvent::StockReserved(body) => OutboxMessage::json(TOPIC, &key, body)?,
        InventoryEvent::StockReleased(body) => OutboxMessage::json(TOPIC, &key, body)?,
        InventoryEvent::LowStock(body) => OutboxMessage::json(TOPIC, &key, body)?,
    };
    let id = message.id.to_string();
    let time = envelope::format_time(message.created_at);
    let mut message = message
        .with_header(envelope::SPEC_VERSION, envelope::SPEC_VERSION_1_0)
        .with_header(envelope::ID, id)
        .with_header(envelope::TYPE, event.event_type())
        .with_header(envelope::SOURCE, SOURCE)
        .with_header(envelope::SUBJECT, &key)
        .with_header(envelope::TIME, time)
        .with_header(envelope::PARTITION_KEY, &key);
    let mut trace = http::HeaderMap::new();
    platform::propagation::inject_current(&mut trace);
    for (name, value) in &trace {
        if let Ok(value) = value.to_str() {
            message = message.with_header(name.as_str(), value);
        }
    }
    Ok(message)
}

/// Publishes outbox rows through a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerPublisher {
    broker: Broker,
}

#[async_trait::async_trait]
impl Publisher for BrokerPublisher {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        self.broker
            .publish_parts(
                &message.destination,
                Some(&message.key),
                message.headers.clone(),
                message.payload.clone(),
            )
            .await
            .map(drop)
            .map_err(classify)
    }
}

/// Only a message that can never be sent is parked; anything that might be
/// the broker's passing trouble is retried (and holds back its key's later
/// messages, keeping their order).
fn classify(error: MessagingError) -> PublishError {
    match error {
        MessagingError::TooLarge { .. } | MessagingError::Invalid { .. } => {
            PublishError::Rejected(error.to_string())
        }
        other => PublishError::Unavailable(other.to_string()),
    }
}

/// Relays the outbox to `broker` until `cancel` fires: waits for the migrated
/// schema, makes sure the topic exists, then publishes.
pub async fn relay(database: Database, broker: Broker, cancel: CancellationToken) {
    tokio::select! {
        () = database.migrated() => {}
        () = cancel.cancelled() => return,
    }
    let spec = DestinationSpec::new(TOPIC);
    let mut delay = Duration::from_millis(250);
    while let Err(error) = broker.ensure_destination(&spec).await {
        tracing::warn!(topic = TOPIC, %error, retry_in_ms = delay.as_millis() as u64, "cannot create the events topic yet");
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let publisher = Arc::new(BrokerPublisher { broker });
    OutboxRelay::new(database.pool().clone(), publisher, RelayConfig::default())
        .run(cancel)
        .await;
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::events::{LowStock, StockSnapshot};
    use crate::domain::product::{ProductId, Sku};
    use crate::domain::stock::Stock;

    #[test]
    fn events_are_cloud_events_keyed_by_product() {
        let product_id = ProductId::from_uuid(Uuid::from_u128(7));
        let event = InventoryEvent::LowStock(LowStock {
            product_id,
            sku: Sku::parse("KB-1").unwrap(),
            reorder_point: 10,
            stock: StockSnapshot::from(Stock::new(9, 0).unwrap()),
        });
        let message = outbox_message(&event).unwrap();
        assert_eq!(message.destination, TOPIC);
        assert_eq!(message.key, product_id.to_string());
        assert_eq!(message.headers["ce_type"], "inventory.low_stock");
        assert_eq!(message.headers["ce_id"], message.id.to_string());
        assert_eq!(message.headers["ce_source"], SOURCE);
        assert_eq!(message.headers["ce_subject"], product_id.to_string());
        assert_eq!(message.headers["ce_partitionkey"], product_id.to_string());
        assert_eq!(message.headers["content-type"], "application/json");
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["reorder_point"], 10);
        assert_eq!(payload["sku"], "KB-1");
    }

    #[test]
    fn only_unsendable_messages_are_parked() {
        let system = messaging::MessagingSystem::Kafka;
        let too_large = MessagingError::TooLarge {
            system,
            destination: TOPIC.into(),
            size: 2,
            limit: 1,
        };
        assert!(matches!(classify(too_large), PublishError::Rejected(_)));
        let unconfirmed = MessagingError::NotConfirmed {
            system,
            destination: TOPIC.into(),
            reason: "broker went away".into(),
        };
        assert!(matches!(
            classify(unconfirmed),
            PublishError::Unavailable(_)
        ));
    }
}
