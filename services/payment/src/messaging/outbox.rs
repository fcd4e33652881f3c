//! Integration events out: the outbox messages that announce charges,
//! refunds and declines, and the relay that moves them to Kafka.
//!
//! Events are never published from a use case. A charge writes its
//! `payment.charged` message into the outbox in the charge's own transaction,
//! and the relay publishes committed rows afterwards, so an event goes out if
//! and only if the money moved — also when Kafka is down at that moment: the
//! row waits. Delivery is at least once; consumers deduplicate by `ce_id`,
//! which is the outbox message id. Messages are keyed by the customer's user
//! id (the wallet aggregate's id), so one wallet's events stay in order.

use eventstore::OutboxMessage;
use integration::EventAttributes;
use payment_contract::events::{PaymentCharged, PaymentDeclined, PaymentRefunded};
use payment_contract::types;
use serde::Serialize;

use super::{SOURCE, contract_money, contract_reason};
use crate::domain::events::WalletEvent;
use crate::domain::wallet::Account;
use crate::error::PaymentError;

/// Builds the outbox messages of this service's integration events.
#[derive(Debug, Clone)]
pub struct Announcements {
    topic: String,
}

impl Announcements {
    /// Events go to `topic` (`ferrishop.payment.events` unless configured).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
        }
    }

    /// The messages announcing those of `events` other services care about.
    pub fn for_events(
        &self,
        account: &Account,
        events: &[WalletEvent],
    ) -> Result<Vec<OutboxMessage>, PaymentError> {
        let account_id = account.id.as_uuid();
        let customer_id = account.owner.as_uuid();
        let mut messages = Vec::new();
        for event in events {
            let message = match event {
                WalletEvent::Charged(e) => self.message(
                    types::CHARGED,
                    account,
                    &PaymentCharged {
                        payment_id: e.payment_id.as_uuid(),
                        account_id,
                        customer_id,
                        order_id: e.order_id.as_uuid(),
                        command_id: e.command_id.to_string(),
                        amount: contract_money(e.amount.money()),
                        charged_at: e.at,
                    },
                )?,
                WalletEvent::Refunded(e) => self.message(
                    types::REFUNDED,
                    account,
                    &PaymentRefunded {
                        refund_id: e.refund_id.as_uuid(),
                        account_id,
                        customer_id,
                        order_id: e.order_id.as_uuid(),
                        command_id: e.command_id.to_string(),
                        amount: contract_money(e.amount.money()),
                        refunded_at: e.at,
                    },
                )?,
                WalletEvent::ChargeDeclined(e) => self.message(
                    types::DECLINED,
                    account,
                    &PaymentDeclined {
                        account_id,
                        customer_id,
                        order_id: e.order_id.as_uuid(),
                        command_id: e.command_id.to_string(),
                        amount: contract_money(e.amount.money()),
                        reason: contract_reason(e.reason),
                        declined_at: e.at,
                    },
                )?,
                _ => continue,
            };
            messages.push(message);
        }
        Ok(messages)
    }

    /// A binary-mode CloudEvent keyed by the customer, continuing the
    /// current trace; its `ce_id` is the outbox message id.
    fn message<T: Serialize>(
        &self,
        event_type: &str,
        account: &Account,
        body: &T,
    ) -> Result<OutboxMessage, PaymentError> {
        let key = account.owner.to_string();
        let subject = account.id.to_string();
        let attributes = EventAttributes {
            topic: &self.topic,
            source: SOURCE,
            event_type,
            key: &key,
            subject: &subject,
            time: None,
        };
        integration::outbox_message(&attributes, body).map_err(PaymentError::internal)
    }
}

pub use integration::relay;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::domain::events::{ChargeDeclined, Charged, DeclineReason};
    use crate::domain::ids::{AccountId, CommandId, OrderId, TransactionId, UserId};
    use crate::domain::money::{Amount, Currency, Money};
    use crate::domain::wallet::AccountStatus;

    fn account() -> Account {
        Account {
            id: AccountId::generate(),
            owner: UserId::generate(),
            balance: Money::zero(Currency::EUR),
            status: AccountStatus::Active,
            frozen_reason: None,
            payout_iban: None,
            opened_at: Utc::now(),
            updated_at: Utc::now(),
            orders: BTreeMap::new(),
            voided: Default::default(),
        }
    }

    #[test]
    fn charges_and_declines_become_keyed_cloud_events() {
        let account = account();
        let amount = Amount::new(2599, Currency::EUR).unwrap();
        let order = OrderId::generate();
        let events = [
            WalletEvent::Charged(Charged {
                payment_id: TransactionId::generate(),
                order_id: order,
                command_id: CommandId::parse("c-1").unwrap(),
                amount,
                at: Utc::now(),
            }),
            WalletEvent::ChargeDeclined(ChargeDeclined {
                order_id: order,
                command_id: CommandId::parse("c-2").unwrap(),
                amount,
                reason: DeclineReason::AccountFrozen,
                at: Utc::now(),
            }),
        ];
        let messages = Announcements::new("topic")
            .for_events(&account, &events)
            .unwrap();
        assert_eq!(messages.len(), 2);
        for message in &messages {
            assert_eq!(message.destination, "topic");
            assert_eq!(message.key, account.owner.to_string());
            assert_eq!(message.headers["ce_id"], message.id.to_string());
            assert_eq!(message.headers["ce_source"], SOURCE);
        }
        assert_eq!(messages[0].headers["ce_type"], "payment.charged");
        assert_eq!(messages[1].headers["ce_type"], "payment.declined");
        let declined: PaymentDeclined = serde_json::from_slice(&messages[1].payload).unwrap();
        assert_eq!(
            declined.reason,
            payment_contract::DeclineReason::AccountFrozen
        );
        assert_eq!(declined.amount, payment_contract::Money::new(2599, "EUR"));
    }
}
