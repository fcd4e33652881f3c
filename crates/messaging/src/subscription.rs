//! What to consume and how, and how a destination is created.
//!
//! The defaults are the platform's (prefetch 10, 3 attempts, ack wait 30 s);
//! tests and latency-sensitive consumers shorten the delays per subscription
//! instead of per process, so one suite can exercise redelivery quickly
//! without changing what services get.

use std::time::Duration;

use crate::message::Persistence;

/// A consumer group's subscription to one destination.
///
/// Consumers that share `group` compete for messages (each message goes to one
/// of them); different groups each get every message.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// RabbitMQ exchange, Kafka topic, or NATS subject (stream subject).
    pub destination: String,
    /// RabbitMQ queue suffix, Kafka consumer group, JetStream durable
    /// consumer / NATS queue group.
    pub group: String,
    /// Which messages of the destination: a RabbitMQ binding pattern (default
    /// `#`, everything) or a NATS subject filter (default: the destination).
    /// Kafka topics have no such filter and ignore it.
    pub filter: Option<String>,
    /// Deliveries handed out before any is settled (RabbitMQ prefetch, NATS
    /// pull batch, Kafka read-ahead).
    pub prefetch: u16,
    /// Processing attempts before a message goes to the dead-letter destination.
    pub max_attempts: u32,
    /// How long a `nack { requeue }`ed message waits before it is redelivered.
    pub retry_delay: Duration,
    /// How long a delivery may stay unsettled before the broker redelivers it
    /// (JetStream `ack_wait`; RabbitMQ and Kafka redeliver when the consumer
    /// goes away instead).
    pub ack_wait: Duration,
    pub persistence: Persistence,
}

impl Subscription {
    pub const DEFAULT_PREFETCH: u16 = 10;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

    pub fn new(destination: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            destination: destination.into(),
            group: group.into(),
            filter: None,
            prefetch: Self::DEFAULT_PREFETCH,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
            ack_wait: Self::DEFAULT_ACK_WAIT,
            persistence: Persistence::Durable,
        }
    }

    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Shorthand for `with_persistence(Persistence::Transient)`: NATS core
    /// queue group, RabbitMQ auto-deleted queue; what request responders and
    /// notification listeners use.
    pub fn transient(self) -> Self {
        self.with_persistence(Persistence::Transient)
    }
}

/// How to create a destination (`Broker::ensure_destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    pub name: String,
    /// Kafka partitions; the unit of parallelism per consumer group.
    pub partitions: u32,
    /// `Transient` destinations (requests, notifications) need no storage:
    /// NATS then creates no JetStream stream — which would also answer
    /// requests sent to the subject with its publish acks.
    pub persistence: Persistence,
    /// How long a durable destination keeps a message; `None`: as long as
    /// the broker's own limits allow. NATS: the JetStream stream's
    /// `max_age`, set when the stream is created.
    pub max_age: Option<Duration>,
    /// Only the newest message of each subject is kept, for announcements
    /// of a state where the latest is all a reader wants. NATS: one message
    /// per subject, set when the stream is created.
    pub latest_per_subject: bool,
}

impl DestinationSpec {
    pub const DEFAULT_PARTITIONS: u32 = 3;

    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partitions: Self::DEFAULT_PARTITIONS,
            persistence: Persistence::Durable,
            max_age: None,
            latest_per_subject: false,
        }
    }

    /// See [`Self::max_age`].
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// See [`Self::latest_per_subject`].
    pub fn latest_per_subject(mut self) -> Self {
        self.latest_per_subject = true;
        self
    }

    /// For request/reply and notifications; see [`Self::persistence`].
    pub fn transient(mut self) -> Self {
        self.persistence = Persistence::Transient;
        self
    }

    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }
}
