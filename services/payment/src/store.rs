//! Postgres adapter: wallets in the event store, and the few tables kept
//! next to them.
//!
//! A write use case runs on one [`StoreTx`]: load the wallet, append its new
//! events with the version it was loaded at, write the outbox messages that
//! announce them and the record that makes the request idempotent — all in
//! one transaction, so either everything about a charge happened or none of
//! it did. A concurrent writer of the same wallet makes the append fail with
//! [`WriteError::Conflict`] (optimistic concurrency, never a lost update);
//! the use case then starts over on a fresh transaction.
//!
//! The idempotency records (`payment_commands`, `deposit_requests`) are
//! inserted *last*, after the append. Inserting them first would give the
//! transaction its id before the append, and the event store refuses an
//! append whose transaction is older than the stream's latest one (see the
//! eventstore crate docs), turning ordinary contention into extra retries.
//! Inserted last, a duplicate shows up as an insert that changes nothing
//! (`ON CONFLICT DO NOTHING` waits for a concurrent twin to finish first),
//! and the use case rolls back and answers from the twin's record.

use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use eventstore::{
    Appended, EventMetadata, EventStore, Inbox, LoadedAggregate, OutboxMessage, Repository,
    SnapshotPolicy,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::domain::events::WalletEvent;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId, UserId};
use crate::domain::money::Money;
use crate::domain::wallet::WalletAccount;
use crate::error::PaymentError;

/// A wallet is snapshotted every this many events, so loading one reads at
/// most this many events plus a snapshot however long its history.
const SNAPSHOT_EVERY: u64 = 50;

/// Why a write did not commit.
#[derive(Debug)]
pub enum WriteError {
    /// Another writer changed the wallet (or recorded the same request)
    /// first; nothing was written. Start over.
    Conflict,
    Failed(PaymentError),
}

impl From<PaymentError> for WriteError {
    fn from(error: PaymentError) -> Self {
        Self::Failed(error)
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(error.into())
    }
}

impl From<eventstore::RepositoryError> for WriteError {
    fn from(error: eventstore::RepositoryError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<eventstore::OutboxError> for WriteError {
    fn from(error: eventstore::OutboxError) -> Self {
        Self::Failed(error.into())
    }
}

/// Which saga command a record is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Charge,
    Refund,
}

impl CommandKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Refund => "refund",
        }
    }
}

/// The service's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    events: EventStore,
    wallets: Repository<WalletAccount>,
}

/// A stored idempotency record of a saga command.
#[derive(Debug, Clone)]
pub struct CommandRecord<R> {
    pub command_id: String,
    pub kind: CommandKind,
    pub customer_id: UserId,
    pub order_id: uuid::Uuid,
    pub amount: i64,
    pub currency: String,
    pub reply: R,
}

/// A stored deposit, answered again for a repeated `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRecord {
    pub user_id: UserId,
    pub idempotency_key: IdempotencyKey,
    pub amount: Money,
    pub transaction_id: TransactionId,
    pub account_id: AccountId,
    pub balance_after: Money,
    pub created_at: DateTime<Utc>,
}

