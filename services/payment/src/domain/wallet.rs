//! The `WalletAccount` aggregate: one user's money and the rules for moving
//! it.
//!
//! A wallet is event-sourced. Its state is the fold of its events
//! ([`WalletAccount::apply`]); a command is *decided* against that state and
//! yields the events to record (and, for charges and refunds, the answer the
//! saga gets). Nothing here touches a database or a clock: ids and times come
//! in with the command, so every decision is a pure function and the rules
//! are tested without infrastructure.
//!
//! # The rules
//!
//! - An account is Active, Frozen or Closed. Frozen: no deposits, no charges
//!   (refunds still go through — that money belongs to the customer). Closed:
//!   the balance is zero and stays so; nothing goes in or out but a refund of
//!   an order it paid for (a saga compensating after an administrator closed
//!   the wallet), which is paid straight out to the payout IBAN (`Refunded`,
//!   then `AccountClosed` with that amount), or declined `AccountClosed` when
//!   the account has no IBAN.
//! - The balance is a [`Money`], which cannot be negative: a charge above it
//!   is declined with [`DeclineReason::InsufficientFunds`], and the decline is
//!   recorded (ChargeDeclined).
//! - Every amount is in the account's currency.
//! - An order is charged at most once. A charge for an order already charged
//!   answers with that payment and records nothing, whatever its command id:
//!   a saga that lost track of its command id still cannot pay twice.
//! - A refund never exceeds what was charged for its order. Refunding an
//!   order that is already fully refunded changes nothing (and answers
//!   "refunded", so a repeated compensation is harmless); refunding more
//!   than is left of a charge is declined.
//! - Refunding an order never charged is declined with `NothingToRefund`
//!   *and voids the order* (OrderVoided): a charge for it that arrives
//!   later is declined with `OrderVoided`. A saga that gave up waiting for
//!   its charge compensates with a refund, and the charge may still be on
//!   its way; without the tombstone that late charge would take the money
//!   of a rejected order.
//! - Closing pays the balance out: the account must have a payout IBAN unless
//!   its balance is zero, and must not be frozen (a freeze is a hold on the
//!   money). `AccountClosed.final_balance` records what was paid out.
//!
//! Deduplication of *commands* (the same command delivered twice) is the
//! application's job, by command id; the per-order rules above are the
//! aggregate's own line of defence.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use eventstore::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::*;
use super::iban::Iban;
use super::ids::{AccountId, CommandId, IdempotencyKey, OrderId, TransactionId, UserId};
use super::money::{Amount, Currency, Money, MoneyError};

/// Where an open account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Frozen => "FROZEN",
            Self::Closed => "CLOSED",
        }
    }
}

/// One order's payment on the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPayment {
    pub payment_id: TransactionId,
    pub charged: Amount,
    /// Refunded so far; never more than `charged`.
    pub refunded: Money,
}

impl OrderPayment {
    /// What may still be refunded.
    pub fn refundable(&self) -> Money {
        self.charged
            .money()
            .checked_sub(self.refunded)
            .unwrap_or(Money::zero(self.charged.currency()))
    }
}

/// An opened account's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub owner: UserId,
    pub balance: Money,
    pub status: AccountStatus,
    pub frozen_reason: Option<String>,
    pub payout_iban: Option<Iban>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Payments by order, to keep each order charged once and refunded at
    /// most what it paid.
    pub orders: BTreeMap<OrderId, OrderPayment>,
    /// Orders refunded before any charge: closed to charges.
    pub voided: BTreeSet<OrderId>,
}

impl Account {
    pub fn currency(&self) -> Currency {
        self.balance.currency()
    }
}

/// A user's wallet: not opened yet, or an [`Account`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletAccount {
    #[default]
    Unopened,
    Open(Account),
}

/// Why a command was refused outright (as opposed to a declined charge,
/// which is an answer, see [`ChargeOutcome`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("the user has no account")]
    NotOpened,
    #[error("the account is frozen")]
    Frozen,
    #[error("the account is closed")]
    Closed,
    #[error("the account holds {account}, not {given}")]
    CurrencyMismatch { account: Currency, given: Currency },
    #[error("the account holds {balance}: set a payout IBAN before closing it")]
    PayoutIbanRequired { balance: Money },
    #[error("the balance would exceed the largest representable amount")]
    Overflow,
}

