//! Use cases that change wallets.
//!
//! # Exactly-once effects on at-least-once delivery
//!
//! Every way into a write can repeat itself: brokers redeliver, the saga
//! re-sends a command whose reply it did not see, a client retries a
//! deposit. Each write is therefore keyed — a saga command by its
//! `command_id`, a deposit by the owner's `Idempotency-Key`, a
//! `user.registered` message by its id (the eventstore [`Inbox`]) — and the
//! key is recorded in the same transaction as the events. A repeat finds the
//! record and gets the original answer; two copies racing each other
//! serialise on the record's primary key, and the loser rolls back and
//! answers from the winner's record. Money moves once.
//!
//! The wallet itself adds a second line: it charges an order at most once
//! and refunds it at most what it paid (see [`crate::domain::wallet`]), so
//! even a saga that lost its command id cannot pay twice.

use eventstore::{Aggregate, Inbox};
use serde::{Deserialize, Serialize};

use super::{Payments, RequestContext, Retry, now};
use crate::domain::events::DeclineReason;
use crate::domain::iban::Iban;
use crate::domain::ids::{AccountId, CommandId, IdempotencyKey, OrderId, TransactionId, UserId};
use crate::domain::money::{Amount, Money};
use crate::domain::wallet::{
    Account, Charge, ChargeOutcome, Deposit, OpenAccount, Refund, RefundOutcome, WalletAccount,
    WalletCommand,
};
use crate::error::PaymentError;
use crate::store::{CommandKind, CommandRecord, DepositRecord, WriteError};

/// The fault point reached before a charge is applied.
pub const CHARGE_FAULT_POINT: &str = "payment.charge";

/// The inbox consumer name of `user.registered`.
pub const USER_REGISTERED_CONSUMER: &str = "payment.user-registered";

/// `ferrishop_payment_commands_total{command, outcome}`: saga commands
/// handled, by what came of them.
pub const COMMANDS_TOTAL: &str = "ferrishop_payment_commands_total";

/// What a saga command does when the customer has no wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnopenedWallet {
    /// Answer as things stand: a charge is declined `ACCOUNT_NOT_FOUND`, an
    /// answer recorded like any other.
    Decline,
    /// Fail with [`PaymentError::AccountNotFound`] and record nothing: the
    /// wallet may be about to open (its `user.registered` not handled yet),
    /// so the command is worth another try.
    Wait,
}

/// A saga command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub kind: CommandKind,
    pub command_id: CommandId,
    pub order_id: OrderId,
    /// The wallet's owner.
    pub customer: UserId,
    pub amount: Amount,
}

/// What a saga command achieved. Stored with its command id and given to
/// every later copy of the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    Charged {
        payment_id: TransactionId,
        amount: Amount,
    },
    /// `refund_id` is `None` (and `amount` zero) when the order had already
    /// been refunded in full.
    Refunded {
        refund_id: Option<TransactionId>,
        amount: Money,
    },
    Declined {
        reason: DeclineReason,
    },
    /// The command id was recorded before for a different request. Not
    /// stored: it is an answer about this copy, not an outcome of the
    /// command.
    CommandIdReused,
}

impl CommandOutcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Charged { .. } => "charged",
            Self::Refunded { .. } => "refunded",
            Self::Declined { .. } => "declined",
            Self::CommandIdReused => "command_id_reused",
        }
    }
}

/// What became of a `user.registered` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The wallet was opened (with the welcome credit, if any).
    Opened,
    /// The user already had a wallet (another copy of the news).
    AlreadyOpen,
    /// This very message was handled before.
    Duplicate,
}

/// A deposit's record, and whether it is an earlier request's answered
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositReceipt {
    pub deposit: DepositRecord,
    pub replayed: bool,
}

impl Payments {
    /// Opens `user`'s wallet for the `user.registered` message `message_id`,
    /// crediting the welcome money. Deduplicated by message id in the
    /// wallet's own transaction; a second message for the same user finds
    /// the wallet open and changes nothing.
    pub async fn open_account(
        &self,
        user: UserId,
        message_id: &str,
        context: &RequestContext,
    ) -> Result<Opening, PaymentError> {
        let inbox = Inbox::new(USER_REGISTERED_CONSUMER);
        let mut retry = Retry::new();
        loop {
            match self.try_open(&inbox, user, message_id, context).await {
                Err(WriteError::Conflict) => retry.wait().await?,
                Err(WriteError::Failed(error)) => return Err(error),
                Ok(opening) => return Ok(opening),
            }
        }
    }

