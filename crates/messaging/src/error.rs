//! Typed errors, each naming the broker and the destination involved.
//!
//! A message that says only "publish failed" sends an operator through three
//! brokers' logs; every variant here carries which broker, which destination
//! and what happened, so the one log line is enough to act on. Broker client
//! errors are kept as text: their types differ per client library and callers
//! branch on *our* variants, never on lapin's, rdkafka's or async-nats'.

use std::fmt;
use std::time::Duration;

/// Which broker a handle talks to; also the `messaging.system` attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessagingSystem {
    RabbitMq,
    Kafka,
    Nats,
}

impl MessagingSystem {
    /// The OpenTelemetry `messaging.system` value (`rabbitmq`, `kafka`, `nats`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Kafka => "kafka",
            Self::Nats => "nats",
        }
    }
}

impl fmt::Display for MessagingSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RabbitMq => "RabbitMQ",
            Self::Kafka => "Kafka",
            Self::Nats => "NATS",
        })
    }
}

/// Everything that can go wrong while publishing, subscribing or settling.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// No connection to the broker could be made (or it dropped and could not
    /// be re-made in time).
    #[error("{system} is unreachable at {endpoint}: {reason}")]
    Unreachable {
        system: MessagingSystem,
        endpoint: String,
        reason: String,
    },

    /// The broker did not confirm the message: it may or may not have been
    /// stored, so the caller must treat it as not sent (and may retry).
    #[error("{system} did not confirm the message published to {destination:?}: {reason}")]
    NotConfirmed {
        system: MessagingSystem,
        destination: String,
        reason: String,
    },

    /// Payload plus headers exceed the platform's message size limit.
    #[error("message for {destination:?} on {system} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        system: MessagingSystem,
        destination: String,
        size: usize,
        limit: usize,
    },

    /// Nobody answered a request in time.
    #[error("{system}: no reply to the request sent to {destination:?} within {timeout:?}{detail}")]
    Timeout {
        system: MessagingSystem,
        destination: String,
        timeout: Duration,
        /// Extra context, e.g. ` (no responder is subscribed)`; empty if none.
        detail: String,
    },

    /// The broker has no such feature (e.g. request/reply on Kafka).
    #[error("{system} does not support {operation}")]
    Unsupported {
        system: MessagingSystem,
        operation: &'static str,
    },

    /// The destination (exchange, topic, stream) does not exist.
    #[error("{system}: {destination:?} does not exist{detail}")]
    NotFound {
        system: MessagingSystem,
        destination: String,
        detail: String,
    },

    /// Any other broker-side failure of an operation on a destination.
    #[error("{system}: {operation} on {destination:?} failed: {reason}")]
    Broker {
        system: MessagingSystem,
        destination: String,
        operation: &'static str,
        reason: String,
    },

    /// The `messaging.publish` fault point fired.
    #[error("publishing to {destination:?} on {system} failed at an injected fault")]
    Injected {
        system: MessagingSystem,
        destination: String,
        #[source]
        source: platform::faults::InjectedFault,
    },

    /// A name, setting or message was not acceptable before anything was sent.
    #[error("{system}: invalid {what}: {reason}")]
    Invalid {
        system: MessagingSystem,
        what: &'static str,
        reason: String,
    },
}

impl MessagingError {
    /// Whether this is a request that got no reply in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Whether the operation is not available on this broker.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }

    /// Whether trying again later may succeed (connection trouble, missing
    /// confirmation), as opposed to a request that will never work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::NotConfirmed { .. }
                | Self::Timeout { .. }
                | Self::Injected { .. }
        )
    }

    pub(crate) fn broker(
        system: MessagingSystem,
        destination: &str,
        operation: &'static str,
        reason: impl fmt::Display,
    ) -> Self {
        Self::Broker {
            system,
            destination: destination.to_owned(),
            operation,
            reason: reason.to_string(),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = MessagingError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_broker_and_destination() {
        let error = MessagingError::TooLarge {
            system: MessagingSystem::Kafka,
            destination: "ferrishop.order.events".into(),
            size: 2_000_000,
            limit: 1_048_576,
        };
        let text = error.to_string();
        assert!(text.contains("Kafka"), "{text}");
        assert!(text.contains("ferrishop.order.events"), "{text}");
        assert!(text.contains("1048576"), "{text}");

        let timeout = MessagingError::Timeout {
            system: MessagingSystem::Nats,
            destination: "payments.charge".into(),
            timeout: Duration::from_secs(2),
            detail: String::new(),
        };
        assert!(timeout.is_timeout());
        assert_eq!(
            timeout.to_string(),
            "NATS: no reply to the request sent to \"payments.charge\" within 2s"
        );
    }
}