/// Open the owner's account, with an optional welcome credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAccount {
    pub account_id: AccountId,
    pub owner: UserId,
    pub currency: Currency,
    pub welcome_credit: Option<(TransactionId, Amount)>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    pub transaction_id: TransactionId,
    pub amount: Amount,
    pub idempotency_key: Option<IdempotencyKey>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The id the payment gets if it goes through.
    pub payment_id: TransactionId,
    pub command_id: CommandId,
    pub order_id: OrderId,
    pub amount: Amount,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The id the refund gets if money moves.
    pub refund_id: TransactionId,
    pub command_id: CommandId,
    pub order_id: OrderId,
    pub amount: Amount,
    pub at: DateTime<Utc>,
}

/// The commands that only yield events, for [`Aggregate::handle`].
///
/// Charges and refunds are not among them: they *answer* (charged, or
/// declined and why), which `handle` cannot return, so they are decided by
/// [`WalletAccount::charge`] and [`WalletAccount::refund`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletCommand {
    Open(OpenAccount),
    Deposit(Deposit),
    Freeze { reason: String, at: DateTime<Utc> },
    Unfreeze { at: DateTime<Utc> },
    SetPayoutIban { iban: Iban, at: DateTime<Utc> },
    Close { at: DateTime<Utc> },
}

/// The events a command yields and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<O> {
    pub events: Vec<WalletEvent>,
    pub outcome: O,
}

/// The answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid, now or (for this order) before.
    Charged {
        payment_id: TransactionId,
        amount: Amount,
    },
    Declined(DeclineReason),
}

/// The answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// `amount` went back now (`refund_id` set), or nothing was left to
    /// refund (zero, no id).
    Refunded {
        refund_id: Option<TransactionId>,
        amount: Money,
    },
    Declined(DeclineReason),
}

impl WalletAccount {
    pub fn account(&self) -> Option<&Account> {
        match self {
            Self::Unopened => None,
            Self::Open(account) => Some(account),
        }
    }

    /// Opening an account that exists changes nothing: `user.registered`
    /// may arrive more than once.
    pub fn open(&self, command: OpenAccount) -> Result<Vec<WalletEvent>, WalletError> {
        if let Self::Open(_) = self {
            return Ok(Vec::new());
        }
        if let Some((_, credit)) = &command.welcome_credit
            && credit.currency() != command.currency
        {
            return Err(WalletError::CurrencyMismatch {
                account: command.currency,
                given: credit.currency(),
            });
        }
        let mut events = vec![WalletEvent::AccountOpened(AccountOpened {
            account_id: command.account_id,
            owner_id: command.owner,
            currency: command.currency,
            at: command.at,
        })];
        if let Some((transaction_id, amount)) = command.welcome_credit {
            events.push(WalletEvent::Deposited(Deposited {
                transaction_id,
                amount,
                idempotency_key: None,
                at: command.at,
            }));
        }
        Ok(events)
    }

    pub fn deposit(&self, command: Deposit) -> Result<Vec<WalletEvent>, WalletError> {
        let account = self.usable()?;
        if account.status == AccountStatus::Frozen {
            return Err(WalletError::Frozen);
        }
        same_currency(account, command.amount)?;
        account
            .balance
            .checked_add(command.amount.money())
            .map_err(|_| WalletError::Overflow)?;
        Ok(vec![WalletEvent::Deposited(Deposited {
            transaction_id: command.transaction_id,
            amount: command.amount,
            idempotency_key: command.idempotency_key,
            at: command.at,
        })])
    }

