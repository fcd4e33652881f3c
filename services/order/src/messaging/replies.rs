//! The payment service's replies in (RabbitMQ), fed into the saga engine.
//!
//! Every payment command names our replies exchange in its `reply-to`
//! header; the payment service publishes exactly one reply per command
//! delivery there, echoing the command's `idempotency-key`
//! (`{saga_id}:{step}[:compensation]`), which is all the engine needs to
//! find the saga and step it answers ([`saga::Correlation`]).
//!
//! Each reply is recorded in one transaction with its inbox record (by
//! `ce_id`), so a redelivered reply is dropped before it reaches the engine;
//! the engine itself ignores any reply its saga no longer waits for (late,
//! or an answer to an earlier send of the same step). Once a recorded reply
//! has committed, a `NOTIFY` wakes a saga worker on whichever replica is
//! free ([`Sagas::announce_reply`]). While the database cannot be reached, a
//! reply is held until it can.

use eventstore::Inbox;
use integration::database_nack;
use messaging::{Broker, Nack, ReceivedMessage, Subscription};
use payment_contract::headers;
use platform::db::Database;
use saga::{Correlation, Reply, ReplyOutcome};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::saga::{ReplyError, Sagas};

/// The inbox consumer name of the replies.
pub const CONSUMER: &str = "order.payment-replies";

/// Replies handled at once (each is a short transaction).
const CONCURRENCY: usize = 8;

/// Consumes the replies queue until `cancel` fires.
pub async fn consume(
    sagas: Sagas,
    database: Database,
    broker: Broker,
    subscription: Subscription,
    cancel: CancellationToken,
) {
    let Some(deliveries) = super::subscribe(&database, &broker, &subscription, &cancel).await
    else {
        return;
    };
    let pool = database.pool().clone();
    deliveries
        .consume(CONCURRENCY, cancel, |message| {
            let (sagas, pool) = (sagas.clone(), pool.clone());
            async move { handle(&sagas, &pool, &message).await }
        })
        .await;
}

async fn handle(sagas: &Sagas, pool: &PgPool, message: &ReceivedMessage) -> Result<(), Nack> {
    let key = message
        .headers
        .get(headers::IDEMPOTENCY_KEY)
        .ok_or_else(|| Nack::reject("a reply without an idempotency-key header"))?;
    let correlation =
        Correlation::from_idempotency_key(key).map_err(|error| Nack::reject(error.to_string()))?;
    let mut reply = Reply::new(correlation, message.payload.to_vec());
    for (name, value) in message.headers.iter() {
        reply = reply.with_header(name, value);
    }

    let mut transaction = pool.begin().await.map_err(|e| database_nack(&e))?;
    if let Some(message_id) = message.message_id() {
        let first = Inbox::new(CONSUMER)
            .claim(&mut transaction, message_id)
            .await
            .map_err(|e| database_nack(&e))?;
        if !first {
            tracing::debug!(message_id, "duplicate reply skipped");
            return Ok(());
        }
    }
    let recorded = match sagas.on_reply_in(&mut transaction, &reply).await {
        Ok(ReplyOutcome::Recorded) => true,
        Ok(ReplyOutcome::Ignored(reason)) => {
            tracing::debug!(correlation = %reply.correlation, ?reason, "reply not awaited; dropped");
            false
        }
        Err(error @ ReplyError::UnknownStep(_)) => return Err(Nack::reject(error.to_string())),
        Err(ReplyError::Saga(saga::SagaError::Database(error))) => {
            return Err(database_nack(&error));
        }
        Err(ReplyError::Saga(error)) => return Err(Nack::requeue(error.to_string())),
    };
    transaction.commit().await.map_err(|e| database_nack(&e))?;
    if recorded {
        sagas.announce_reply(&reply).await;
    }
    Ok(())
}
