//! What happened to a wallet: the events of its stream, the only truth about
//! it. A wallet's state is nothing but the fold of these (see
//! [`super::wallet`]), so each one records everything a replay needs —
//! amounts, ids, and the time it happened — and the command that caused a
//! charge or refund (`command_id`), so the stream alone says which saga step
//! moved which money.
//!
//! Events are stored as JSON under their variant name (`"Charged"`) with
//! schema version 1. Their shape only ever grows by optional fields; a change
//! that cannot be expressed that way gets a new schema version and an
//! upcaster.

use chrono::{DateTime, Utc};
use eventstore::{DomainEvent, EventDecodeError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::iban::Iban;
use super::ids::{AccountId, CommandId, IdempotencyKey, OrderId, TransactionId, UserId};
use super::money::{Amount, Currency, Money};

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    InsufficientFunds,
    AccountFrozen,
    AccountClosed,
    AccountNotFound,
    CurrencyMismatch,
    NothingToRefund,
    RefundExceedsCharge,
    /// A charge for an order whose refund came first (see [`OrderVoided`]).
    OrderVoided,
}

/// The wallet was opened for its owner (one per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account_id: AccountId,
    pub owner_id: UserId,
    /// Every amount the account ever holds is in this currency.
    pub currency: Currency,
    pub at: DateTime<Utc>,
}

/// Money was added: by the owner, or the welcome credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposited {
    pub transaction_id: TransactionId,
    pub amount: Amount,
    /// The owner's `Idempotency-Key`; none for the welcome credit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    pub at: DateTime<Utc>,
}

/// An order was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charged {
    /// The payment id the saga gets back.
    pub payment_id: TransactionId,
    pub order_id: OrderId,
    pub command_id: CommandId,
    pub amount: Amount,
    pub at: DateTime<Utc>,
}

/// (Part of) an order's payment went back to the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refunded {
    pub refund_id: TransactionId,
    pub order_id: OrderId,
    pub command_id: CommandId,
    pub amount: Amount,
    pub at: DateTime<Utc>,
}

/// A charge was refused by an open account (frozen, short of money, other
/// currency). Recorded so the history shows every attempt on the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeDeclined {
    pub order_id: OrderId,
    pub command_id: CommandId,
    pub amount: Amount,
    pub reason: DeclineReason,
    pub at: DateTime<Utc>,
}

/// A refund arrived for an order that was never charged: the saga gave up
/// on the charge and compensated it. The order is closed to charges from
/// then on, so a charge still on its way is declined instead of keeping the
/// money of a rejected order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderVoided {
    pub order_id: OrderId,
    /// The refund command that voided it.
    pub command_id: CommandId,
    pub at: DateTime<Utc>,
}

/// An administrator stopped deposits and charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFrozen {
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUnfrozen {
    pub at: DateTime<Utc>,
}

/// The owner named the bank account a closing balance is paid out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutIbanSet {
    pub iban: Iban,
    pub at: DateTime<Utc>,
}

/// The account was closed. `final_balance` is what it held at that moment,
/// paid out to `payout_iban` (required when it is not zero); the account's
/// balance is zero from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountClosed {
    pub final_balance: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_iban: Option<Iban>,
    pub at: DateTime<Utc>,
}

/// Every event of a wallet's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletEvent {
    AccountOpened(AccountOpened),
    Deposited(Deposited),
    Charged(Charged),
    Refunded(Refunded),
    ChargeDeclined(ChargeDeclined),
    OrderVoided(OrderVoided),
    AccountFrozen(AccountFrozen),
    AccountUnfrozen(AccountUnfrozen),
    PayoutIbanSet(PayoutIbanSet),
    AccountClosed(AccountClosed),
}

