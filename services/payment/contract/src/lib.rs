//! The payment service's message contract.
//!
//! The order saga charges and refunds wallets by sending **commands** to the
//! payment service over RabbitMQ and waiting for a **reply**; every service
//! may listen to the **integration events** the payment service publishes on
//! Kafka. Both sides of those conversations compile against the types in this
//! crate, so a field renamed on one side is a compile error on the other
//! rather than a saga stuck waiting for a reply it cannot decode. The crate is
//! deliberately tiny (serde types and constants, no I/O, no dependency on the
//! payment service itself): depending on it costs a consumer nothing.
//!
//! # Commands
//!
//! A command is a message on the [`COMMANDS_EXCHANGE`] (a durable RabbitMQ
//! topic exchange; the routing key is free, the payment service binds `#`):
//!
//! | header | value |
//! |---|---|
//! | `ce_type` | [`types::CHARGE`] or [`types::REFUND`] |
//! | `content-type` | `application/json` |
//! | [`headers::REPLY_TO`] | optional: the exchange the reply is published to |
//! | [`headers::IDEMPOTENCY_KEY`], `saga-*`, [`headers::CORRELATION_ID`] | optional: copied onto the reply |
//!
//! and a JSON body, [`ChargePayment`] or [`RefundPayment`]:
//!
//! ```json
//! {"command_id": "0193…:charge_payment", "order_id": "0193…", "customer_id": "0193…",
//!  "amount": {"amount": 2599, "currency": "EUR"}}
//! ```
//!
//! `customer_id` is the user id of the wallet's owner (one wallet per user).
//! [`PaymentCommand::headers`] and [`PaymentCommand::to_json`] give a
//! command's headers and body, e.g. for a saga `Command` sent through the
//! outbox.
//!
//! **Idempotency.** `command_id` identifies the *request*, not the message:
//! send every retry of one saga step with the same `command_id` (the saga
//! crate's step idempotency key `{saga_id}:{step}` is a good one, a UUID
//! works too). However often a command arrives — redelivered by the broker,
//! re-sent after a timeout, across restarts of either side — money moves at
//! most once and every copy gets the same reply. Re-using a `command_id` for
//! a *different* request (another order, amount or kind) is refused with
//! [`DeclineReason::CommandIdReused`]. On top of that a wallet charges an
//! order at most once: a second charge for an order already charged (under
//! another command id) answers with the original payment.
//!
//! # Replies
//!
//! Exactly one [`PaymentReply`] per command delivery, with `ce_type`
//! [`types::CHARGE_REPLY`] or [`types::REFUND_REPLY`], sent
//!
//! - to the exchange named in the command's [`headers::REPLY_TO`] header, as
//!   a durable message keyed by `order_id` — what an orchestrator that sends
//!   commands through its outbox uses; or, without that header,
//! - to the AMQP `reply_to` queue with the AMQP `correlation_id` of the
//!   command — what `messaging::Broker::request` does.
//!
//! The reply carries the command's [`headers::ECHOED`] headers unchanged (so
//! a saga correlates it by its `idempotency-key`) and names `command_id` and
//! `order_id` in its body. The body's `outcome` is one of
//!
//! ```json
//! {"command_id": "…", "order_id": "…", "outcome": "charged",  "payment_id": "…", "amount": {…}}
//! {"command_id": "…", "order_id": "…", "outcome": "declined", "reason": "INSUFFICIENT_FUNDS", "detail": "…"}
//! {"command_id": "…", "order_id": "…", "outcome": "refunded", "refund_id": "…", "amount": {…}}
//! ```
//!
//! A command whose body cannot be decoded at all gets no reply: it is moved
//! to the dead-letter queue (there is no `command_id` to answer under).
//!
//! # Integration events
//!
//! On [`EVENTS_TOPIC`] (Kafka), keyed by the customer's user id, as
//! binary-mode CloudEvents whose `ce_id` is the message id consumers
//! deduplicate by: [`events::PaymentCharged`], [`events::PaymentRefunded`]
//! and [`events::PaymentDeclined`]. Fields are only ever added.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The RabbitMQ exchange the payment service takes commands from.
pub const COMMANDS_EXCHANGE: &str = "ferrishop.payment.commands";

/// The Kafka topic of the payment service's integration events.
pub const EVENTS_TOPIC: &str = "ferrishop.payment.events";

/// CloudEvents `ce_type` values.
pub mod types {
    /// Command: take money from a wallet for an order.
    pub const CHARGE: &str = "payment.charge";
    /// Command: give an order's money back.
    pub const REFUND: &str = "payment.refund";
    /// Reply to [`CHARGE`].
    pub const CHARGE_REPLY: &str = "payment.charge.reply";
    /// Reply to [`REFUND`].
    pub const REFUND_REPLY: &str = "payment.refund.reply";
    /// Event: a wallet was charged for an order.
    pub const CHARGED: &str = "payment.charged";
    /// Event: an order's money went back to the wallet.
    pub const REFUNDED: &str = "payment.refunded";
    /// Event: a charge was refused.
    pub const DECLINED: &str = "payment.declined";
}