    async fn try_open(
        &self,
        inbox: &Inbox,
        user: UserId,
        message_id: &str,
        context: &RequestContext,
    ) -> Result<Opening, WriteError> {
        let mut tx = self.store.begin().await?;
        let mut wallet = tx.load(user).await?;
        let at = now();
        let events = wallet
            .state
            .handle(WalletCommand::Open(OpenAccount {
                account_id: AccountId::generate(),
                owner: user,
                currency: self.policy.currency,
                welcome_credit: self
                    .policy
                    .welcome_credit
                    .map(|credit| (TransactionId::generate(), credit)),
                at,
            }))
            .map_err(PaymentError::from)?;
        let opening = if events.is_empty() {
            Opening::AlreadyOpen
        } else {
            tx.append(&mut wallet, events, &context.metadata()).await?;
            Opening::Opened
        };
        // Claimed last, like every idempotency record (see `crate::store`);
        // a twin that got there first means its wallet is the one to keep,
        // and dropping the transaction rolls this one's append back.
        if !tx.claim(inbox, message_id).await? {
            return Ok(Opening::Duplicate);
        }
        tx.commit().await?;
        Ok(opening)
    }

    /// Adds `amount` to the owner's wallet, once per idempotency key: the
    /// same key with the same amount answers with the original deposit, with
    /// another amount it is refused.
    pub async fn deposit(
        &self,
        user: UserId,
        amount: Amount,
        key: IdempotencyKey,
    ) -> Result<DepositReceipt, PaymentError> {
        let mut retry = Retry::new();
        loop {
            if let Some(deposit) = self.store.deposit(user, &key).await? {
                return if deposit.amount == amount.money() {
                    Ok(DepositReceipt {
                        deposit,
                        replayed: true,
                    })
                } else {
                    Err(PaymentError::IdempotencyKeyReused)
                };
            }
            match self.try_deposit(user, amount, &key).await {
                Err(WriteError::Conflict) => retry.wait().await?,
                Err(WriteError::Failed(error)) => return Err(error),
                Ok(deposit) => {
                    return Ok(DepositReceipt {
                        deposit,
                        replayed: false,
                    });
                }
            }
        }
    }

    async fn try_deposit(
        &self,
        user: UserId,
        amount: Amount,
        key: &IdempotencyKey,
    ) -> Result<DepositRecord, WriteError> {
        let mut tx = self.store.begin().await?;
        let mut wallet = tx.load(user).await?;
        let transaction_id = TransactionId::generate();
        let at = now();
        let events = wallet
            .state
            .handle(WalletCommand::Deposit(Deposit {
                transaction_id,
                amount,
                idempotency_key: Some(key.clone()),
                at,
            }))
            .map_err(PaymentError::from)?;
        tx.append(&mut wallet, events, &RequestContext::user(user).metadata())
            .await?;
        let account = opened(&wallet.state)?;
        let deposit = DepositRecord {
            user_id: user,
            idempotency_key: key.clone(),
            amount: amount.money(),
            transaction_id,
            account_id: account.id,
            balance_after: account.balance,
            created_at: at,
        };
        tx.record_deposit(&deposit).await?;
        tx.commit().await?;
        Ok(deposit)
    }

    /// Handles a saga command: charges or refunds at most once per command
    /// id, and answers every copy of the command alike. `unopened` says
    /// whether a customer without a wallet gets an answer now or may still
    /// be waited for.
    pub async fn execute(
        &self,
        request: &PaymentRequest,
        unopened: UnopenedWallet,
        context: &RequestContext,
    ) -> Result<CommandOutcome, PaymentError> {
        let mut retry = Retry::new();
        let outcome = loop {
            if let Some(record) = self
                .store
                .command::<CommandOutcome>(request.command_id.as_str())
                .await?
            {
                let outcome = if same_request(&record, request) {
                    record.reply
                } else {
                    tracing::warn!(
                        command_id = %request.command_id,
                        "command id re-used for a different request; refused"
                    );
                    CommandOutcome::CommandIdReused
                };
                count(request.kind, "duplicate");
                return Ok(outcome);
            }
            if request.kind == CommandKind::Charge {
                platform::faults::inject(CHARGE_FAULT_POINT).await?;
            }
            match self.try_execute(request, unopened, context).await {
                Err(WriteError::Conflict) => retry.wait().await?,
                Err(WriteError::Failed(error)) => return Err(error),
                Ok(outcome) => break outcome,
            }
        };
        count(request.kind, outcome.label());
        tracing::info!(
            command_id = %request.command_id,
            order_id = %request.order_id,
            kind = request.kind.as_str(),
            outcome = outcome.label(),
            "payment command handled"
        );
        Ok(outcome)
    }

