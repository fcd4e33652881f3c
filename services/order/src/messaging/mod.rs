//! Broker adapters: what goes out through the outbox ([`outbox`], with the
//! wire types in [`contract`]), the payment service's replies coming in
//! ([`replies`], RabbitMQ), and the integration events the `product_sales`
//! read model is built from ([`sales`], Kafka).
//!
//! Consumers decide how each kind of failure is settled with the broker: a
//! message that can never be processed (it does not parse) is dead-lettered
//! at once; a failure that may pass (the database is down, a race kept
//! losing) is requeued until the subscription's attempts run out.

pub mod contract;
pub mod outbox;
pub mod replies;
pub mod sales;

use std::time::Duration;

use messaging::{Broker, DeliveryStream, Subscription};
use platform::db::Database;
use tokio_util::sync::CancellationToken;

/// Waits for the schema, then subscribes, retrying with backoff while the
/// broker is unreachable. `None` once `cancel` fires.
async fn subscribe(
    database: &Database,
    broker: &Broker,
    subscription: &Subscription,
    cancel: &CancellationToken,
) -> Option<DeliveryStream> {
    tokio::select! {
        () = database.migrated() => {}
        () = cancel.cancelled() => return None,
    }
    let mut delay = Duration::from_millis(250);
    loop {
        match broker.subscribe(subscription).await {
            Ok(stream) => {
                tracing::info!(
                    destination = %subscription.destination,
                    group = %subscription.group,
                    "consuming"
                );
                return Some(stream);
            }
            Err(error) => {
                tracing::warn!(destination = %subscription.destination, %error, retry_in_ms = delay.as_millis() as u64, "cannot subscribe yet");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