/// Message header names of the command/reply exchange.
pub mod headers {
    /// Optional command header: the exchange to publish the reply to.
    pub const REPLY_TO: &str = "reply-to";
    /// The saga's per-step idempotency key (`{saga_id}:{step}`).
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Free-form correlation id of the requester.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The saga a command belongs to, when a saga sent it; the payment is
    /// correlated with it.
    pub const SAGA_ID: &str = "saga-id";
    /// Headers copied from a command onto its reply, when present.
    pub const ECHOED: [&str; 7] = [
        IDEMPOTENCY_KEY,
        CORRELATION_ID,
        SAGA_ID,
        "saga-type",
        "saga-step",
        "saga-phase",
        "saga-attempt",
    ];
}

/// Money on the wire: integer minor units and an ISO 4217 code, as
/// everywhere in Ferrishop (`{"amount": 2599, "currency": "EUR"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// `payment.charge`: take `amount` from the wallet of `customer_id` for
/// `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargePayment {
    /// Identifies the request across retries (1 to 200 printable ASCII
    /// characters).
    pub command_id: String,
    pub order_id: Uuid,
    /// The wallet owner's user id.
    pub customer_id: Uuid,
    /// More than zero, in the wallet's currency.
    pub amount: Money,
}

/// `payment.refund`: give back up to `amount` of what was charged for
/// `order_id`. Refunding an order that is already fully refunded changes
/// nothing and answers `refunded` again; refunding more than is left, or an
/// order never charged, is declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub command_id: String,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
}

/// A command of either kind, as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    Charge(ChargePayment),
    Refund(RefundPayment),
}

/// Why a command message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown command type {0:?} (expected payment.charge or payment.refund)")]
    UnknownType(String),
    #[error("the command body is not valid: {0}")]
    Body(#[from] serde_json::Error),
}

impl PaymentCommand {
    /// The `ce_type` to send this command with.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Charge(_) => types::CHARGE,
            Self::Refund(_) => types::REFUND,
        }
    }

    /// The `ce_type` of the reply to this command.
    pub fn reply_type(&self) -> &'static str {
        match self {
            Self::Charge(_) => types::CHARGE_REPLY,
            Self::Refund(_) => types::REFUND_REPLY,
        }
    }

    pub fn command_id(&self) -> &str {
        match self {
            Self::Charge(command) => &command.command_id,
            Self::Refund(command) => &command.command_id,
        }
    }

    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Charge(command) => command.order_id,
            Self::Refund(command) => command.order_id,
        }
    }

    /// The headers to send this command with, besides the requester's own
    /// correlation headers: `ce_type`, `content-type`, the idempotency key
    /// (the command id) and, when given, the exchange to reply to.
    pub fn headers(&self, reply_to: Option<&str>) -> Vec<(String, String)> {
        let mut list = vec![
            ("ce_type".to_owned(), self.message_type().to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                headers::IDEMPOTENCY_KEY.to_owned(),
                self.command_id().to_owned(),
            ),
        ];
        if let Some(reply_to) = reply_to {
            list.push((headers::REPLY_TO.to_owned(), reply_to.to_owned()));
        }
        list
    }

    /// The JSON body.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Charge(command) => serde_json::to_vec(command),
            Self::Refund(command) => serde_json::to_vec(command),
        }
    }

    /// Reads a command from its `ce_type` and JSON body.
    pub fn decode(message_type: &str, body: &[u8]) -> Result<Self, DecodeError> {
        match message_type {
            types::CHARGE => Ok(Self::Charge(serde_json::from_slice(body)?)),
            types::REFUND => Ok(Self::Refund(serde_json::from_slice(body)?)),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReply {
    pub command_id: String,
    pub order_id: Uuid,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What a command achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The wallet was charged (now, or earlier for this order).
    Charged { payment_id: Uuid, amount: Money },
    /// Nothing was charged or refunded.
    Declined {
        reason: DeclineReason,
        /// Human-readable explanation; not for branching.
        #[serde(default)]
        detail: String,
    },
    /// The order's money is back in the wallet. `amount` is what this
    /// command refunded: zero, with no `refund_id`, when the order had
    /// already been fully refunded.
    Refunded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refund_id: Option<Uuid>,
        amount: Money,
    },
}

/// Why a command was declined: stable codes, the same as the REST API's
/// problem `code`s where both exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    /// The balance is below the amount.
    InsufficientFunds,
    /// An administrator froze the wallet.
    AccountFrozen,
    /// The wallet was closed.
    AccountClosed,
    /// The customer has no wallet (yet: wallets open asynchronously after
    /// registration).
    AccountNotFound,
    /// The amount's currency is not the wallet's.
    CurrencyMismatch,
    /// Refund of an order that was never charged. Final: the refund voided
    /// the order, so a charge for it that arrives later is declined
    /// (`ORDER_VOIDED`) and nothing will ever need refunding.
    NothingToRefund,
    /// Refund of more than is left of the order's charge.
    RefundExceedsCharge,
    /// Charge of an order whose refund arrived first (its saga gave up on
    /// the charge and compensated it).
    OrderVoided,
    /// The `command_id` was used before for a different request.
    CommandIdReused,
    /// The command is well-formed JSON but not a valid request (amount not
    /// positive, malformed currency or command id).
    InvalidCommand,
    /// A reason this version of the contract does not know yet.
    #[serde(other)]
    Unknown,
}