    pub fn charge(&self, command: Charge) -> Decision<ChargeOutcome> {
        let declined = |reason| Decision {
            events: Vec::new(),
            outcome: ChargeOutcome::Declined(reason),
        };
        let account = match self {
            Self::Unopened => return declined(DeclineReason::AccountNotFound),
            Self::Open(account) => account,
        };
        if let Some(paid) = account.orders.get(&command.order_id) {
            return Decision {
                events: Vec::new(),
                outcome: ChargeOutcome::Charged {
                    payment_id: paid.payment_id,
                    amount: paid.charged,
                },
            };
        }
        let refusal = match account.status {
            AccountStatus::Closed => return declined(DeclineReason::AccountClosed),
            _ if account.voided.contains(&command.order_id) => Some(DeclineReason::OrderVoided),
            AccountStatus::Frozen => Some(DeclineReason::AccountFrozen),
            AccountStatus::Active => match account.balance.checked_sub(command.amount.money()) {
                Ok(_) => None,
                Err(MoneyError::CurrencyMismatch { .. }) => Some(DeclineReason::CurrencyMismatch),
                Err(_) => Some(DeclineReason::InsufficientFunds),
            },
        };
        match refusal {
            Some(reason) => Decision {
                events: vec![WalletEvent::ChargeDeclined(ChargeDeclined {
                    order_id: command.order_id,
                    command_id: command.command_id,
                    amount: command.amount,
                    reason,
                    at: command.at,
                })],
                outcome: ChargeOutcome::Declined(reason),
            },
            None => Decision {
                events: vec![WalletEvent::Charged(Charged {
                    payment_id: command.payment_id,
                    order_id: command.order_id,
                    command_id: command.command_id,
                    amount: command.amount,
                    at: command.at,
                })],
                outcome: ChargeOutcome::Charged {
                    payment_id: command.payment_id,
                    amount: command.amount,
                },
            },
        }
    }

    pub fn refund(&self, command: Refund) -> Result<Decision<RefundOutcome>, WalletError> {
        let declined = |reason| {
            Ok(Decision {
                events: Vec::new(),
                outcome: RefundOutcome::Declined(reason),
            })
        };
        let account = match self {
            Self::Unopened => return declined(DeclineReason::AccountNotFound),
            Self::Open(account) => account,
        };
        // A closed account can only pay a refund straight out to its IBAN.
        let closed = account.status == AccountStatus::Closed;
        if closed && account.payout_iban.is_none() {
            return declined(DeclineReason::AccountClosed);
        }
        if command.amount.currency() != account.currency() {
            return declined(DeclineReason::CurrencyMismatch);
        }
        let Some(paid) = account.orders.get(&command.order_id) else {
            if closed {
                return declined(DeclineReason::AccountClosed);
            }
            let events = if account.voided.contains(&command.order_id) {
                Vec::new()
            } else {
                vec![WalletEvent::OrderVoided(OrderVoided {
                    order_id: command.order_id,
                    command_id: command.command_id,
                    at: command.at,
                })]
            };
            return Ok(Decision {
                events,
                outcome: RefundOutcome::Declined(DeclineReason::NothingToRefund),
            });
        };
        let refundable = paid.refundable();
        if refundable.is_zero() {
            return Ok(Decision {
                events: Vec::new(),
                outcome: RefundOutcome::Refunded {
                    refund_id: None,
                    amount: Money::zero(account.currency()),
                },
            });
        }
        if command.amount.minor_units() > refundable.amount() {
            return declined(DeclineReason::RefundExceedsCharge);
        }
        account
            .balance
            .checked_add(command.amount.money())
            .map_err(|_| WalletError::Overflow)?;
        let mut events = vec![WalletEvent::Refunded(Refunded {
            refund_id: command.refund_id,
            order_id: command.order_id,
            command_id: command.command_id,
            amount: command.amount,
            at: command.at,
        })];
        if closed {
            events.push(WalletEvent::AccountClosed(AccountClosed {
                final_balance: command.amount.money(),
                payout_iban: account.payout_iban.clone(),
                at: command.at,
            }));
        }
        Ok(Decision {
            events,
            outcome: RefundOutcome::Refunded {
                refund_id: Some(command.refund_id),
                amount: command.amount.money(),
            },
        })
    }

    /// Freezing a frozen account changes nothing.
    pub fn freeze(
        &self,
        reason: String,
        at: DateTime<Utc>,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        let account = self.usable()?;
        if account.status == AccountStatus::Frozen {
            return Ok(Vec::new());
        }
        Ok(vec![WalletEvent::AccountFrozen(AccountFrozen {
            reason,
            at,
        })])
    }