/// One row of the transactions read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRow {
    pub transaction_id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub version: i64,
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub balance_after: i64,
    pub order_id: Option<uuid::Uuid>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        let events = EventStore::new(pool.clone());
        let snapshots =
            NonZeroU64::new(SNAPSHOT_EVERY).map_or(SnapshotPolicy::Never, SnapshotPolicy::Every);
        Self {
            wallets: Repository::new(events.clone()).with_snapshots(snapshots),
            events,
            pool,
        }
    }

    /// The stream of `user`'s wallet.
    pub fn stream_id(user: UserId) -> String {
        Repository::<WalletAccount>::stream_id(&user.to_string())
    }

    /// The user's wallet as of now.
    pub async fn load(&self, user: UserId) -> Result<LoadedAggregate<WalletAccount>, PaymentError> {
        Ok(self.wallets.load(&user.to_string()).await?)
    }

    /// The version of the user's wallet stream (0: no wallet).
    pub async fn stream_version(&self, user: UserId) -> Result<i64, PaymentError> {
        Ok(self.events.stream_version(&Self::stream_id(user)).await?)
    }

    pub async fn begin(&self) -> Result<StoreTx<'_>, PaymentError> {
        Ok(StoreTx {
            tx: self.pool.begin().await?,
            wallets: &self.wallets,
        })
    }

    /// The record of a command handled before, if any.
    pub async fn command<R: DeserializeOwned>(
        &self,
        command_id: &str,
    ) -> Result<Option<CommandRecord<R>>, PaymentError> {
        let row = sqlx::query(
            "SELECT kind, customer_id, order_id, amount, currency, reply \
               FROM payment_commands WHERE command_id = $1",
        )
        .bind(command_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind")?;
        let reply: serde_json::Value = row.try_get("reply")?;
        Ok(Some(CommandRecord {
            command_id: command_id.to_owned(),
            kind: if kind == CommandKind::Charge.as_str() {
                CommandKind::Charge
            } else {
                CommandKind::Refund
            },
            customer_id: UserId::from_uuid(row.try_get("customer_id")?),
            order_id: row.try_get("order_id")?,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            reply: serde_json::from_value(reply).map_err(PaymentError::internal)?,
        }))
    }

    /// The deposit made with `key` by `user`, if any.
    pub async fn deposit(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<DepositRecord>, PaymentError> {
        let row = sqlx::query(
            "SELECT amount, currency, transaction_id, account_id, balance_after, created_at \
               FROM deposit_requests WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user.as_uuid())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let currency: String = row.try_get("currency")?;
        let currency =
            crate::domain::money::Currency::parse(&currency).map_err(PaymentError::internal)?;
        let money = |column: &str| -> Result<Money, PaymentError> {
            Money::new(row.try_get(column)?, currency).map_err(PaymentError::internal)
        };
        Ok(Some(DepositRecord {
            user_id: user,
            idempotency_key: key.clone(),
            amount: money("amount")?,
            transaction_id: TransactionId::from_uuid(row.try_get("transaction_id")?),
            account_id: AccountId::from_uuid(row.try_get("account_id")?),
            balance_after: money("balance_after")?,
            created_at: row.try_get("created_at")?,
        }))
    }

    /// The stream version the transactions read model has reached for
    /// `user` (`None`: nothing applied yet).
    pub async fn read_model_version(&self, user: UserId) -> Result<Option<i64>, PaymentError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM wallet_balances WHERE user_id = $1")
                .bind(user.as_uuid())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` transactions of `user`, newest first, older than
    /// stream version `before` when given, of one `kind` when given.
    pub async fn transactions(
        &self,
        user: UserId,
        kind: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TransactionRow>, PaymentError> {
        let rows = sqlx::query(
            "SELECT transaction_id, account_id, version, kind, amount, currency, balance_after, \
                    order_id, idempotency_key, created_at \
               FROM wallet_transactions \
              WHERE user_id = $1 \
                AND ($2::text IS NULL OR kind = $2) \
                AND ($3::int8 IS NULL OR version < $3) \
              ORDER BY version DESC \
              LIMIT $4",
        )
        .bind(user.as_uuid())
        .bind(kind)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TransactionRow {
                    transaction_id: row.try_get("transaction_id")?,
                    account_id: row.try_get("account_id")?,
                    version: row.try_get("version")?,
                    kind: row.try_get("kind")?,
                    amount: row.try_get("amount")?,
                    currency: row.try_get("currency")?,
                    balance_after: row.try_get("balance_after")?,
                    order_id: row.try_get("order_id")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

/// One write transaction. Dropping it without [`StoreTx::commit`] rolls
/// everything back.
pub struct StoreTx<'a> {
    tx: Transaction<'static, Postgres>,
    wallets: &'a Repository<WalletAccount>,
}

impl StoreTx<'_> {
    /// The user's wallet, read in this transaction.
    pub async fn load(
        &mut self,
        user: UserId,
    ) -> Result<LoadedAggregate<WalletAccount>, WriteError> {
        Ok(self
            .wallets
            .load_on(&mut self.tx, &user.to_string())
            .await?)
    }

    /// Appends `events` to the wallet at the version it was loaded at and
    /// folds them into it; [`WriteError::Conflict`] when another writer got
    /// there first.
    pub async fn append(
        &mut self,
        wallet: &mut LoadedAggregate<WalletAccount>,
        events: Vec<WalletEvent>,
        metadata: &EventMetadata,
    ) -> Result<Appended, WriteError> {
        match self
            .wallets
            .save_in(&mut self.tx, wallet, events, metadata)
            .await
        {
            Ok(appended) => Ok(appended),
            Err(error) if error.is_conflict() => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes integration messages to the outbox, in their order.
    pub async fn enqueue(&mut self, messages: &[OutboxMessage]) -> Result<(), WriteError> {
        Ok(eventstore::enqueue_all(&mut self.tx, messages).await?)
    }

    /// Records that `message_id` was handled by `inbox`'s consumer: `false`
    /// when it already was (waiting first for a concurrent twin to finish).
    pub async fn claim(&mut self, inbox: &Inbox, message_id: &str) -> Result<bool, WriteError> {
        Ok(inbox.claim(&mut self.tx, message_id).await?)
    }

    /// Records a handled command with its reply; [`WriteError::Conflict`]
    /// when the command id is already recorded.
    pub async fn record_command<R: Serialize>(
        &mut self,
        record: &CommandRecord<R>,
    ) -> Result<(), WriteError> {
        let reply = serde_json::to_value(&record.reply).map_err(PaymentError::internal)?;
        let inserted = sqlx::query(
            "INSERT INTO payment_commands \
                    (command_id, kind, customer_id, order_id, amount, currency, reply) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(&record.command_id)
        .bind(record.kind.as_str())
        .bind(record.customer_id.as_uuid())
        .bind(record.order_id)
        .bind(record.amount)
        .bind(&record.currency)
        .bind(reply)
        .execute(&mut *self.tx)
        .await?;
        if inserted.rows_affected() == 1 {
            Ok(())
        } else {
            Err(WriteError::Conflict)
        }
    }

    /// Records a deposit under its idempotency key; [`WriteError::Conflict`]
    /// when the key is already recorded.
    pub async fn record_deposit(&mut self, record: &DepositRecord) -> Result<(), WriteError> {
        let inserted = sqlx::query(
            "INSERT INTO deposit_requests \
                    (user_id, idempotency_key, amount, currency, transaction_id, account_id, \
                     balance_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )
        .bind(record.user_id.as_uuid())
        .bind(record.idempotency_key.as_str())
        .bind(record.amount.amount())
        .bind(record.amount.currency().as_str())
        .bind(record.transaction_id.as_uuid())
        .bind(record.account_id.as_uuid())
        .bind(record.balance_after.amount())
        .bind(record.created_at)
        .execute(&mut *self.tx)
        .await?;
        if inserted.rows_affected() == 1 {
            Ok(())
        } else {
            Err(WriteError::Conflict)
        }
    }

    pub async fn commit(self) -> Result<(), WriteError> {
        Ok(self.tx.commit().await?)
    }
}
