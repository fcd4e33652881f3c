//! What this service tells the world, on the wire.
//!
//! - **Integration events** on the Kafka topic `ferrishop.order.events`
//!   (`ORDER_EVENTS_TOPIC`), keyed by order id, as binary-mode CloudEvents
//!   whose `ce_id` is the message id consumers deduplicate by:
//!   [`OrderPlacedV1`] (`order.placed`), [`OrderConfirmedV1`]
//!   (`order.confirmed`), [`OrderRejectedV1`] (`order.rejected`) and
//!   [`OrderCancelledV1`] (`order.cancelled`). Confirmed and cancelled
//!   events carry the lines, so a consumer (this service's own
//!   `product_sales` read model, a warehouse, an analytics job) needs nothing
//!   else to account for a sale or its reversal.
//! - **Status notifications** on the NATS subject
//!   `ferrishop.orders.<order id>.status` (`ORDER_STATUS_SUBJECT_PREFIX`):
//!   `order_contract::StatusChanged` (`order.status_changed`), one per
//!   status an order reaches, which the gateway turns into Server-Sent
//!   Events; that part of the contract is the `order-contract` crate, which
//!   the gateway compiles against too.
//!
//! Money is the platform's `{"amount": <minor units>, "currency": "EUR"}`,
//! times are RFC 3339 UTC. Fields are only ever added.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{CustomerId, OrderId, PaymentId, ProductId};
use crate::domain::items::{OrderLine, OrderLines};
use crate::domain::money::Money;

/// CloudEvents `ce_type` values.
pub mod types {
    pub const PLACED: &str = "order.placed";
    pub const CONFIRMED: &str = "order.confirmed";
    pub const REJECTED: &str = "order.rejected";
    pub const CANCELLED: &str = "order.cancelled";
}

/// The CloudEvents `source` of every message this service sends.
pub const SOURCE: &str = "/ferrishop/order";

/// One line of an order as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineV1 {
    pub product_id: ProductId,
    pub product_name: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

impl LineV1 {
    pub fn of(line: &OrderLine) -> Self {
        Self {
            product_id: line.product_id,
            product_name: line.product_name.clone(),
            quantity: line.quantity.get(),
            unit_price: line.unit_price,
            // Checked when the lines were built; the price is the fallback
            // only in name.
            line_total: line.line_total().unwrap_or(line.unit_price),
        }
    }

    pub fn all(lines: &OrderLines) -> Vec<Self> {
        lines.lines().iter().map(Self::of).collect()
    }
}

/// `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlacedV1 {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<LineV1>,
    pub total: Money,
    pub placed_at: DateTime<Utc>,
}

/// `order.confirmed`: a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmedV1 {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<LineV1>,
    pub total: Money,
    pub payment_id: Option<PaymentId>,
    pub confirmed_at: DateTime<Utc>,
}

/// `order.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejectedV1 {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub reason: String,
    pub rejected_at: DateTime<Utc>,
}

/// `order.cancelled`: a sale reversed (refunded, stock returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelledV1 {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<LineV1>,
    pub total: Money,
    pub cancelled_at: DateTime<Utc>,
}
