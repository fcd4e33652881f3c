//! The transactions read model: every movement of money of every wallet,
//! with the balance after it, fed from the event store by the eventstore
//! crate's `ProjectionRunner`.
//!
//! The runner applies each batch of events and moves its checkpoint in one
//! transaction, one replica at a time. On top of that the projection is
//! idempotent by itself: each wallet's row in `wallet_balances` remembers the
//! last stream version applied, events at or below it are skipped, and
//! transactions are inserted by id with `ON CONFLICT DO NOTHING` — so
//! replaying the same events (a rebuild, a retried batch) leaves the read
//! model exactly as it was instead of counting money twice.
//!
//! The balance after each transaction is computed here, by adding and
//! subtracting in stream order, rather than stored in the events: events
//! record what happened, not derived numbers.

use eventstore::{ApplyError, DomainEvent, Projection, RecordedEvent, Repository};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::events::WalletEvent;
use crate::domain::wallet::WalletAccount;

/// The projection's name: its checkpoint and lease key, and the
/// `projection` label of `ferrishop_projection_lag_events`.
pub const NAME: &str = "payment.wallet_transactions";

/// Feeds `wallet_balances` and `wallet_transactions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalletTransactions;

/// A money movement to record.
struct Movement {
    id: Uuid,
    kind: &'static str,
    amount: i64,
    /// +1 adds to the balance, -1 takes from it.
    direction: i64,
    order_id: Option<Uuid>,
    idempotency_key: Option<String>,
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> ApplyError {
    ApplyError::Other(Box::new(error))
}

#[async_trait::async_trait]
impl Projection for WalletTransactions {
    fn name(&self) -> &str {
        NAME
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let prefix = Repository::<WalletAccount>::stream_id("");
        let Some(user) = event.stream_id.strip_prefix(&prefix) else {
            return Ok(());
        };
        let user = Uuid::parse_str(user).map_err(other)?;
        let wallet_event = WalletEvent::from_payload(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        )
        .map_err(other)?;

        if let WalletEvent::AccountOpened(opened) = &wallet_event {
            sqlx::query(
                "INSERT INTO wallet_balances (user_id, account_id, balance, currency, version) \
                 VALUES ($1, $2, 0, $3, $4) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user)
            .bind(opened.account_id.as_uuid())
            .bind(opened.currency.as_str())
            .bind(event.version)
            .execute(&mut *connection)
            .await?;
            return Ok(());
        }

        let head = sqlx::query(
            "SELECT account_id, balance, currency, version FROM wallet_balances \
              WHERE user_id = $1 FOR UPDATE",
        )
        .bind(user)
        .fetch_optional(&mut *connection)
        .await?;
        let Some(head) = head else {
            tracing::warn!(stream_id = %event.stream_id, version = event.version, "wallet event before its AccountOpened; skipped");
            return Ok(());
        };
        let applied: i64 = head.try_get("version")?;
        if event.version <= applied {
            return Ok(());
        }
        let account_id: Uuid = head.try_get("account_id")?;
        let currency: String = head.try_get("currency")?;
        let mut balance: i64 = head.try_get("balance")?;

        if let Some(movement) = movement(&wallet_event, event, balance) {
            balance += movement.direction * movement.amount;
            sqlx::query(
                "INSERT INTO wallet_transactions \
                        (transaction_id, user_id, account_id, version, kind, amount, currency, \
                         balance_after, order_id, idempotency_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (transaction_id) DO NOTHING",
            )
            .bind(movement.id)
            .bind(user)
            .bind(account_id)
            .bind(event.version)
            .bind(movement.kind)
            .bind(movement.amount)
            .bind(&currency)
            .bind(balance)
            .bind(movement.order_id)
            .bind(movement.idempotency_key)
            .bind(wallet_event.at())
            .execute(&mut *connection)
            .await?;
        }
        sqlx::query("UPDATE wallet_balances SET balance = $2, version = $3 WHERE user_id = $1")
            .bind(user)
            .bind(balance)
            .bind(event.version)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        sqlx::query("TRUNCATE wallet_transactions, wallet_balances")
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// The money an event moves, if any. A closing payout takes whatever the
/// balance was; it has no id of its own, so it is known by its event's.
fn movement(event: &WalletEvent, recorded: &RecordedEvent, balance: i64) -> Option<Movement> {
    match event {
        WalletEvent::Deposited(e) => Some(Movement {
            id: e.transaction_id.as_uuid(),
            kind: "DEPOSIT",
            amount: e.amount.minor_units(),
            direction: 1,
            order_id: None,
            idempotency_key: e
                .idempotency_key
                .as_ref()
                .map(|key| key.as_str().to_owned()),
        }),
        WalletEvent::Charged(e) => Some(Movement {
            id: e.payment_id.as_uuid(),
            kind: "CHARGE",
            amount: e.amount.minor_units(),
            direction: -1,
            order_id: Some(e.order_id.as_uuid()),
            idempotency_key: None,
        }),
        WalletEvent::Refunded(e) => Some(Movement {
            id: e.refund_id.as_uuid(),
            kind: "REFUND",
            amount: e.amount.minor_units(),
            direction: 1,
            order_id: Some(e.order_id.as_uuid()),
            idempotency_key: None,
        }),
        WalletEvent::AccountClosed(_) if balance > 0 => Some(Movement {
            id: recorded.event_id,
            kind: "PAYOUT",
            amount: balance,
            direction: -1,
            order_id: None,
            idempotency_key: None,
        }),
        _ => None,
    }
}
