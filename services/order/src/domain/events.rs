//! The events of an order's stream (`order-<id>`), as stored.
//!
//! Each is a past-tense fact with the time it happened. The stored
//! `event_type` is the variant's name (`OrderPlaced`, ...), the payload the
//! inner struct as JSON; fields are only ever added (with defaults), so every
//! event ever written still decodes — which the projections rely on when they
//! are rebuilt from the whole log.

use chrono::{DateTime, Utc};
use eventstore::{DomainEvent, EventDecodeError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{CustomerId, OrderId, PaymentId, SagaId};
use super::items::OrderLines;
use super::money::Money;
use super::reason::FailureReason;

/// A customer placed an order, priced from the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: OrderLines,
    /// The sum of the line totals: the amount to charge.
    pub total: Money,
    pub at: DateTime<Utc>,
}

/// The inventory holds the order's units (reservation id = the order id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub at: DateTime<Utc>,
}

/// The customer's wallet was charged the order's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: PaymentId,
    pub at: DateTime<Utc>,
}

/// Stock committed and paid: the order is CONFIRMED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub at: DateTime<Utc>,
}

/// The saga failed and was compensated: the order is REJECTED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub reason: FailureReason,
    pub at: DateTime<Utc>,
}

/// The customer asked to cancel a CONFIRMED order; saga `saga_id` refunds
/// and returns the stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRequested {
    pub saga_id: SagaId,
    pub at: DateTime<Utc>,
}

/// The cancellation could not be carried out (the refund was refused); the
/// order stays CONFIRMED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRejected {
    pub reason: FailureReason,
    pub at: DateTime<Utc>,
}

/// Refunded and stock returned: the order is CANCELLED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub at: DateTime<Utc>,
}

/// Everything that can happen to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    StockReserved(StockReserved),
    PaymentCompleted(PaymentCompleted),
    Confirmed(OrderConfirmed),
    Rejected(OrderRejected),
    CancellationRequested(OrderCancellationRequested),
    CancellationRejected(OrderCancellationRejected),
    Cancelled(OrderCancelled),
}

impl OrderEvent {
    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Placed(e) => e.at,
            Self::StockReserved(e) => e.at,
            Self::PaymentCompleted(e) => e.at,
            Self::Confirmed(e) => e.at,
            Self::Rejected(e) => e.at,
            Self::CancellationRequested(e) => e.at,
            Self::CancellationRejected(e) => e.at,
            Self::Cancelled(e) => e.at,
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed(_) => "OrderPlaced",
            Self::StockReserved(_) => "StockReserved",
            Self::PaymentCompleted(_) => "PaymentCompleted",
            Self::Confirmed(_) => "OrderConfirmed",
            Self::Rejected(_) => "OrderRejected",
            Self::CancellationRequested(_) => "OrderCancellationRequested",
            Self::CancellationRejected(_) => "OrderCancellationRejected",
            Self::Cancelled(_) => "OrderCancelled",
        }
    }

    fn to_payload(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Placed(e) => serde_json::to_value(e),
            Self::StockReserved(e) => serde_json::to_value(e),
            Self::PaymentCompleted(e) => serde_json::to_value(e),
            Self::Confirmed(e) => serde_json::to_value(e),
            Self::Rejected(e) => serde_json::to_value(e),
            Self::CancellationRequested(e) => serde_json::to_value(e),
            Self::CancellationRejected(e) => serde_json::to_value(e),
            Self::Cancelled(e) => serde_json::to_value(e),
        }
    }

    fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: Value,
    ) -> Result<Self, EventDecodeError> {
        if schema_version != 1 {
            return Err(EventDecodeError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        Ok(match event_type {
            "OrderPlaced" => Self::Placed(serde_json::from_value(payload)?),
            "StockReserved" => Self::StockReserved(serde_json::from_value(payload)?),
            "PaymentCompleted" => Self::PaymentCompleted(serde_json::from_value(payload)?),
            "OrderConfirmed" => Self::Confirmed(serde_json::from_value(payload)?),
            "OrderRejected" => Self::Rejected(serde_json::from_value(payload)?),
            "OrderCancellationRequested" => {
                Self::CancellationRequested(serde_json::from_value(payload)?)
            }
            "OrderCancellationRejected" => {
                Self::CancellationRejected(serde_json::from_value(payload)?)
            }
            "OrderCancelled" => Self::Cancelled(serde_json::from_value(payload)?),
            other => return Err(EventDecodeError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::ids::{ProductId, SagaId};
    use crate::domain::items::tests::offer;
    use crate::domain::items::{OrderItem, OrderItems, Quantity};

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        let at = Utc.timestamp_opt(1_750_000_000, 0).single().unwrap();
        let product = ProductId::from_uuid(Uuid::from_u128(7));
        let lines = OrderItems::parse(vec![OrderItem {
            product_id: product,
            quantity: Quantity::new(2).unwrap(),
        }])
        .unwrap()
        .price(&[offer(product, 999)])
        .unwrap();
        let reason = FailureReason::parse("INSUFFICIENT_FUNDS").unwrap();
        let events = [
            OrderEvent::Placed(OrderPlaced {
                order_id: OrderId::from_uuid(Uuid::from_u128(1)),
                customer_id: CustomerId::from_uuid(Uuid::from_u128(2)),
                total: lines.total(),
                lines,
                at,
            }),
            OrderEvent::StockReserved(StockReserved { at }),
            OrderEvent::PaymentCompleted(PaymentCompleted {
                payment_id: PaymentId::from_uuid(Uuid::from_u128(3)),
                at,
            }),
            OrderEvent::Confirmed(OrderConfirmed { at }),
            OrderEvent::Rejected(OrderRejected {
                reason: reason.clone(),
                at,
            }),
            OrderEvent::CancellationRequested(OrderCancellationRequested {
                saga_id: SagaId::from_uuid(Uuid::from_u128(4)),
                at,
            }),
            OrderEvent::CancellationRejected(OrderCancellationRejected { reason, at }),
            OrderEvent::Cancelled(OrderCancelled { at }),
        ];
        for event in events {
            let payload = event.to_payload().unwrap();
            let decoded = OrderEvent::from_payload(event.event_type(), 1, payload.clone()).unwrap();
            assert_eq!(decoded, event);
            assert!(matches!(
                OrderEvent::from_payload(event.event_type(), 2, payload),
                Err(EventDecodeError::UnsupportedSchemaVersion { .. })
            ));
        }
        assert!(matches!(
            OrderEvent::from_payload("OrderExploded", 1, Value::Null),
            Err(EventDecodeError::UnknownType(_))
        ));
    }
}
