//! Integration events: how a service tells the others what happened.
//!
//! A use case never publishes. It writes the event into the outbox in its own
//! transaction ([`outbox_message`] builds the row), and [`relay`] publishes
//! committed rows afterwards, so an event goes out if and only if the change
//! it announces was committed — also when the broker is down at that moment:
//! the row waits. Delivery is at least once; consumers deduplicate by
//! `ce_id`, which is the outbox message id.
//!
//! Every event is a CloudEvents 1.0 message in binary mode (one header per
//! attribute, the payload plain JSON), keyed so that one aggregate's events
//! stay in order, and carrying the W3C trace context of the code that caused
//! it, so a trace continues through the broker.
//!
//! The event store's relay and the messaging crate's brokers know nothing of
//! each other; this crate is the one bridge between them ([`BrokerPublisher`]),
//! and the consuming side's start-up ([`subscribe`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventstore::{OutboxMessage, OutboxRelay, PublishError, Publisher, RelayConfig};
use messaging::{
    Broker, DeliveryStream, DestinationSpec, MessagingError, Nack, Subscription, envelope,
};
use platform::db::Database;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The CloudEvents attributes of one integration event.
#[derive(Debug, Clone, Copy)]
pub struct EventAttributes<'a> {
    /// The topic it is published to, e.g. `ferrishop.inventory.events`.
    pub topic: &'a str,
    /// `ce_source`: the emitting service, e.g. `/ferrishop/inventory`.
    pub source: &'a str,
    /// `ce_type`, e.g. `inventory.stock_reserved`.
    pub event_type: &'a str,
    /// The partition key: events with one key keep their order.
    pub key: &'a str,
    /// `ce_subject`: what the event is about (often the key).
    pub subject: &'a str,
    /// `ce_time`; the outbox row's creation time when `None`.
    pub time: Option<DateTime<Utc>>,
}

/// The outbox row announcing `body`, with its CloudEvents headers and the
/// current span's trace context. Its `ce_id` is the outbox message id.
pub fn outbox_message<T: Serialize>(
    attributes: &EventAttributes<'_>,
    body: &T,
) -> Result<OutboxMessage, serde_json::Error> {
    let message = OutboxMessage::json(attributes.topic, attributes.key, body)?;
    let id = message.id.to_string();
    let time = envelope::format_time(attributes.time.unwrap_or(message.created_at));
    let mut message = message
        .with_header(envelope::SPEC_VERSION, envelope::SPEC_VERSION_1_0)
        .with_header(envelope::ID, id)
        .with_header(envelope::TYPE, attributes.event_type)
        .with_header(envelope::SOURCE, attributes.source)
        .with_header(envelope::SUBJECT, attributes.subject)
        .with_header(envelope::TIME, time)
        .with_header(envelope::PARTITION_KEY, attributes.key);
    let mut trace = http::HeaderMap::new();
    platform::propagation::inject_current(&mut trace);
    for (name, value) in &trace {
        if let Ok(value) = value.to_str() {
            message = message.with_header(name.as_str(), value);
        }
    }
    Ok(message)
}

/// Publishes outbox rows through a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerPublisher {
    broker: Broker,
}

impl BrokerPublisher {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }
}

#[async_trait::async_trait]
impl Publisher for BrokerPublisher {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        self.broker
            .publish_parts(
                &message.destination,
                Some(&message.key),
                message.headers.clone(),
                message.payload.clone(),
            )
            .await
            .map(drop)
            .map_err(classify)
    }
}

/// Only a message that can never be sent is parked; anything that might be
/// the broker's passing trouble (including a topic that does not exist yet)
/// is retried, holding back its key's later messages so their order holds.
fn classify(error: MessagingError) -> PublishError {
    match error {
        MessagingError::TooLarge { .. } | MessagingError::Invalid { .. } => {
            PublishError::Rejected(error.to_string())
        }
        other => PublishError::Unavailable(other.to_string()),
    }
}

/// Relays the outbox to `broker` until `cancel` fires: waits for the
/// migrated schema, makes sure `topic` exists (retrying with backoff while
/// the broker is away), then publishes.
pub async fn relay(database: Database, broker: Broker, topic: String, cancel: CancellationToken) {
    if !database.migrated_unless_cancelled(&cancel).await {
        return;
    }
    if !ensure_destination(&broker, &DestinationSpec::new(topic), &cancel).await {
        return;
    }
    let publisher = Arc::new(BrokerPublisher::new(broker));
    OutboxRelay::new(database.pool().clone(), publisher, RelayConfig::default())
        .run(cancel)
        .await;
}

