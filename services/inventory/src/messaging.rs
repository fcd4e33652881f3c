//! Integration events on the wire: the outbox messages the relay publishes
//! to Kafka.
//!
//! Each [`InventoryEvent`] becomes one message on [`TOPIC`], keyed by product
//! id (Kafka keeps one key's messages in order, so a consumer sees a product's
//! changes in the order they were made), with the CloudEvents 1.0 attributes
//! in binary mode — one header per attribute, the payload plain JSON — and the
//! W3C trace context of the request that caused it, so the trace continues
//! through the broker. The message id doubles as `ce_id`: consumers
//! deduplicate redeliveries by it.

use std::collections::BTreeMap;

use eventstore::OutboxMessage;

use crate::domain::events::InventoryEvent;

/// The service's integration event topic.
pub const TOPIC: &str = "ferrishop.inventory.events";

/// CloudEvents `source` of every event this service emits.
pub const SOURCE: &str = "/ferrishop/inventory";

/// The outbox message announcing `event`.
pub fn outbox_message(event: &InventoryEvent) -> Result<OutboxMessage, serde_json::Error> {
    let payload = match event {
        InventoryEvent::StockReserved(body) => serde_json::to_vec(body)?,
        InventoryEvent::StockReleased(body) => serde_json::to_vec(body)?,
        InventoryEvent::LowStock(body) => serde_json::to_vec(body)?,
    };
    let key = event.product_id().to_string();
    let mut message = OutboxMessage::new(TOPIC, key.clone(), payload);
    let time = message
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    message.headers = BTreeMap::from([
        ("ce_specversion".to_owned(), "1.0".to_owned()),
        ("ce_id".to_owned(), message.id.to_string()),
        ("ce_type".to_owned(), event.event_type().to_owned()),
        ("ce_source".to_owned(), SOURCE.to_owned()),
        ("ce_subject".to_owned(), key),
        ("ce_time".to_owned(), time),
        ("content-type".to_owned(), "application/json".to_owned()),
    ]);
    let mut trace = http::HeaderMap::new();
    platform::propagation::inject_current(&mut trace);
    for (name, value) in &trace {
        if let Ok(value) = value.to_str() {
            message
                .headers
                .insert(name.as_str().to_owned(), value.to_owned());
        }
    }
    Ok(message)
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
        assert_eq!(message.headers["ce_subject"], product_id.to_string());
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["reorder_point"], 10);
        assert_eq!(payload["sku"], "KB-1");
    }
}