    /// Unfreezing an active account changes nothing.
    pub fn unfreeze(&self, at: DateTime<Utc>) -> Result<Vec<WalletEvent>, WalletError> {
        let account = self.usable()?;
        if account.status == AccountStatus::Active {
            return Ok(Vec::new());
        }
        Ok(vec![WalletEvent::AccountUnfrozen(AccountUnfrozen { at })])
    }

    pub fn set_payout_iban(
        &self,
        iban: Iban,
        at: DateTime<Utc>,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        let account = self.usable()?;
        if account.payout_iban.as_ref() == Some(&iban) {
            return Ok(Vec::new());
        }
        Ok(vec![WalletEvent::PayoutIbanSet(PayoutIbanSet { iban, at })])
    }

    /// Closing a closed account changes nothing.
    pub fn close(&self, at: DateTime<Utc>) -> Result<Vec<WalletEvent>, WalletError> {
        let account = match self {
            Self::Unopened => return Err(WalletError::NotOpened),
            Self::Open(account) if account.status == AccountStatus::Closed => {
                return Ok(Vec::new());
            }
            Self::Open(account) => account,
        };
        if account.status == AccountStatus::Frozen {
            return Err(WalletError::Frozen);
        }
        if !account.balance.is_zero() && account.payout_iban.is_none() {
            return Err(WalletError::PayoutIbanRequired {
                balance: account.balance,
            });
        }
        Ok(vec![WalletEvent::AccountClosed(AccountClosed {
            final_balance: account.balance,
            payout_iban: account.payout_iban.clone(),
            at,
        })])
    }

    /// The account, if it can still change.
    fn usable(&self) -> Result<&Account, WalletError> {
        match self {
            Self::Unopened => Err(WalletError::NotOpened),
            Self::Open(account) if account.status == AccountStatus::Closed => {
                Err(WalletError::Closed)
            }
            Self::Open(account) => Ok(account),
        }
    }
}

fn same_currency(account: &Account, amount: Amount) -> Result<(), WalletError> {
    if amount.currency() == account.currency() {
        Ok(())
    } else {
        Err(WalletError::CurrencyMismatch {
            account: account.currency(),
            given: amount.currency(),
        })
    }
}

impl Aggregate for WalletAccount {
    /// Streams are `wallet-<user id>`: one wallet per user, found without a
    /// lookup.
    const CATEGORY: &'static str = "wallet";
    /// 2: accounts remember voided orders.
    const SNAPSHOT_SCHEMA_VERSION: i32 = 2;

    type Event = WalletEvent;
    type Command = WalletCommand;
    type Error = WalletError;

    /// Folds one event. The event happened, so nothing here refuses it: an
    /// event that does not fit the state (which the deciding methods never
    /// produce) leaves the state as it is rather than panicking.
    fn apply(&mut self, event: &WalletEvent) {
        if let WalletEvent::AccountOpened(opened) = event {
            if let Self::Unopened = self {
                *self = Self::Open(Account {
                    id: opened.account_id,
                    owner: opened.owner_id,
                    balance: Money::zero(opened.currency),
                    status: AccountStatus::Active,
                    frozen_reason: None,
                    payout_iban: None,
                    opened_at: opened.at,
                    updated_at: opened.at,
                    orders: BTreeMap::new(),
                    voided: BTreeSet::new(),
                });
            }
            return;
        }
        let Self::Open(account) = self else {
            return;
        };
        account.updated_at = event.at();
        match event {
            WalletEvent::AccountOpened(_) | WalletEvent::ChargeDeclined(_) => {}
            WalletEvent::OrderVoided(voided) => {
                account.voided.insert(voided.order_id);
            }
            WalletEvent::Deposited(deposited) => {
                if let Ok(balance) = account.balance.checked_add(deposited.amount.money()) {
                    account.balance = balance;
                }
            }
            WalletEvent::Charged(charged) => {
                if let Ok(balance) = account.balance.checked_sub(charged.amount.money()) {
                    account.balance = balance;
                }
                account.orders.insert(
                    charged.order_id,
                    OrderPayment {
                        payment_id: charged.payment_id,
                        charged: charged.amount,
                        refunded: Money::zero(charged.amount.currency()),
                    },
                );
            }
            WalletEvent::Refunded(refunded) => {
                if let Ok(balance) = account.balance.checked_add(refunded.amount.money()) {
                    account.balance = balance;
                }
                if let Some(paid) = account.orders.get_mut(&refunded.order_id)
                    && let Ok(total) = paid.refunded.checked_add(refunded.amount.money())
                {
                    paid.refunded = total;
                }
            }
            WalletEvent::AccountFrozen(frozen) => {
                account.status = AccountStatus::Frozen;
                account.frozen_reason = Some(frozen.reason.clone());
            }
            WalletEvent::AccountUnfrozen(_) => {
                account.status = AccountStatus::Active;
                account.frozen_reason = None;
            }
            WalletEvent::PayoutIbanSet(set) => account.payout_iban = Some(set.iban.clone()),
            WalletEvent::AccountClosed(_) => {
                account.status = AccountStatus::Closed;
                account.balance = Money::zero(account.currency());
            }
        }
    }

