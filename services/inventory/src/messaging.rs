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

use eventstore::OutboxMessage;
use integration::EventAttributes;
use messaging::Broker;
use platform::db::Database;
use tokio_util::sync::CancellationToken;

use crate::domain::events::InventoryEvent;

/// The service's integration event topic, unless `INVENTORY_EVENTS_TOPIC`
/// names another.
pub const TOPIC: &str = "ferrishop.inventory.events";

/// CloudEvents `source` of every event this service emits.
pub const SOURCE: &str = "/ferrishop/inventory";

/// The outbox message announcing `event`.
pub fn outbox_message(
    event: &InventoryEvent,
    topic: &str,
) -> Result<OutboxMessage, serde_json::Error> {
    let key = event.product_id().to_string();
    let attributes = EventAttributes {
        topic,
        source: SOURCE,
        event_type: event.event_type(),
        key: &key,
        subject: &key,
        time: None,
    };
    match event {
        InventoryEvent::StockReserved(body) => integration::outbox_message(&attributes, body),
        InventoryEvent::StockReleased(body) => integration::outbox_message(&attributes, body),
        InventoryEvent::LowStock(body) => integration::outbox_message(&attributes, body),
    }
}

/// Relays the outbox to `broker`, whose `topic` it makes sure of, until
/// `cancel` fires.
pub async fn relay(database: Database, broker: Broker, topic: String, cancel: CancellationToken) {
    integration::relay(database, broker, topic, cancel).await;
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
        let message = outbox_message(&event, TOPIC).unwrap();
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
}
