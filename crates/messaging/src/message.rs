//! Broker-neutral message types: headers, outgoing messages, replies.
//!
//! Services describe a message once — destination, optional ordering key,
//! text headers, opaque payload bytes — and the broker adapters map that onto
//! AMQP properties and headers, Kafka records and NATS header maps. Keeping
//! the neutral shape this small is deliberate: it is exactly what an outbox
//! row holds (destination, key, headers, payload), so the event store's relay
//! can publish through this crate with a ten-line adapter, and a message can
//! move from one broker to another by configuration alone.

use std::collections::BTreeMap;
use std::collections::btree_map;

use bytes::Bytes;

use crate::envelope::{self, CloudEvent};

/// Text headers of a message, ordered by name so that what is sent and what
/// arrives compare equal whatever order a broker keeps them in.
///
/// CloudEvents attributes (`ce_*`), `content-type` and the W3C
/// `traceparent`/`tracestate` travel here, next to any header of the service's
/// own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Sets `name` unless it is already set.
    pub fn insert_if_absent(&mut self, name: &str, value: impl FnOnce() -> String) {
        if !self.0.contains_key(name) {
            self.0.insert(name.to_owned(), value());
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Bytes the headers take on the wire, roughly (names plus values).
    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The CloudEvents attributes carried by these headers, if the required
    /// ones (`ce_id`, `ce_type`, `ce_source`) are present.
    pub fn cloud_event(&self) -> Option<CloudEvent> {
        CloudEvent::from_headers(self)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl From<BTreeMap<String, String>> for Headers {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl From<Headers> for BTreeMap<String, String> {
    fn from(headers: Headers) -> Self {
        headers.0
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = btree_map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a String, &'a String);
    type IntoIter = btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Whether a message (or subscription) must survive a broker restart.
///
/// `Durable` is the default and what commands and integration events need:
/// persistent messages, confirmed by the broker, consumed with acks.
/// `Transient` is for notifications that are worthless a second later (order
/// status pushed to a browser): NATS core pub/sub instead of JetStream, RabbitMQ
/// non-persistent messages and auto-deleted queues. Kafka stores everything, so
/// it treats both alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Persistence {
    #[default]
    Durable,
    Transient,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// RabbitMQ exchange, Kafka topic or NATS subject.
    pub destination: String,
    /// Ordering/partition key: messages with the same key are delivered in the
    /// order they were published (Kafka partition key, RabbitMQ routing key,
    /// `ce_partitionkey` header everywhere).
    pub key: Option<String>,
    pub headers: Headers,
    pub payload: Bytes,
    pub persistence: Persistence,
    /// The destination as it should appear in metric labels when the real
    /// name embeds an id (e.g. `ferrishop.orders.{id}.status`); defaults to
    /// the destination itself.
    pub destination_template: Option<String>,
    /// A command rather than an announcement: see
    /// [`OutgoingMessage::must_be_routed`].
    pub must_be_routed: bool,
}

impl OutgoingMessage {
    pub fn new(destination: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            destination: destination.into(),
            key: None,
            headers: Headers::new(),
            payload: payload.into(),
            persistence: Persistence::Durable,
            destination_template: None,
            must_be_routed: false,
        }
    }

    /// The outbox shape: destination, optional key, headers, payload.
    pub fn from_parts(
        destination: impl Into<String>,
        key: Option<String>,
        headers: impl IntoIterator<Item = (String, String)>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            key,
            headers: headers.into_iter().collect(),
            ..Self::new(destination, payload)
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the CloudEvents attributes (binary mode: one header each).
    pub fn with_event(mut self, event: &CloudEvent) -> Self {
        event.write_to(&mut self.headers);
        self
    }

    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Shorthand for `with_persistence(Persistence::Transient)`.
    pub fn transient(self) -> Self {
        self.with_persistence(Persistence::Transient)
    }

    /// A command, which someone must receive: on RabbitMQ the publish fails
    /// ([`MessagingError::NotConfirmed`](crate::MessagingError::NotConfirmed))
    /// when no queue is bound to take it (`mandatory`), instead of the broker
    /// confirming a message it then drops. A Kafka topic keeps every message,
    /// and a JetStream publish fails without a stream, so there it changes
    /// nothing.
    pub fn must_be_routed(mut self) -> Self {
        self.must_be_routed = true;
        self
    }

    pub fn with_destination_template(mut self, template: impl Into<String>) -> Self {
        self.destination_template = Some(template.into());
        self
    }

    /// The `ce_id` header (set by `publish` when absent).
    pub fn message_id(&self) -> Option<&str> {
        self.headers.get(envelope::ID)
    }

    /// Size counted against the message size limit: payload plus headers.
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + self.headers.encoded_len() + self.key.as_ref().map_or(0, String::len)
    }
}

/// What a request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub headers: Headers,
    pub payload: Bytes,
}

/// What `publish` reports once the broker has taken the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The message's `ce_id` (generated when the caller set none).
    pub message_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parts_keeps_everything() {
        let message = OutgoingMessage::from_parts(
            "ferrishop.order.events",
            Some("order-1".into()),
            [("ce_type".to_owned(), "order.placed".to_owned())],
            Bytes::from_static(b"{}"),
        );
        assert_eq!(message.key.as_deref(), Some("order-1"));
        assert_eq!(message.headers.get("ce_type"), Some("order.placed"));
        assert_eq!(message.persistence, Persistence::Durable);
        assert_eq!(message.destination_template, None);
        assert_eq!(message.encoded_len(), 2 + 7 + 12 + 7);
    }

    #[test]
    fn headers_compare_regardless_of_insertion_order() {
        let a: Headers = [("b", "2"), ("a", "1")].into_iter().collect();
        let b: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().next(), Some(("a", "1")));
    }
}
