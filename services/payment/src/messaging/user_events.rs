//! `user.registered` in: every new user gets a wallet with the welcome
//! credit, so they can place an order at once (choreography — nobody asks the
//! payment service to do this; it reacts to the user service's news).
//!
//! The message is the user service's integration event (its
//! `UserRegistered`): CloudEvents `ce_type` `user.registered`, JSON
//! `{user_id, email, name, registered_at}`; only `user_id` is read. Other
//! event types on the topic are acknowledged and ignored. Kafka delivers at
//! least once; [`Payments::open_account`] deduplicates by `ce_id` in the
//! wallet's own transaction, and a wallet is opened at most once per user
//! whatever the message id.

use messaging::{Broker, Nack, ReceivedMessage, Subscription, envelope};
use platform::db::Database;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::commands::Opening;
use crate::app::{Payments, RequestContext};
use crate::domain::ids::UserId;

/// The `ce_type` that opens a wallet.
pub const USER_REGISTERED: &str = "user.registered";

/// Messages handled at once (Kafka keeps each partition's order per
/// consumer; wallets of different users are independent).
const CONCURRENCY: usize = 4;

/// The part of `user.registered` this service reads.
#[derive(Debug, Deserialize)]
struct UserRegistered {
    user_id: String,
}

/// Consumes `topic` as `group` until `cancel` fires.
pub async fn consume(
    payments: Payments,
    database: Database,
    broker: Broker,
    subscription: Subscription,
    cancel: CancellationToken,
) {
    let Some(deliveries) = super::subscribe(&database, &broker, &subscription, &cancel).await
    else {
        return;
    };
    deliveries
        .consume(CONCURRENCY, cancel, |message| {
            let payments = payments.clone();
            async move { handle(&payments, &message).await }
        })
        .await;
}

async fn handle(payments: &Payments, message: &ReceivedMessage) -> Result<(), Nack> {
    if message.headers.get(envelope::TYPE) != Some(USER_REGISTERED) {
        return Ok(());
    }
    let Some(message_id) = message.message_id() else {
        return Err(Nack::reject(
            "user.registered without a ce_id cannot be deduplicated",
        ));
    };
    let event: UserRegistered = serde_json::from_slice(&message.payload)
        .map_err(|error| Nack::reject(format!("user.registered body: {error}")))?;
    let user = UserId::parse(&event.user_id)
        .map_err(|error| Nack::reject(format!("user.registered user_id: {error}")))?;
    let context = RequestContext {
        user_id: Some(user),
        correlation_id: None,
        causation_id: Uuid::parse_str(message_id).ok(),
    };
    match payments.open_account(user, message_id, &context).await {
        Ok(Opening::Opened) => {
            tracing::info!(%user, "wallet opened");
            Ok(())
        }
        Ok(Opening::AlreadyOpen | Opening::Duplicate) => {
            tracing::debug!(%user, message_id, "wallet already open");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%user, %error, "opening the wallet failed");
            Err(error.nack())
        }
    }
}