impl WalletEvent {
    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::AccountOpened(e) => e.at,
            Self::Deposited(e) => e.at,
            Self::Charged(e) => e.at,
            Self::Refunded(e) => e.at,
            Self::ChargeDeclined(e) => e.at,
            Self::OrderVoided(e) => e.at,
            Self::AccountFrozen(e) => e.at,
            Self::AccountUnfrozen(e) => e.at,
            Self::PayoutIbanSet(e) => e.at,
            Self::AccountClosed(e) => e.at,
        }
    }
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AccountOpened(_) => "AccountOpened",
            Self::Deposited(_) => "Deposited",
            Self::Charged(_) => "Charged",
            Self::Refunded(_) => "Refunded",
            Self::ChargeDeclined(_) => "ChargeDeclined",
            Self::OrderVoided(_) => "OrderVoided",
            Self::AccountFrozen(_) => "AccountFrozen",
            Self::AccountUnfrozen(_) => "AccountUnfrozen",
            Self::PayoutIbanSet(_) => "PayoutIbanSet",
            Self::AccountClosed(_) => "AccountClosed",
        }
    }

    fn to_payload(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::AccountOpened(e) => serde_json::to_value(e),
            Self::Deposited(e) => serde_json::to_value(e),
            Self::Charged(e) => serde_json::to_value(e),
            Self::Refunded(e) => serde_json::to_value(e),
            Self::ChargeDeclined(e) => serde_json::to_value(e),
            Self::OrderVoided(e) => serde_json::to_value(e),
            Self::AccountFrozen(e) => serde_json::to_value(e),
            Self::AccountUnfrozen(e) => serde_json::to_value(e),
            Self::PayoutIbanSet(e) => serde_json::to_value(e),
            Self::AccountClosed(e) => serde_json::to_value(e),
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
        let event = match event_type {
            "AccountOpened" => Self::AccountOpened(serde_json::from_value(payload)?),
            "Deposited" => Self::Deposited(serde_json::from_value(payload)?),
            "Charged" => Self::Charged(serde_json::from_value(payload)?),
            "Refunded" => Self::Refunded(serde_json::from_value(payload)?),
            "ChargeDeclined" => Self::ChargeDeclined(serde_json::from_value(payload)?),
            "OrderVoided" => Self::OrderVoided(serde_json::from_value(payload)?),
            "AccountFrozen" => Self::AccountFrozen(serde_json::from_value(payload)?),
            "AccountUnfrozen" => Self::AccountUnfrozen(serde_json::from_value(payload)?),
            "PayoutIbanSet" => Self::PayoutIbanSet(serde_json::from_value(payload)?),
            "AccountClosed" => Self::AccountClosed(serde_json::from_value(payload)?),
            other => return Err(EventDecodeError::UnknownType(other.to_owned())),
        };
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let at = Utc::now();
        let amount = Amount::new(2599, Currency::EUR).unwrap();
        let events = [
            WalletEvent::AccountOpened(AccountOpened {
                account_id: AccountId::generate(),
                owner_id: UserId::generate(),
                currency: Currency::EUR,
                at,
            }),
            WalletEvent::Charged(Charged {
                payment_id: TransactionId::generate(),
                order_id: OrderId::generate(),
                command_id: CommandId::parse("c-1").unwrap(),
                amount,
                at,
            }),
            WalletEvent::ChargeDeclined(ChargeDeclined {
                order_id: OrderId::generate(),
                command_id: CommandId::parse("c-2").unwrap(),
                amount,
                reason: DeclineReason::InsufficientFunds,
                at,
            }),
            WalletEvent::OrderVoided(OrderVoided {
                order_id: OrderId::generate(),
                command_id: CommandId::parse("c-3").unwrap(),
                at,
            }),
            WalletEvent::AccountClosed(AccountClosed {
                final_balance: Money::zero(Currency::EUR),
                payout_iban: None,
                at,
            }),
        ];
        for event in events {
            let payload = event.to_payload().unwrap();
            let back = WalletEvent::from_payload(event.event_type(), 1, payload).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn unknown_types_and_versions_are_refused() {
        assert!(matches!(
            WalletEvent::from_payload("Teleported", 1, Value::Null),
            Err(EventDecodeError::UnknownType(_))
        ));
        assert!(matches!(
            WalletEvent::from_payload("AccountUnfrozen", 2, serde_json::json!({"at": Utc::now()})),
            Err(EventDecodeError::UnsupportedSchemaVersion { .. })
        ));
    }
}
