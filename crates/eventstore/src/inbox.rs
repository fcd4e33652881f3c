//! Inbox: consumer-side deduplication, so at-least-once delivery has
//! exactly-once effects.
//!
//! Brokers redeliver (an ack lost with a crashed consumer, a relay that
//! republished, a consumer-group rebalance). A consumer makes that harmless
//! by recording each message id it handled — per consumer name, since
//! several consumers in one database may each need to handle the same
//! message — **in the same transaction as the handler's effect**. The record
//! is inserted first (`ON CONFLICT DO NOTHING`): if the id is already there
//! the message is a duplicate and the handler does not run; if a concurrent
//! delivery of the same message is still in flight, the insert waits for it
//! and then sees its outcome. A handler that fails rolls back its effect and
//! the record together, so the redelivery runs it again.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

/// Whether the handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxOutcome<T> {
    /// First delivery: the handler ran and its effect committed.
    Processed(T),
    /// Seen before: nothing ran.
    Duplicate,
}

/// Why a message was not processed; nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError<E: std::error::Error + 'static> {
    #[error("message handler failed: {0}")]
    Handler(#[source] E),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The deduplication record of one named consumer.
#[derive(Debug, Clone)]
pub struct Inbox {
    consumer: String,
}

impl Inbox {
    /// An inbox for `consumer`, e.g. `"payment.user-registered"`.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Records `message_id` on the caller's transaction. `true` when this is
    /// the first time: go ahead and apply the effect in the same
    /// transaction. `false` for a duplicate.
    pub async fn claim(
        &self,
        connection: &mut PgConnection,
        message_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(message_id)
        .execute(connection)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Runs `handler` in a transaction together with the inbox record,
    /// unless `message_id` was already handled. Ack the message to the
    /// broker after this returns `Ok` (either outcome).
    ///
    /// ```ignore
    /// inbox.handle(&pool, &message_id, |connection| Box::pin(async move {
    ///     sqlx::query("UPDATE wallets SET balance = balance + $1 WHERE id = $2")
    ///         .bind(amount).bind(wallet).execute(connection).await
    /// })).await?;
    /// ```
    pub async fn handle<T, E, F>(
        &self,
        pool: &PgPool,
        message_id: &str,
        handler: F,
    ) -> Result<InboxOutcome<T>, InboxError<E>>
    where
        E: std::error::Error + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, E>>,
    {
        let mut transaction = pool.begin().await?;
        if !self.claim(&mut transaction, message_id).await? {
            tracing::debug!(consumer = %self.consumer, message_id, "duplicate message skipped");
            return Ok(InboxOutcome::Duplicate);
        }
        let output = handler(&mut transaction)
            .await
            .map_err(InboxError::Handler)?;
        transaction.commit().await?;
        Ok(InboxOutcome::Processed(output))
    }
}

/// Forgets the records of every consumer handled more than `retention` ago,
/// once no broker would redeliver their messages
/// ([`RelayConfig::inbox_retention`](crate::RelayConfig::inbox_retention)
/// runs it); returns how many.
pub async fn purge_processed(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    crate::outbox::delete_older_than(
        pool,
        "DELETE FROM inbox WHERE processed_at < now() - $1 * interval '1 millisecond'",
        retention,
    )
    .await
}
