//! The order service's status notifications, as the gateway reads them.
//!
//! Every status an order reaches is announced on the NATS subject
//! `<prefix>.<order id>.status` ([`status_subject`]; the prefix is
//! `ORDER_STATUS_SUBJECT_PREFIX`, `ferrishop.orders` by default) as a
//! CloudEvent of type [`STATUS_CHANGED`] whose JSON body is a
//! [`StatusChanged`]. The gateway subscribes to one order's subject for its
//! Server-Sent Events. Both sides compile against this crate, so the
//! subject's shape and the payload cannot drift apart unnoticed; it holds
//! serde types and functions only, no I/O.
//!
//! Fields are only ever added.

use std::fmt::Display;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The CloudEvents `ce_type` of a status notification.
pub const STATUS_CHANGED: &str = "order.status_changed";

/// The subject an order's status changes are announced on.
pub fn status_subject(prefix: &str, order_id: impl Display) -> String {
    format!("{prefix}.{order_id}.status")
}

/// [`status_subject`] as metric labels name it: one series for every order,
/// not one each.
pub fn status_subject_template(prefix: &str) -> String {
    status_subject(prefix, "{order_id}")
}

/// The body of a [`STATUS_CHANGED`] notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub order_id: Uuid,
    /// `PENDING`, `CONFIRMED`, `REJECTED` or `CANCELLED`.
    pub status: String,
    /// Why a REJECTED order was rejected (`INSUFFICIENT_STOCK`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_order_or_stand_for_every_order() {
        let id = Uuid::from_u128(1);
        assert_eq!(
            status_subject("ferrishop.orders", id),
            "ferrishop.orders.00000000-0000-0000-0000-000000000001.status"
        );
        assert_eq!(
            status_subject_template("shop.orders"),
            "shop.orders.{order_id}.status"
        );
    }

    #[test]
    fn the_payload_is_the_json_of_the_contract() {
        let changed = StatusChanged {
            order_id: Uuid::from_u128(2),
            status: "REJECTED".into(),
            failure_reason: Some("INSUFFICIENT_STOCK".into()),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let json = serde_json::to_value(&changed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "order_id": "00000000-0000-0000-0000-000000000002",
                "status": "REJECTED",
                "failure_reason": "INSUFFICIENT_STOCK",
                "occurred_at": "2023-11-14T22:13:20Z",
            })
        );
        assert_eq!(
            serde_json::from_value::<StatusChanged>(json).unwrap(),
            changed
        );
        let confirmed = serde_json::json!({
            "order_id": "00000000-0000-0000-0000-000000000002",
            "status": "CONFIRMED",
            "occurred_at": "2023-11-14T22:13:20Z",
        });
        let decoded: StatusChanged = serde_json::from_value(confirmed).unwrap();
        assert_eq!(decoded.failure_reason, None);
    }
}
