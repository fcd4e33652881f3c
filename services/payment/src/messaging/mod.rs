//! Broker adapters: the saga's commands in and their replies out
//! ([`commands`], RabbitMQ), `user.registered` in ([`user_events`], Kafka),
//! and integration events out through the outbox ([`outbox`], Kafka).
//!
//! The wire shapes are the `payment-contract` crate's, shared with the order
//! service; this module translates between them and the domain, and decides
//! how each kind of failure is settled with the broker: a message that can
//! never be processed (it does not parse) is dead-lettered at once, a
//! failure that may pass (database down, a write race that kept losing, an
//! injected fault) is requeued until the subscription's attempts run out.

pub mod commands;
pub mod outbox;
pub mod user_events;

use integration::subscribe;

use crate::domain::events::DeclineReason;
use crate::domain::money::Money;

/// The CloudEvents `source` of every message this service sends.
pub const SOURCE: &str = "/ferrishop/payment";

/// Money as the contract spells it.
pub fn contract_money(money: Money) -> payment_contract::Money {
    payment_contract::Money::new(money.amount(), money.currency().as_str())
}

/// A decline reason as the contract spells it.
pub fn contract_reason(reason: DeclineReason) -> payment_contract::DeclineReason {
    use payment_contract::DeclineReason as Wire;
    match reason {
        DeclineReason::InsufficientFunds => Wire::InsufficientFunds,
        DeclineReason::AccountFrozen => Wire::AccountFrozen,
        DeclineReason::AccountClosed => Wire::AccountClosed,
        DeclineReason::AccountNotFound => Wire::AccountNotFound,
        DeclineReason::CurrencyMismatch => Wire::CurrencyMismatch,
        DeclineReason::NothingToRefund => Wire::NothingToRefund,
        DeclineReason::RefundExceedsCharge => Wire::RefundExceedsCharge,
        DeclineReason::OrderVoided => Wire::OrderVoided,
    }
}
