//! The broker-neutral handle every service publishes and subscribes through.
//!
//! [`Broker`] owns what must be identical on every broker — filling in the
//! CloudEvents envelope, the size limit, header validation, the
//! `messaging.publish` fault point, the producer span, trace-context
//! injection and the publish metric — and delegates the wire work to a
//! crate-private [`Transport`] per broker. A service therefore cannot publish
//! without a span or a metric by picking a different broker, and the contract
//! tests that run the same scenarios against all three test this code once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::Context;
use tracing::Instrument;

use crate::delivery::DeliveryStream;
use crate::envelope;
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::message::{Headers, OutgoingMessage, PublishReceipt, Reply};
use crate::propagation::{self, HeadersExtractor, is_valid_header_name, is_valid_header_value};
use crate::subscription::{DestinationSpec, Subscription};
use crate::telemetry;

/// The platform's message size limit (payload plus headers), the smallest
/// default among the three brokers (NATS `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The fault point reached on every publish.
pub const PUBLISH_FAULT_POINT: &str = "messaging.publish";

/// Which stream of a subscription to consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The subscription's own messages.
    Main,
    /// What was dead-lettered from it.
    DeadLetters,
}

/// One broker's wire protocol.
#[async_trait]
pub(crate) trait Transport: Send + Sync + 'static {
    fn system(&self) -> MessagingSystem;

    async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()>;

    /// Sends a completed, validated message and returns once the broker has
    /// it. `trace` is the producer span's context, to be injected with the
    /// broker's own header carrier.
    async fn publish(&self, message: &OutgoingMessage, trace: Option<&Context>) -> Result<()>;

    async fn subscribe(
        &self,
        subscription: &Subscription,
        target: Target,
    ) -> Result<DeliveryStream>;

    async fn request(
        &self,
        message: &OutgoingMessage,
        trace: Option<&Context>,
        timeout: Duration,
    ) -> Result<Reply>;

    /// Whether the broker answers now (readiness).
    async fn check(&self) -> Result<()>;

    /// Where this transport dead-letters `subscription`'s messages.
    fn dead_letter_destination(&self, subscription: &Subscription) -> String;
}

/// A cheap-to-clone handle on one broker.
#[derive(Clone)]
pub struct Broker {
    transport: Arc<dyn Transport>,
    source: Arc<str>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("system", &self.transport.system())
            .field("source", &self.source)
            .finish()
    }
}

impl Broker {
    /// `source` is the CloudEvents `ce_source` given to messages that have
    /// none, e.g. `/ferrishop/order`.
    pub(crate) fn new(transport: Arc<dyn Transport>, source: impl Into<Arc<str>>) -> Self {
        Self {
            transport,
            source: source.into(),
        }
    }

    pub fn system(&self) -> MessagingSystem {
        self.transport.system()
    }

    /// Creates the destination if it does not exist: a durable topic exchange
    /// (RabbitMQ), a topic with `spec.partitions` partitions (Kafka), a
    /// JetStream stream capturing `name` and `name.>` (NATS).
    pub async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()> {
        self.transport.ensure_destination(spec).await
    }

    /// Publishes and returns once the broker has confirmed the message
    /// (publisher confirm, `acks=all`, JetStream ack; NATS core transient
    /// messages once written to the connection).
    pub async fn publish(&self, message: OutgoingMessage) -> Result<PublishReceipt> {
        self.send(message, "publish", None)
            .await
            .map(|(receipt, _)| receipt)
    }

    /// The outbox relay's shape: destination, key, headers, payload.
    pub async fn publish_parts(
        &self,
        destination: &str,
        key: Option<&str>,
        headers: impl IntoIterator<Item = (String, String)>,
        payload: impl Into<Bytes>,
    ) -> Result<PublishReceipt> {
        self.publish(OutgoingMessage::from_parts(
            destination,
            key.map(str::to_owned),
            headers,
            payload,
        ))
        .await
    }

    /// Sends a request and waits up to `timeout` for its reply (RabbitMQ reply
    /// queue with correlation id, NATS request). Kafka returns
    /// [`MessagingError::Unsupported`].
    pub async fn request(&self, message: OutgoingMessage, timeout: Duration) -> Result<Reply> {
        self.send(message, "request", Some(timeout))
            .await
            .and_then(|(_, reply)| {
                reply.ok_or_else(|| MessagingError::Unsupported {
                    system: self.system(),
                    operation: "request/reply",
                })
            })
    }

    /// Starts consuming; see [`Subscription`] for the knobs.
    pub async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream> {
        self.transport.subscribe(subscription, Target::Main).await
    }

