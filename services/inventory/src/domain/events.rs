//! Integration events: what the rest of the shop learns about stock.
//!
//! Published on the service's Kafka topic through the transactional outbox,
//! keyed by product id, so a consumer sees each product's changes in order.
//! One event per product per change: a reservation of three products is three
//! `stock_reserved` events sharing a `reservation_id`. Each event carries the
//! product's stock after the change, so a consumer keeping a copy of stock
//! levels never needs to call back.
//!
//! Payloads are JSON with snake_case fields; `type` (the CloudEvents type) is
//! one of the names of [`InventoryEvent::event_type`]. Adding a field is
//! compatible; renaming or removing one needs a new event type.

use serde::Serialize;

use super::product::{ProductId, Sku};
use super::reservation::{ReservationId, ReservationStatus};
use super::stock::{Quantity, Stock};

/// An event announcing a stock change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryEvent {
    StockReserved(StockReserved),
    StockReleased(StockReleased),
    LowStock(LowStock),
}

impl InventoryEvent {
    /// The CloudEvents `type`.
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::StockReserved(_) => "inventory.stock_reserved",
            Self::StockReleased(_) => "inventory.stock_released",
            Self::LowStock(_) => "inventory.low_stock",
        }
    }

    /// The product the event is about: the message key.
    pub const fn product_id(&self) -> ProductId {
        match self {
            Self::StockReserved(event) => event.product_id,
            Self::StockReleased(event) => event.product_id,
            Self::LowStock(event) => event.product_id,
        }
    }
}

/// Stock counters after a change, as carried by events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockSnapshot {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl From<Stock> for StockSnapshot {
    fn from(stock: Stock) -> Self {
        Self {
            on_hand: stock.on_hand(),
            reserved: stock.reserved(),
            available: stock.available(),
        }
    }
}

/// Units of a product were reserved for a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockReserved {
    pub reservation_id: ReservationId,
    pub product_id: ProductId,
    #[serde(serialize_with = "quantity")]
    pub quantity: Quantity,
    pub stock: StockSnapshot,
}

/// Why units came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// A held reservation was released (the saga compensated).
    Released,
    /// A held reservation outlived its TTL.
    Expired,
    /// A committed reservation was released: sold units returned to stock.
    Returned,
}

impl ReleaseReason {
    /// Why a reservation moving to `to` gives units back.
    pub const fn of(from: ReservationStatus, to: ReservationStatus) -> Self {
        match (from, to) {
            (ReservationStatus::Committed, _) => Self::Returned,
            (_, ReservationStatus::Expired) => Self::Expired,
            _ => Self::Released,
        }
    }
}

/// Units of a product reserved or sold earlier came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockReleased {
    pub reservation_id: ReservationId,
    pub product_id: ProductId,
    #[serde(serialize_with = "quantity")]
    pub quantity: Quantity,
    pub reason: ReleaseReason,
    pub stock: StockSnapshot,
}

/// A product's available stock fell below its reorder point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LowStock {
    pub product_id: ProductId,
    #[serde(serialize_with = "sku")]
    pub sku: Sku,
    pub reorder_point: i64,
    pub stock: StockSnapshot,
}

fn quantity<S: serde::Serializer>(quantity: &Quantity, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u32(quantity.get())
}

fn sku<S: serde::Serializer>(sku: &Sku, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(sku.as_str())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn payloads_are_flat_snake_case_json() {
        let event = StockReleased {
            reservation_id: ReservationId::from_uuid(Uuid::from_u128(1)),
            product_id: ProductId::from_uuid(Uuid::from_u128(2)),
            quantity: Quantity::new(3).unwrap(),
            reason: ReleaseReason::Expired,
            stock: Stock::new(10, 4).unwrap().into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "reservation_id": "00000000-0000-0000-0000-000000000001",
                "product_id": "00000000-0000-0000-0000-000000000002",
                "quantity": 3,
                "reason": "expired",
                "stock": {"on_hand": 10, "reserved": 4, "available": 6},
            })
        );
        assert_eq!(
            InventoryEvent::StockReleased(event).event_type(),
            "inventory.stock_released"
        );
    }

    #[test]
    fn release_reasons_follow_the_transition() {
        use ReservationStatus as S;
        assert_eq!(
            ReleaseReason::of(S::Held, S::Released),
            ReleaseReason::Released
        );
        assert_eq!(
            ReleaseReason::of(S::Held, S::Expired),
            ReleaseReason::Expired
        );
        assert_eq!(
            ReleaseReason::of(S::Committed, S::Released),
            ReleaseReason::Returned
        );
    }
}
