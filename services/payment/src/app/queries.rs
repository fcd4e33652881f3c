//! Use cases that only read.
//!
//! The wallet itself is read from the event store (its snapshot plus the
//! few events after it): that is always current, so a balance right after a
//! deposit or a charge is never stale. The transaction history is a read
//! model fed by a projection ([`crate::projection`]) and therefore a moment
//! behind the events; a listing first waits (briefly) until the model has
//! caught up with the wallet's stream version, so an owner who has just
//! deposited sees the deposit in the list.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use platform::pagination::PageSize;

use super::Payments;
use crate::domain::ids::{AccountId, OrderId, TransactionId, UserId};
use crate::domain::money::{Currency, Money};
use crate::domain::wallet::Account;
use crate::error::PaymentError;
use crate::store::{DepositRecord, TransactionRow};

/// How long a listing waits for the read model to catch up before it
/// answers with what is there.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// What moved money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    Deposit,
    Charge,
    Refund,
    /// The balance paid out to the payout IBAN when the wallet closed.
    Payout,
}

impl TransactionKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "DEPOSIT",
            Self::Charge => "CHARGE",
            Self::Refund => "REFUND",
            Self::Payout => "PAYOUT",
        }
    }

    /// Parses `DEPOSIT`, `CHARGE`, `REFUND` or `PAYOUT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "DEPOSIT" => Ok(Self::Deposit),
            "CHARGE" => Ok(Self::Charge),
            "REFUND" => Ok(Self::Refund),
            "PAYOUT" => Ok(Self::Payout),
            other => Err(format!(
                "{other:?} is not one of DEPOSIT, CHARGE, REFUND, PAYOUT"
            )),
        }
    }
}

/// One movement of money, as the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionView {
    pub id: TransactionId,
    pub account_id: AccountId,
    pub kind: TransactionKind,
    /// Always positive; `kind` gives the direction.
    pub amount: Money,
    pub balance_after: Money,
    pub order_id: Option<OrderId>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl TransactionView {
    /// The transaction a deposit made.
    pub fn of_deposit(deposit: &DepositRecord) -> Self {
        Self {
            id: deposit.transaction_id,
            account_id: deposit.account_id,
            kind: TransactionKind::Deposit,
            amount: deposit.amount,
            balance_after: deposit.balance_after,
            order_id: None,
            idempotency_key: Some(deposit.idempotency_key.as_str().to_owned()),
            created_at: deposit.created_at,
        }
    }

    fn of_row(row: TransactionRow) -> Result<Self, PaymentError> {
        let currency = Currency::parse(&row.currency).map_err(PaymentError::internal)?;
        let money = |amount| Money::new(amount, currency).map_err(PaymentError::internal);
        Ok(Self {
            id: TransactionId::from_uuid(row.transaction_id),
            account_id: AccountId::from_uuid(row.account_id),
            kind: TransactionKind::parse(&row.kind).map_err(PaymentError::Internal)?,
            amount: money(row.amount)?,
            balance_after: money(row.balance_after)?,
            order_id: row.order_id.map(OrderId::from_uuid),
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
        })
    }
}

/// Where a page of transactions starts: before this stream version. Opaque
/// to clients; its text form is `v<version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(i64);

impl Cursor {
    pub fn parse(text: &str) -> Result<Self, String> {
        text.strip_prefix('v')
            .and_then(|version| version.parse::<i64>().ok())
            .filter(|version| *version > 0)
            .map(Self)
            .ok_or_else(|| "not a cursor from a previous page".to_owned())
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A page of transactions, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<TransactionView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl Payments {
    /// The user's wallet.
    pub async fn account(&self, user: UserId) -> Result<Account, PaymentError> {
        let wallet = self.store.load(user).await?;
        wallet
            .state
            .account()
            .cloned()
            .ok_or(PaymentError::AccountNotFound)
    }

    /// The user's transactions, newest first.
    pub async fn transactions(
        &self,
        user: UserId,
        kind: Option<TransactionKind>,
        limit: PageSize,
        cursor: Option<Cursor>,
    ) -> Result<Page, PaymentError> {
        let target = self.store.stream_version(user).await?;
        if target == 0 {
            return Err(PaymentError::AccountNotFound);
        }
        self.catch_up(user, target).await?;
        // One more than asked for says whether there is a next page.
        let fetch = i64::from(limit.get()) + 1;
        let mut rows = self
            .store
            .transactions(
                user,
                kind.map(TransactionKind::as_str),
                cursor.map(|c| c.0),
                fetch,
            )
            .await?;
        let next_cursor = if rows.len() > limit.get() as usize {
            rows.truncate(limit.get() as usize);
            rows.last().map(|row| Cursor(row.version))
        } else {
            None
        };
        let items = rows
            .into_iter()
            .map(TransactionView::of_row)
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }

    /// Waits until the read model has applied the wallet's stream up to
    /// `version`, or [`CATCH_UP_WAIT`] has passed.
    async fn catch_up(&self, user: UserId, version: i64) -> Result<(), PaymentError> {
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let reached = self.store.read_model_version(user).await?;
            if reached.is_some_and(|reached| reached >= version) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::debug!(%user, version, ?reached, "transactions read model behind; answering with what it has");
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cursors_refuse_what_they_did_not_make() {
        for bad in ["", "12", "v", "v0", "v-3", "vx"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn cursors_round_trip(version in 1_i64..) {
            let cursor = Cursor(version);
            prop_assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor));
        }
    }
}