    /// Consumes what was dead-lettered from `subscription` (for inspection,
    /// replay tooling and tests).
    pub async fn dead_letters(&self, subscription: &Subscription) -> Result<DeliveryStream> {
        self.transport
            .subscribe(subscription, Target::DeadLetters)
            .await
    }

    /// Where `subscription`'s failed messages go: `<queue>.dlq` on RabbitMQ,
    /// `<topic>.<group>.dlq` on Kafka, `dlq.<subject>.<group>` on NATS.
    pub fn dead_letter_destination(&self, subscription: &Subscription) -> String {
        self.transport.dead_letter_destination(subscription)
    }

    /// Whether the broker answers now; for `/readyz`.
    pub async fn check(&self) -> Result<()> {
        self.transport.check().await
    }

    async fn send(
        &self,
        mut message: OutgoingMessage,
        operation: &'static str,
        request_timeout: Option<Duration>,
    ) -> Result<(PublishReceipt, Option<Reply>)> {
        let system = self.system();
        let started = Instant::now();
        envelope::complete(
            &mut message.headers,
            &self.source,
            &message.destination,
            message.key.as_deref(),
        );
        let message_id = message.message_id().unwrap_or_default().to_owned();
        // An explicit traceparent (e.g. stored in an outbox row) is the parent
        // of the producer span; otherwise the current span is.
        let parent = message
            .headers
            .contains(envelope::TRACEPARENT)
            .then(|| propagation::extract(&HeadersExtractor(&message.headers)));
        let span =
            telemetry::producer_span(system, &message.destination, &message_id, operation, parent);
        let trace = telemetry::context_of(&span);
        if trace.is_some() {
            // Replaced by the producer span's context on the wire.
            message.headers.remove(envelope::TRACEPARENT);
            message.headers.remove(envelope::TRACESTATE);
        }

        let transport = &self.transport;
        let result = async {
            validate(system, &message)?;
            platform::faults::inject(PUBLISH_FAULT_POINT)
                .await
                .map_err(|source| MessagingError::Injected {
                    system,
                    destination: message.destination.clone(),
                    source,
                })?;
            match request_timeout {
                None => transport
                    .publish(&message, trace.as_ref())
                    .await
                    .map(|()| None),
                Some(timeout) => transport
                    .request(&message, trace.as_ref(), timeout)
                    .await
                    .map(Some),
            }
        }
        .instrument(span.clone())
        .await;

        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => {
                telemetry::mark_error(&span, error_kind(error));
                tracing::debug!(parent: &span, %error, "publish failed");
                "error"
            }
        };
        telemetry::record_publish(
            system,
            message.metric_destination(),
            outcome,
            started.elapsed(),
        );
        result.map(|reply| (PublishReceipt { message_id }, reply))
    }
}

fn validate(system: MessagingSystem, message: &OutgoingMessage) -> Result<()> {
    let invalid = |what, reason: String| MessagingError::Invalid {
        system,
        what,
        reason,
    };
    if message.destination.is_empty() {
        return Err(invalid("destination", "the destination is empty".into()));
    }
    let size = message.encoded_len();
    if size > MAX_MESSAGE_BYTES {
        return Err(MessagingError::TooLarge {
            system,
            destination: message.destination.clone(),
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    check_headers(system, &message.headers)
}

pub(crate) fn check_headers(system: MessagingSystem, headers: &Headers) -> Result<()> {
    for (name, value) in headers.iter() {
        if !is_valid_header_name(name) {
            return Err(MessagingError::Invalid {
                system,
                what: "header name",
                reason: format!("{name:?} (use printable ASCII without ':' or spaces)"),
            });
        }
        if !is_valid_header_value(value) {
            return Err(MessagingError::Invalid {
                system,
                what: "header value",
                reason: format!("{name}: values cannot contain line breaks"),
            });
        }
    }
    Ok(())
}

fn error_kind(error: &MessagingError) -> &'static str {
    match error {
        MessagingError::Unreachable { .. } => "unreachable",
        MessagingError::NotConfirmed { .. } => "not_confirmed",
        MessagingError::TooLarge { .. } => "too_large",
        MessagingError::Timeout { .. } => "timeout",
        MessagingError::Unsupported { .. } => "unsupported",
        MessagingError::NotFound { .. } => "not_found",
        MessagingError::Broker { .. } => "broker",
        MessagingError::Injected { .. } => "injected",
        MessagingError::Invalid { .. } => "invalid",
    }
}
