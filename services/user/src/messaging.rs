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

use eventstore::OutboxMessage;
use integration::EventAttributes;

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
        let attributes = EventAttributes {
            topic: &self.topic,
            source: SOURCE,
            event_type: UserRegistered::TYPE,
            key: &event.user_id,
            subject: &event.user_id,
            time: Some(event.registered_at),
        };
        integration::outbox_message(&attributes, event).map_err(Error::internal)
    }
}

pub use integration::relay;

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