    fn handle(&self, command: WalletCommand) -> Result<Vec<WalletEvent>, WalletError> {
        match command {
            WalletCommand::Open(open) => self.open(open),
            WalletCommand::Deposit(deposit) => self.deposit(deposit),
            WalletCommand::Freeze { reason, at } => self.freeze(reason, at),
            WalletCommand::Unfreeze { at } => self.unfreeze(at),
            WalletCommand::SetPayoutIban { iban, at } => self.set_payout_iban(iban, at),
            WalletCommand::Close { at } => self.close(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn eur(amount: i64) -> Amount {
        Amount::new(amount, Currency::EUR).unwrap()
    }

    fn order(n: u128) -> OrderId {
        OrderId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn command(n: u128) -> CommandId {
        CommandId::parse(&format!("command-{n}")).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    /// Decides and applies, like load → handle → save does.
    fn run(wallet: &mut WalletAccount, events: Vec<WalletEvent>) -> Vec<WalletEvent> {
        for event in &events {
            wallet.apply(event);
        }
        events
    }

    fn opened(welcome: i64) -> WalletAccount {
        let mut wallet = WalletAccount::default();
        let events = wallet
            .open(OpenAccount {
                account_id: AccountId::generate(),
                owner: UserId::generate(),
                currency: Currency::EUR,
                welcome_credit: (welcome > 0).then(|| (TransactionId::generate(), eur(welcome))),
                at: now(),
            })
            .unwrap();
        run(&mut wallet, events);
        wallet
    }

    fn charge(order_n: u128, amount: i64) -> Charge {
        Charge {
            payment_id: TransactionId::generate(),
            command_id: command(order_n),
            order_id: order(order_n),
            amount: eur(amount),
            at: now(),
        }
    }

    fn refund(order_n: u128, amount: i64) -> Refund {
        Refund {
            refund_id: TransactionId::generate(),
            command_id: command(1000 + order_n),
            order_id: order(order_n),
            amount: eur(amount),
            at: now(),
        }
    }

    fn balance(wallet: &WalletAccount) -> i64 {
        wallet.account().map_or(0, |a| a.balance.amount())
    }

    #[test]
    fn opening_credits_the_welcome_money_once() {
        let mut wallet = opened(10_000);
        assert_eq!(balance(&wallet), 10_000);
        let again = wallet.open(OpenAccount {
            account_id: AccountId::generate(),
            owner: UserId::generate(),
            currency: Currency::EUR,
            welcome_credit: Some((TransactionId::generate(), eur(10_000))),
            at: now(),
        });
        assert_eq!(again, Ok(Vec::new()));
        run(&mut wallet, Vec::new());
        assert_eq!(balance(&wallet), 10_000);
    }

    #[test]
    fn a_charge_above_the_balance_is_declined_and_recorded() {
        let mut wallet = opened(1_000);
        let decision = wallet.charge(charge(1, 1_001));
        assert_eq!(
            decision.outcome,
            ChargeOutcome::Declined(DeclineReason::InsufficientFunds)
        );
        assert!(matches!(
            decision.events.as_slice(),
            [WalletEvent::ChargeDeclined(ChargeDeclined {
                reason: DeclineReason::InsufficientFunds,
                ..
            })]
        ));
        run(&mut wallet, decision.events);
        assert_eq!(balance(&wallet), 1_000);
        let exact = wallet.charge(charge(2, 1_000));
        assert!(matches!(exact.outcome, ChargeOutcome::Charged { .. }));
        run(&mut wallet, exact.events);
        assert_eq!(balance(&wallet), 0);
    }

    #[test]
    fn an_order_is_charged_once_whatever_the_command_id() {
        let mut wallet = opened(5_000);
        let first = wallet.charge(charge(7, 1_500));
        let ChargeOutcome::Charged { payment_id, .. } = first.outcome else {
            panic!("{first:?}");
        };
        run(&mut wallet, first.events);
        let mut again = charge(7, 1_500);
        again.command_id = command(99);
        let second = wallet.charge(again);
        assert!(second.events.is_empty());
        assert_eq!(
            second.outcome,
            ChargeOutcome::Charged {
                payment_id,
                amount: eur(1_500)
            }
        );
        assert_eq!(balance(&wallet), 3_500);
    }

    #[test]
    fn a_frozen_account_takes_no_charge_and_no_deposit_but_refunds() {
        let mut wallet = opened(5_000);
        let paid = wallet.charge(charge(1, 1_000));
        run(&mut wallet, paid.events);
        let frozen = wallet.freeze("chargeback".into(), now()).unwrap();
        run(&mut wallet, frozen);
        assert_eq!(wallet.freeze("again".into(), now()), Ok(Vec::new()));

        let decision = wallet.charge(charge(2, 10));
        assert_eq!(
            decision.outcome,
            ChargeOutcome::Declined(DeclineReason::AccountFrozen)
        );
        let deposit = wallet.deposit(Deposit {
            transaction_id: TransactionId::generate(),
            amount: eur(10),
            idempotency_key: None,
            at: now(),
        });
        assert_eq!(deposit, Err(WalletError::Frozen));
        let refunded = wallet.refund(refund(1, 1_000)).unwrap();
        assert!(matches!(
            refunded.outcome,
            RefundOutcome::Refunded {
                refund_id: Some(_),
                ..
            }
        ));
        run(&mut wallet, refunded.events);
        assert_eq!(balance(&wallet), 5_000);

        let thawed = wallet.unfreeze(now()).unwrap();
        run(&mut wallet, thawed);
        assert!(matches!(
            wallet.charge(charge(3, 10)).outcome,
            ChargeOutcome::Charged { .. }
        ));
    }

    #[test]
    fn refunds_never_exceed_the_charge() {
        let mut wallet = opened(5_000);
        let paid = wallet.charge(charge(1, 1_000));
        run(&mut wallet, paid.events);
        assert_eq!(
            wallet.refund(refund(1, 1_001)).unwrap().outcome,
            RefundOutcome::Declined(DeclineReason::RefundExceedsCharge)
        );
        let part = wallet.refund(refund(1, 400)).unwrap();
        run(&mut wallet, part.events);
        let rest = wallet.refund(refund(1, 600)).unwrap();
        run(&mut wallet, rest.events);
        assert_eq!(balance(&wallet), 5_000);
        let noop = wallet.refund(refund(1, 1_000)).unwrap();
        assert!(noop.events.is_empty());
        assert_eq!(
            noop.outcome,
            RefundOutcome::Refunded {
                refund_id: None,
                amount: Money::zero(Currency::EUR)
            }
        );
    }

    #[test]
    fn a_refund_before_the_charge_voids_the_order_and_the_late_charge_is_declined() {
        let mut wallet = opened(5_000);
        let early = wallet.refund(refund(1, 1_000)).unwrap();
        assert_eq!(
            early.outcome,
            RefundOutcome::Declined(DeclineReason::NothingToRefund)
        );
        assert!(matches!(
            early.events.as_slice(),
            [WalletEvent::OrderVoided(OrderVoided { order_id, .. })] if *order_id == order(1)
        ));
        run(&mut wallet, early.events);

        let again = wallet.refund(refund(1, 1_000)).unwrap();
        assert!(again.events.is_empty(), "voided once is enough");
        assert_eq!(
            again.outcome,
            RefundOutcome::Declined(DeclineReason::NothingToRefund)
        );

        let late = wallet.charge(charge(1, 1_000));
        assert_eq!(
            late.outcome,
            ChargeOutcome::Declined(DeclineReason::OrderVoided)
        );
        assert!(matches!(
            late.events.as_slice(),
            [WalletEvent::ChargeDeclined(ChargeDeclined {
                reason: DeclineReason::OrderVoided,
                ..
            })]
        ));
        run(&mut wallet, late.events);
        assert_eq!(balance(&wallet), 5_000);

        // Only that order: the next one is charged as usual.
        assert!(matches!(
            wallet.charge(charge(2, 1_000)).outcome,
            ChargeOutcome::Charged { .. }
        ));
    }

    #[test]
    fn other_currencies_are_refused() {
        let wallet = opened(5_000);
        let usd = Amount::new(10, Currency::parse("USD").unwrap()).unwrap();
        let mut request = charge(1, 10);
        request.amount = usd;
        assert_eq!(
            wallet.charge(request).outcome,
            ChargeOutcome::Declined(DeclineReason::CurrencyMismatch)
        );
        let deposit = wallet.deposit(Deposit {
            transaction_id: TransactionId::generate(),
            amount: usd,
            idempotency_key: None,
            at: now(),
        });
        assert!(matches!(deposit, Err(WalletError::CurrencyMismatch { .. })));
    }

    #[test]
    fn closing_pays_out_and_then_nothing_happens() {
        let mut wallet = opened(2_500);
        assert_eq!(
            wallet.close(now()),
            Err(WalletError::PayoutIbanRequired {
                balance: eur(2_500).money()
            })
        );
        let iban = Iban::parse("DE89 3704 0044 0532 0130 00").unwrap();
        let set = wallet.set_payout_iban(iban.clone(), now()).unwrap();
        run(&mut wallet, set);
        let closed = wallet.close(now()).unwrap();
        assert!(matches!(
            closed.as_slice(),
            [WalletEvent::AccountClosed(AccountClosed { final_balance, payout_iban: Some(_), .. })]
                if final_balance.amount() == 2_500
        ));
        run(&mut wallet, closed);
        assert_eq!(balance(&wallet), 0);
        assert_eq!(wallet.close(now()), Ok(Vec::new()));
        assert_eq!(
            wallet.charge(charge(1, 1)).outcome,
            ChargeOutcome::Declined(DeclineReason::AccountClosed)
        );
        assert_eq!(
            wallet.refund(refund(1, 1)).unwrap().outcome,
            RefundOutcome::Declined(DeclineReason::AccountClosed),
            "an order it never paid for"
        );
        assert_eq!(wallet.freeze("x".into(), now()), Err(WalletError::Closed));
        assert_eq!(
            wallet.set_payout_iban(iban, now()),
            Err(WalletError::Closed)
        );
    }

    #[test]
    fn a_refund_after_closing_is_paid_straight_out_to_the_iban() {
        let mut wallet = opened(5_000);
        let charged = wallet.charge(charge(1, 2_000));
        run(&mut wallet, charged.events);
        let iban = Iban::parse("DE89 3704 0044 0532 0130 00").unwrap();
        let set = wallet.set_payout_iban(iban, now()).unwrap();
        run(&mut wallet, set);
        let closed = wallet.close(now()).unwrap();
        run(&mut wallet, closed);

        // The saga compensates the charge after an administrator closed it.
        let decision = wallet.refund(refund(1, 2_000)).unwrap();
        assert!(
            matches!(decision.outcome, RefundOutcome::Refunded { amount, .. } if amount.amount() == 2_000),
            "{:?}",
            decision.outcome
        );
        assert!(matches!(
            decision.events.as_slice(),
            [
                WalletEvent::Refunded(_),
                WalletEvent::AccountClosed(AccountClosed { final_balance, payout_iban: Some(_), .. }),
            ] if final_balance.amount() == 2_000
        ));
        run(&mut wallet, decision.events);
        assert_eq!(balance(&wallet), 0, "paid out, not kept");
        assert_eq!(
            wallet.account().map(|a| a.status),
            Some(AccountStatus::Closed)
        );
        // Once: the order is fully refunded now.
        let again = wallet.refund(refund(1, 2_000)).unwrap();
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn a_closed_account_without_an_iban_declines_refunds() {
        let mut wallet = opened(2_000);
        let charged = wallet.charge(charge(1, 2_000));
        run(&mut wallet, charged.events);
        let closed = wallet.close(now()).unwrap();
        run(&mut wallet, closed);
        assert_eq!(
            wallet.refund(refund(1, 2_000)).unwrap().outcome,
            RefundOutcome::Declined(DeclineReason::AccountClosed)
        );
    }

    #[test]
    fn an_unopened_wallet_declines_charges_as_not_found() {
        let wallet = WalletAccount::default();
        assert_eq!(
            wallet.charge(charge(1, 1)).outcome,
            ChargeOutcome::Declined(DeclineReason::AccountNotFound)
        );
        assert_eq!(wallet.unfreeze(now()), Err(WalletError::NotOpened));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Deposit(i64),
        Charge(u128, i64),
        Refund(u128, i64),
        Freeze,
        Unfreeze,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1_i64..5_000).prop_map(Step::Deposit),
            5 => (0_u128..6, 1_i64..8_000).prop_map(|(o, a)| Step::Charge(o, a)),
            3 => (0_u128..6, 1_i64..8_000).prop_map(|(o, a)| Step::Refund(o, a)),
            1 => Just(Step::Freeze),
            1 => Just(Step::Unfreeze),
        ]
    }

    /// The balance as the plain sum of the money events.
    fn fold(events: &[WalletEvent]) -> i128 {
        events
            .iter()
            .map(|event| match event {
                WalletEvent::Deposited(e) => i128::from(e.amount.minor_units()),
                WalletEvent::Refunded(e) => i128::from(e.amount.minor_units()),
                WalletEvent::Charged(e) => -i128::from(e.amount.minor_units()),
                WalletEvent::AccountClosed(e) => -i128::from(e.final_balance.amount()),
                _ => 0,
            })
            .sum()
    }

    proptest! {
        /// For random sequences of deposits, charges, refunds and freezes,
        /// the balance equals the fold of the events after every event, is
        /// never negative, and no order is refunded more than it paid.
        #[test]
        fn the_balance_is_the_fold_of_the_events_and_never_negative(
            welcome in 0_i64..20_000,
            steps in prop::collection::vec(step(), 0..60),
        ) {
            let mut wallet = WalletAccount::default();
            let mut history = wallet
                .open(OpenAccount {
                    account_id: AccountId::generate(),
                    owner: UserId::generate(),
                    currency: Currency::EUR,
                    welcome_credit: (welcome > 0).then(|| (TransactionId::generate(), eur(welcome))),
                    at: now(),
                })
                .unwrap();
            for event in &history {
                wallet.apply(event);
            }
            for step in steps {
                let events = match step {
                    Step::Deposit(amount) => wallet
                        .deposit(Deposit {
                            transaction_id: TransactionId::generate(),
                            amount: eur(amount),
                            idempotency_key: None,
                            at: now(),
                        })
                        .unwrap_or_default(),
                    Step::Charge(o, amount) => wallet.charge(charge(o, amount)).events,
                    Step::Refund(o, amount) => wallet.refund(refund(o, amount)).unwrap().events,
                    Step::Freeze => wallet.freeze("test".into(), now()).unwrap(),
                    Step::Unfreeze => wallet.unfreeze(now()).unwrap(),
                };
                for event in events {
                    wallet.apply(&event);
                    history.push(event);
                    let folded = fold(&history);
                    prop_assert!(folded >= 0, "the fold went negative: {folded}");
                    prop_assert_eq!(i128::from(balance(&wallet)), folded);
                }
            }
            let account = wallet.account().unwrap();
            for (order, paid) in &account.orders {
                prop_assert!(paid.refunded.amount() <= paid.charged.minor_units());
                prop_assert!(!account.voided.contains(order), "order {order} is charged and voided");
            }
            // Replaying the history from scratch gives the same state.
            let mut replayed = WalletAccount::default();
            for event in &history {
                replayed.apply(event);
            }
            prop_assert_eq!(replayed, wallet);
        }
    }
}