    async fn try_execute(
        &self,
        request: &PaymentRequest,
        unopened: UnopenedWallet,
        context: &RequestContext,
    ) -> Result<CommandOutcome, WriteError> {
        let mut tx = self.store.begin().await?;
        let mut wallet = tx.load(request.customer).await?;
        if unopened == UnopenedWallet::Wait && wallet.state.account().is_none() {
            return Err(WriteError::Failed(PaymentError::AccountNotFound));
        }
        let at = now();
        let (events, outcome) = match request.kind {
            CommandKind::Charge => {
                let decision = wallet.state.charge(Charge {
                    payment_id: TransactionId::generate(),
                    command_id: request.command_id.clone(),
                    order_id: request.order_id,
                    amount: request.amount,
                    at,
                });
                let outcome = match decision.outcome {
                    ChargeOutcome::Charged { payment_id, amount } => {
                        CommandOutcome::Charged { payment_id, amount }
                    }
                    ChargeOutcome::Declined(reason) => CommandOutcome::Declined { reason },
                };
                (decision.events, outcome)
            }
            CommandKind::Refund => {
                let decision = wallet
                    .state
                    .refund(Refund {
                        refund_id: TransactionId::generate(),
                        command_id: request.command_id.clone(),
                        order_id: request.order_id,
                        amount: request.amount,
                        at,
                    })
                    .map_err(PaymentError::from)?;
                let outcome = match decision.outcome {
                    RefundOutcome::Refunded { refund_id, amount } => {
                        CommandOutcome::Refunded { refund_id, amount }
                    }
                    RefundOutcome::Declined(reason) => CommandOutcome::Declined { reason },
                };
                (decision.events, outcome)
            }
        };
        if let Some(account) = wallet.state.account()
            && !events.is_empty()
        {
            let messages = self.announcements.for_events(account, &events)?;
            tx.append(&mut wallet, events, &context.metadata()).await?;
            tx.enqueue(&messages).await?;
        }
        tx.record_command(&CommandRecord {
            command_id: request.command_id.as_str().to_owned(),
            kind: request.kind,
            customer_id: request.customer,
            order_id: request.order_id.as_uuid(),
            amount: request.amount.minor_units(),
            currency: request.amount.currency().as_str().to_owned(),
            reply: outcome.clone(),
        })
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Stops deposits and charges (admin).
    pub async fn freeze(
        &self,
        user: UserId,
        reason: String,
        context: &RequestContext,
    ) -> Result<Account, PaymentError> {
        self.change(user, context, WalletCommand::Freeze { reason, at: now() })
            .await
    }

    /// Lifts a freeze (admin).
    pub async fn unfreeze(
        &self,
        user: UserId,
        context: &RequestContext,
    ) -> Result<Account, PaymentError> {
        self.change(user, context, WalletCommand::Unfreeze { at: now() })
            .await
    }

    /// Sets where the balance is paid out when the wallet closes (owner).
    pub async fn set_payout_iban(&self, user: UserId, iban: Iban) -> Result<Account, PaymentError> {
        let command = WalletCommand::SetPayoutIban { iban, at: now() };
        self.change(user, &RequestContext::user(user), command)
            .await
    }

    /// Closes the wallet, paying its balance out (admin).
    pub async fn close(
        &self,
        user: UserId,
        context: &RequestContext,
    ) -> Result<Account, PaymentError> {
        self.change(user, context, WalletCommand::Close { at: now() })
            .await
    }

    /// Load, decide, append; re-run on a write race. Answers with the
    /// account as it is afterwards.
    async fn change(
        &self,
        user: UserId,
        context: &RequestContext,
        command: WalletCommand,
    ) -> Result<Account, PaymentError> {
        let mut retry = Retry::new();
        loop {
            match self.try_change(user, context, command.clone()).await {
                Err(WriteError::Conflict) => retry.wait().await?,
                Err(WriteError::Failed(error)) => return Err(error),
                Ok(account) => return Ok(account),
            }
        }
    }

    async fn try_change(
        &self,
        user: UserId,
        context: &RequestContext,
        command: WalletCommand,
    ) -> Result<Account, WriteError> {
        let mut tx = self.store.begin().await?;
        let mut wallet = tx.load(user).await?;
        let events = wallet.state.handle(command).map_err(PaymentError::from)?;
        if !events.is_empty() {
            tx.append(&mut wallet, events, &context.metadata()).await?;
            tx.commit().await?;
        }
        Ok(opened(&wallet.state)?.clone())
    }
}

/// The account of a wallet that must be open by now.
fn opened(wallet: &WalletAccount) -> Result<&Account, PaymentError> {
    wallet.account().ok_or(PaymentError::AccountNotFound)
}

/// Whether a stored command is the same request as `request`.
fn same_request<R>(record: &CommandRecord<R>, request: &PaymentRequest) -> bool {
    record.kind == request.kind
        && record.customer_id == request.customer
        && record.order_id == request.order_id.as_uuid()
        && record.amount == request.amount.minor_units()
        && record.currency == request.amount.currency().as_str()
}

fn count(kind: CommandKind, outcome: &'static str) {
    metrics::counter!(COMMANDS_TOTAL, "command" => kind.as_str(), "outcome" => outcome)
        .increment(1);
}
