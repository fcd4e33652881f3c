//! Integration events out: the outbox message each announcement becomes, and
//! the relay that moves committed outbox rows to the broker.
//!
//! Events are never published from a request. Registration writes its
//! `user.registered` message into the outbox in the user's own transaction
//! (see `store.rs`), and the relay publishes committed rows afterwards, so an
//! event goes out if and only if its user exists — also when the broker is
//! down at registration time: the row waits and is published once the broker
//! is back. Delivery is at least once; consumers deduplicate by `ce_id`,
//! which is the outbox message id.
//!
//! For the same reason the broker is not part of readiness: a broker outage
//! delays announcements but does not stop the service from serving.

use std::sync::Arc;
use std::time::Duration;

use eventstore::{OutboxMessage, OutboxRelay, PublishError, Publisher, RelayConfig};
use messaging::envelope;
use messaging::{Broker, DestinationSpec, MessagingError};
use platform::db::Database;
use tokio_util::sync::CancellationToken;

use crate::domain::UserRegistered;
use crate::error::Error;

/// The CloudEvents `source` of this service's events.
pub const SOURCE: &str = "/ferrishop/user";

/// Builds the outbox messages of this service's integration events.
#[derive(Debug, Clone)]
pub struct Announcements {
    topic: String,
}

impl Announcements {
    /// Events go to `topic` (`ferrishop.user.events` unless configured).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
        }
    }

    /// `user.registered`, keyed by user id (one partition per user keeps a
    /// user's events in order), as a binary-mode CloudEvent continuing the
    /// current trace.
    pub fn user_registered(&self, event: &UserRegistered) -> Result<OutboxMessage, Error> {
        let message =
            OutboxMessage::json(&self.topic, &event.user_id, event).map_err(Error::internal)?;
        let id = message.id.to_string();
        let mut message = message
            .with_header(envelope::SPEC_VERSION, envelope::SPEC_VERSION_1_0)
            .with_header(envelope::ID, id)
            .with_header(envelope::TYPE, UserRegistered::TYPE)
            .with_header(envelope::SOURCE, SOURCE)
            .with_header(envelope::SUBJECT, &event.user_id)
            .with_header(envelope::TIME, envelope::format_time(event.registered_at))
            .with_header(envelope::PARTITION_KEY, &event.user_id);
        let mut trace = http::HeaderMap::new();
        platform::propagation::inject_current(&mut trace);
        for (name, value) in &trace {
            if let Ok(value) = value.to_str() {
                message = message.with_header(name.as_str(), value);
            }
        }
        Ok(message)
    }
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
/// is retried, because a parked `user.registered` is a customer without a
/// wallet.
fn classify(error: MessagingError) -> PublishError {
    match error {
        MessagingError::TooLarge { .. } | MessagingError::Invalid { .. } => {
            PublishError::Rejected(error.to_string())
        }
        other => PublishError::Unavailable(other.to_string()),
    }
}

/// Relays the outbox to the broker until `cancel` fires: waits for the
/// migrated schema, makes sure the topic exists, then publishes.
pub async fn relay(database: Database, broker: Broker, topic: String, cancel: CancellationToken) {
    tokio::select! {
        () = database.migrated() => {}
        () = cancel.cancelled() => return,
    }
    let spec = DestinationSpec::new(topic);
    let mut delay = Duration::from_millis(250);
    while let Err(error) = broker.ensure_destination(&spec).await {
        tracing::warn!(topic = %spec.name, %error, retry_in_ms = delay.as_millis() as u64, "cannot create the events topic yet");
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let publisher = Arc::new(BrokerPublisher::new(broker));
    OutboxRelay::new(database.pool().clone(), publisher, RelayConfig::default())
        .run(cancel)
        .await;
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn user_registered_is_a_keyed_cloud_event_with_the_outbox_id() {
        let event = UserRegistered {
            user_id: "0193a0b2-0000-7000-8000-000000000001".into(),
            email: "ann@example.com".into(),
            name: "Ann".into(),
            registered_at: Utc::now(),
        };
        let message = Announcements::new("topic").user_registered(&event).unwrap();
        assert_eq!(message.destination, "topic");
        assert_eq!(message.key, event.user_id);
        let header = |name: &str| message.headers.get(name).map(String::as_str);
        assert_eq!(header("ce_type"), Some("user.registered"));
        assert_eq!(header("ce_source"), Some(SOURCE));
        assert_eq!(header("ce_subject"), Some(event.user_id.as_str()));
        assert_eq!(header("ce_specversion"), Some("1.0"));
        assert_eq!(header("ce_id"), Some(message.id.to_string().as_str()));
        assert_eq!(header("content-type"), Some("application/json"));
        let payload: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["user_id"], event.user_id);
        assert_eq!(payload["email"], "ann@example.com");
        assert_eq!(payload["name"], "Ann");
    }
}
