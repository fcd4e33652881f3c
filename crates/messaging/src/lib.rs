//! One messaging API over RabbitMQ, Kafka and NATS.
//!
//! Every Ferrishop service publishes and consumes through this crate, and
//! which broker carries which kind of message is configuration
//! ([`MessagingArgs`]: Kafka for integration events, RabbitMQ for saga
//! commands and replies, NATS for notifications and fault flags, by default).
//! The point of a single API is not to pretend the brokers are alike — their
//! delivery guarantees differ and each module documents how — but to make the
//! things every hop must do impossible to forget or to do differently per
//! service:
//!
//! - a CloudEvents 1.0 envelope in binary mode ([`envelope`]) and W3C trace
//!   context on the broker's native headers ([`propagation`]), so traces and
//!   idempotency keys survive every hop;
//! - broker-confirmed publishing ([`Broker::publish`] returns only once the
//!   broker has the message; a command, [`OutgoingMessage::must_be_routed`],
//!   only once a queue has it), a 1 MiB size limit and the
//!   `messaging.publish` fault point;
//! - at-least-once consumption with explicit [`Delivery::ack`] /
//!   [`Delivery::nack`], delayed retries, a dead-letter destination after
//!   `max_attempts` carrying the failure reason, and graceful drain
//!   ([`DeliveryStream::drain`], [`DeliveryStream::consume`]);
//! - request/reply with a timeout where the broker has a reply path
//!   ([`Broker::request`], [`Delivery::reply`]);
//! - producer/consumer spans with the OpenTelemetry messaging attributes, and
//!   the `messaging_publish_duration_seconds` /
//!   `messaging_process_duration_seconds` histograms;
//! - typed errors naming broker and destination ([`MessagingError`]).
//!
//! The same contract test suite runs against all three brokers
//! (`tests/contract.rs`), which is what makes the configuration switch safe.
//!
//! ```no_run
//! use messaging::{Messaging, MessagingArgs, OutgoingMessage, Subscription, Nack};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), messaging::MessagingError> {
//! let messaging = Messaging::new(&MessagingArgs::default(), "order")?;
//! messaging
//!     .events()
//!     .publish(OutgoingMessage::new("ferrishop.order.events", r#"{"id":1}"#).with_key("order-1"))
//!     .await?;
//!
//! let deliveries = messaging
//!     .events()
//!     .subscribe(&Subscription::new("ferrishop.user.events", "payment"))
//!     .await?;
//! deliveries
//!     .consume(1, CancellationToken::new(), |message| async move {
//!         if message.payload.is_empty() {
//!             return Err(Nack::reject("empty payload"));
//!         }
//!         Ok(())
//!     })
//!     .await;
//! # Ok(()) }
//! ```

pub mod broker;
pub mod config;
mod connecting;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod kafka;
pub mod kv;
pub mod message;
pub mod nats;
pub mod propagation;
pub mod rabbitmq;
pub mod subscription;
mod telemetry;

pub use broker::{Broker, MAX_MESSAGE_BYTES, PUBLISH_FAULT_POINT};
pub use config::{BrokerKind, Channel, Messaging, MessagingArgs};
pub use delivery::{Delivery, DeliveryStream, Nack, ReceivedMessage, Retry};
pub use envelope::CloudEvent;
pub use error::{MessagingError, MessagingSystem};
pub use kafka::{Kafka, KafkaConfig};
pub use kv::{FAULTS_BUCKET, KeyValue, watch_faults};
pub use message::{Headers, OutgoingMessage, Persistence, PublishReceipt, Reply};
pub use nats::{Nats, NatsConfig};
pub use rabbitmq::{RabbitMq, RabbitMqConfig};
pub use subscription::{DestinationSpec, Subscription};
pub use telemetry::{PROCESS_DURATION, PUBLISH_DURATION};