impl DeclineReason {
    /// The stable code, e.g. `INSUFFICIENT_FUNDS`.
    pub fn code(self) -> &'static str {
        match self {
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::AccountFrozen => "ACCOUNT_FROZEN",
            Self::AccountClosed => "ACCOUNT_CLOSED",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::CurrencyMismatch => "CURRENCY_MISMATCH",
            Self::NothingToRefund => "NOTHING_TO_REFUND",
            Self::RefundExceedsCharge => "REFUND_EXCEEDS_CHARGE",
            Self::OrderVoided => "ORDER_VOIDED",
            Self::CommandIdReused => "COMMAND_ID_REUSED",
            Self::InvalidCommand => "INVALID_COMMAND",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Integration events on [`EVENTS_TOPIC`].
pub mod events {
    use super::*;

    /// `payment.charged`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentCharged {
        pub payment_id: Uuid,
        pub account_id: Uuid,
        pub customer_id: Uuid,
        pub order_id: Uuid,
        pub command_id: String,
        pub amount: Money,
        pub charged_at: DateTime<Utc>,
    }

    /// `payment.refunded`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentRefunded {
        pub refund_id: Uuid,
        pub account_id: Uuid,
        pub customer_id: Uuid,
        pub order_id: Uuid,
        pub command_id: String,
        pub amount: Money,
        pub refunded_at: DateTime<Utc>,
    }

    /// `payment.declined`: a charge refused by an existing wallet.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PaymentDeclined {
        pub account_id: Uuid,
        pub customer_id: Uuid,
        pub order_id: Uuid,
        pub command_id: String,
        pub amount: Money,
        pub reason: DeclineReason,
        pub declined_at: DateTime<Utc>,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order() -> Uuid {
        Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001)
    }

    #[test]
    fn commands_round_trip_through_type_and_body() {
        let command = PaymentCommand::Charge(ChargePayment {
            command_id: "saga:charge_payment".into(),
            order_id: order(),
            customer_id: Uuid::from_u128(2),
            amount: Money::new(2599, "EUR"),
        });
        let body = command.to_json().unwrap();
        let decoded = PaymentCommand::decode(command.message_type(), &body).unwrap();
        assert_eq!(decoded, command);
        let headers = command.headers(Some("ferrishop.order.replies"));
        assert!(headers.contains(&("ce_type".into(), "payment.charge".into())));
        assert!(headers.contains(&("idempotency-key".into(), "saga:charge_payment".into())));
        assert!(headers.contains(&("reply-to".into(), "ferrishop.order.replies".into())));
        assert!(matches!(
            PaymentCommand::decode("payment.explode", &body),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            PaymentCommand::decode(types::REFUND, b"{not json"),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn replies_have_a_flat_outcome_tag() {
        let reply = PaymentReply {
            command_id: "c1".into(),
            order_id: order(),
            outcome: Outcome::Declined {
                reason: DeclineReason::InsufficientFunds,
                detail: "balance 100 EUR is below 2599 EUR".into(),
            },
        };
        let value = serde_json::to_value(&reply).unwrap();
        assert_eq!(value["outcome"], "declined");
        assert_eq!(value["reason"], "INSUFFICIENT_FUNDS");
        assert_eq!(value["command_id"], "c1");
        let back: PaymentReply = serde_json::from_value(value).unwrap();
        assert_eq!(back, reply);

        let refunded: PaymentReply = serde_json::from_value(json!({
            "command_id": "c2", "order_id": order(), "outcome": "refunded",
            "amount": {"amount": 0, "currency": "EUR"}
        }))
        .unwrap();
        assert_eq!(
            refunded.outcome,
            Outcome::Refunded {
                refund_id: None,
                amount: Money::new(0, "EUR")
            }
        );
    }

    #[test]
    fn unknown_decline_reasons_still_decode() {
        let reason: DeclineReason = serde_json::from_value(json!("LIMIT_EXCEEDED")).unwrap();
        assert_eq!(reason, DeclineReason::Unknown);
        assert_eq!(DeclineReason::AccountFrozen.to_string(), "ACCOUNT_FROZEN");
        assert_eq!(
            serde_json::to_value(DeclineReason::RefundExceedsCharge).unwrap(),
            json!("REFUND_EXCEEDS_CHARGE")
        );
    }
}