/// Creates `spec` on `broker`, retrying with backoff (250 ms doubling to
/// 10 s) while the broker is away. `false` once `cancel` fires first.
pub async fn ensure_destination(
    broker: &Broker,
    spec: &DestinationSpec,
    cancel: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(250);
    while let Err(error) = broker.ensure_destination(spec).await {
        tracing::warn!(destination = %spec.name, %error, retry_in_ms = delay.as_millis() as u64, "cannot create a destination yet");
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    true
}

/// How a consumer gives back a message whose handling failed with `error`:
/// held while the database is unreachable ([`Nack::unavailable`], no attempt
/// spent), else retried and counted, up to the subscription's attempts.
pub fn database_nack(error: &sqlx::Error) -> Nack {
    if platform::db::is_unavailable(error) {
        Nack::unavailable(format!("database unavailable: {error}"))
    } else {
        Nack::requeue(format!("database: {error}"))
    }
}

/// Waits for the schema, then subscribes, retrying with backoff (250 ms
/// doubling to 10 s) while the broker is unreachable. `None` once `cancel`
/// fires.
pub async fn subscribe(
    database: &Database,
    broker: &Broker,
    subscription: &Subscription,
    cancel: &CancellationToken,
) -> Option<DeliveryStream> {
    if !database.migrated_unless_cancelled(cancel).await {
        return None;
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

#[cfg(test)]
mod tests {
    use messaging::MessagingSystem;

    use super::*;

    #[derive(Serialize)]
    struct Restocked {
        sku: &'static str,
        quantity: u32,
    }

    #[test]
    fn events_are_binary_mode_cloud_events_keyed_by_aggregate() {
        let time = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let attributes = EventAttributes {
            topic: "ferrishop.inventory.events",
            source: "/ferrishop/inventory",
            event_type: "inventory.restocked",
            key: "product-7",
            subject: "product-7",
            time: Some(time),
        };
        let message = outbox_message(
            &attributes,
            &Restocked {
                sku: "KB-1",
                quantity: 3,
            },
        )
        .unwrap();
        assert_eq!(message.destination, "ferrishop.inventory.events");
        assert_eq!(message.key, "product-7");
        assert_eq!(message.headers["ce_specversion"], "1.0");
        assert_eq!(message.headers["ce_id"], message.id.to_string());
        assert_eq!(message.headers["ce_type"], "inventory.restocked");
        assert_eq!(message.headers["ce_source"], "/ferrishop/inventory");
        assert_eq!(message.headers["ce_subject"], "product-7");
        assert_eq!(message.headers["ce_partitionkey"], "product-7");
        assert_eq!(message.headers["ce_time"], envelope::format_time(time));
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload, serde_json::json!({"sku": "KB-1", "quantity": 3}));
    }

    #[test]
    fn without_a_time_the_row_creation_time_is_the_event_time() {
        let attributes = EventAttributes {
            topic: "t",
            source: "/s",
            event_type: "x.y",
            key: "k",
            subject: "k",
            time: None,
        };
        let message = outbox_message(&attributes, &()).unwrap();
        assert_eq!(
            message.headers["ce_time"],
            envelope::format_time(message.created_at)
        );
    }

    #[test]
    fn a_database_out_of_reach_holds_the_message_and_other_failures_count() {
        let unreachable = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(database_nack(&unreachable).retry, messaging::Retry::Held);
        assert_eq!(
            database_nack(&sqlx::Error::PoolTimedOut).retry,
            messaging::Retry::Held
        );
        let bug = sqlx::Error::ColumnNotFound("id".into());
        assert_eq!(database_nack(&bug).retry, messaging::Retry::Counted);
    }

    #[test]
    fn only_unsendable_messages_are_parked() {
        let system = MessagingSystem::Kafka;
        let too_large = MessagingError::TooLarge {
            system,
            destination: "t".into(),
            size: 2,
            limit: 1,
        };
        assert!(matches!(classify(too_large), PublishError::Rejected(_)));
        let unconfirmed = MessagingError::NotConfirmed {
            system,
            destination: "t".into(),
            reason: "broker went away".into(),
        };
        assert!(matches!(
            classify(unconfirmed),
            PublishError::Unavailable(_)
        ));
    }
}
