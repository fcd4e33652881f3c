//! The broker-neutral handle every service publishes and subscribes through.
//!
//! [`Broker`] owns what must be identical on every broker — filling in the
//! CloudEvents envelope, the size limit, header validation, the
//! `messaging.publish` fault point, the producer span, trace-context
//! injection and the publish metric — and delegates the wire work to a
//! crate-private `Transport` per broker. A service therefore cannot publish
//! without a span or a metric by picking a different broker, and the contract
//! tests that run the same scenarios against all three test this code once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::Context;
use tracing::{Instrument, Span};

use crate::delivery::DeliveryStream;
use crate::envelope::{self, Added};
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::kafka::Kafka;
use crate::message::{Headers, OutgoingMessage, PublishReceipt, Reply};
use crate::nats::Nats;
use crate::propagation::{self, HeadersExtractor, is_valid_header_name, is_valid_header_value};
use crate::rabbitmq::RabbitMq;
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
///
/// Calls are dispatched statically through [`Backend`] rather than through a
/// `dyn` trait object, whose boxed future per call was an allocation of
/// several KiB on every publish (with the allocator's consolidation of freed
/// chunks, about a sixth of the publishing tasks' CPU on NATS in the
/// benchmark). The client
/// libraries' own large futures are boxed where that is cheaper than carrying
/// them through every layer; see [`Broker::publish`].
pub(crate) trait Transport: Send + Sync + 'static {
    fn system(&self) -> MessagingSystem;

    async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()>;

    /// Sends a validated message with the envelope attributes `added` to its
    /// headers and returns once the broker has it. `trace` is the producer
    /// span's context, to be injected with the broker's own header carrier.
    /// The message is taken by value so its headers move onto the wire format
    /// instead of being copied.
    async fn publish(
        &self,
        message: OutgoingMessage,
        added: Added,
        trace: Option<&Context>,
    ) -> Result<()>;

    async fn subscribe(
        &self,
        subscription: &Subscription,
        target: Target,
    ) -> Result<DeliveryStream>;

    async fn request(
        &self,
        message: &OutgoingMessage,
        added: &Added,
        trace: Option<&Context>,
        timeout: Duration,
    ) -> Result<Reply>;

    /// Whether the broker answers now (readiness).
    async fn check(&self) -> Result<()>;

    /// Where this transport dead-letters `subscription`'s messages.
    fn dead_letter_destination(&self, subscription: &Subscription) -> String;
}

/// The transport behind a [`Broker`]; each variant is a cheap-to-clone handle.
#[derive(Clone)]
pub(crate) enum Backend {
    RabbitMq(RabbitMq),
    Kafka(Kafka),
    Nats(Nats),
}

impl From<RabbitMq> for Backend {
    fn from(transport: RabbitMq) -> Self {
        Self::RabbitMq(transport)
    }
}

impl From<Kafka> for Backend {
    fn from(transport: Kafka) -> Self {
        Self::Kafka(transport)
    }
}

impl From<Nats> for Backend {
    fn from(transport: Nats) -> Self {
        Self::Nats(transport)
    }
}

/// Awaits `$future` inside `$span` (without the wrapper when the span is
/// disabled, which saves a copy of the future).
macro_rules! in_span {
    ($span:expr, $future:expr) => {{
        let future = $future;
        if $span.is_disabled() {
            future.await
        } else {
            future.instrument($span.clone()).await
        }
    }};
}

/// Runs `$call` on whichever transport `$backend` holds.
macro_rules! dispatch {
    ($backend:expr, $transport:ident => $call:expr) => {
        match $backend {
            Backend::RabbitMq($transport) => $call,
            Backend::Kafka($transport) => $call,
            Backend::Nats($transport) => $call,
        }
    };
}

/// A cheap-to-clone handle on one broker.
#[derive(Clone)]
pub struct Broker {
    transport: Backend,
    source: Arc<str>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("system", &self.system())
            .field("source", &self.source)
            .finish()
    }
}

impl Broker {
    /// `source` is the CloudEvents `ce_source` given to messages that have
    /// none, e.g. `/ferrishop/order`.
    pub(crate) fn new(transport: impl Into<Backend>, source: impl Into<Arc<str>>) -> Self {
        Self {
            transport: transport.into(),
            source: source.into(),
        }
    }

    pub fn system(&self) -> MessagingSystem {
        dispatch!(&self.transport, transport => transport.system())
    }

    /// Creates the destination if it does not exist: a durable topic exchange
    /// (RabbitMQ), a topic with `spec.partitions` partitions (Kafka), a
    /// JetStream stream capturing `name` and `name.>` (NATS).
    pub async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()> {
        dispatch!(&self.transport, transport => transport.ensure_destination(spec).await)
    }

    /// Publishes and returns once the broker has confirmed the message
    /// (publisher confirm, `acks=all`, JetStream ack; NATS core transient
    /// messages once written to the connection).
    pub async fn publish(&self, message: OutgoingMessage) -> Result<PublishReceipt> {
        // The steps are awaited here rather than through a shared async
        // helper: every layer of futures copies everything below it once per
        // publish.
        let (message, added, mut sending) = self.start(message, "publish");
        let result = match sending.admit(&message).await {
            Err(error) => Err(error),
            Ok(()) => {
                let trace = sending.trace.as_ref();
                match &self.transport {
                    // Boxed: lapin's publish future alone is over 1 KiB, and
                    // inline it would make every NATS and Kafka publish future
                    // as large; RabbitMQ's rate is the broker's, where one
                    // allocation per publish does not show.
                    Backend::RabbitMq(transport) => in_span!(
                        sending.span,
                        Box::pin(transport.publish(message, added, trace))
                    ),
                    Backend::Kafka(transport) => {
                        in_span!(sending.span, transport.publish(message, added, trace))
                    }
                    Backend::Nats(transport) => {
                        in_span!(sending.span, transport.publish(message, added, trace))
                    }
                }
            }
        };
        sending.finish(result).map(|((), receipt)| receipt)
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
        let (message, added, mut sending) = self.start(message, "request");
        let result = match sending.admit(&message).await {
            Ok(()) => dispatch!(&self.transport, transport => {
                in_span!(
                    sending.span,
                    transport.request(&message, &added, sending.trace.as_ref(), timeout)
                )
            }),
            Err(error) => Err(error),
        };
        sending.finish(result).map(|(reply, _)| reply)
    }

    /// Starts consuming; see [`Subscription`] for the knobs.
    pub async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream> {
        dispatch!(&self.transport, transport => transport.subscribe(subscription, Target::Main).await)
    }

    /// Consumes what was dead-lettered from `subscription` (for inspection,
    /// replay tooling and tests).
    pub async fn dead_letters(&self, subscription: &Subscription) -> Result<DeliveryStream> {
        dispatch!(&self.transport, transport => {
            transport.subscribe(subscription, Target::DeadLetters).await
        })
    }

    /// Where `subscription`'s failed messages go: `<queue>.dlq` on RabbitMQ,
    /// `<topic>.<group>.dlq` on Kafka, `dlq.<subject>.<group>` on NATS.
    pub fn dead_letter_destination(&self, subscription: &Subscription) -> String {
        dispatch!(&self.transport, transport => transport.dead_letter_destination(subscription))
    }

    /// Whether the broker answers now; for `/readyz`.
    pub async fn check(&self) -> Result<()> {
        dispatch!(&self.transport, transport => transport.check().await)
    }

    /// What publish and request do first: completes the envelope, opens the
    /// producer span and notes what the metric needs once the message has
    /// moved to the transport.
    fn start(
        &self,
        mut message: OutgoingMessage,
        operation: &'static str,
    ) -> (OutgoingMessage, Added, Sending) {
        let system = self.system();
        let started = Instant::now();
        // The caller's headers are checked here; the attributes the envelope
        // adds are valid by construction or copied from the destination, key
        // and source, which `validate` checks on their own.
        let headers_checked = check_headers(system, &message.headers);
        let added = envelope::complete(&message, &self.source);
        let admitted = validate(system, &message, &added, &self.source, headers_checked).err();
        let message_id = added
            .message_id(&message.headers)
            .unwrap_or_default()
            .to_owned();
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
        let metric_destination = message
            .destination_template
            .take()
            .unwrap_or_else(|| message.destination.clone());
        let sending = Sending {
            system,
            started,
            span,
            trace,
            message_id,
            metric_destination,
            admitted,
        };
        (message, added, sending)
    }
}

/// A publish or request between [`Broker::start`] and [`Sending::finish`].
struct Sending {
    system: MessagingSystem,
    started: Instant,
    span: Span,
    /// The producer span's context, if it belongs to a real trace.
    trace: Option<Context>,
    message_id: String,
    metric_destination: String,
    /// Why the message cannot be sent, if it cannot (see [`validate`]).
    admitted: Option<MessagingError>,
}

impl Sending {
    /// Fails if the message is invalid; otherwise reaches the fault point,
    /// in the span.
    async fn admit(&mut self, message: &OutgoingMessage) -> Result<()> {
        if let Some(invalid) = self.admitted.take() {
            return Err(invalid);
        }
        in_span!(self.span, platform::faults::inject(PUBLISH_FAULT_POINT)).map_err(|source| {
            MessagingError::Injected {
                system: self.system,
                destination: message.destination.clone(),
                source,
            }
        })
    }

    /// Records the outcome on the span and the metric.
    fn finish<T>(self, result: Result<T>) -> Result<(T, PublishReceipt)> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => {
                telemetry::mark_error(&self.span, error_kind(error));
                tracing::debug!(parent: &self.span, %error, "publish failed");
                "error"
            }
        };
        telemetry::record_publish(
            self.system,
            &self.metric_destination,
            outcome,
            self.started.elapsed(),
        );
        let message_id = self.message_id;
        result.map(|value| (value, PublishReceipt { message_id }))
    }
}

/// Whether `message` with the envelope attributes `added` can be sent;
/// `headers_checked` is [`check_headers`] of the caller's headers.
fn validate(
    system: MessagingSystem,
    message: &OutgoingMessage,
    added: &Added,
    source: &str,
    headers_checked: Result<()>,
) -> Result<()> {
    let invalid = |what, reason: String| MessagingError::Invalid {
        system,
        what,
        reason,
    };
    if message.destination.is_empty() {
        return Err(invalid("destination", "the destination is empty".into()));
    }
    let size = message.encoded_len() + added.encoded_len(message);
    if size > MAX_MESSAGE_BYTES {
        return Err(MessagingError::TooLarge {
            system,
            destination: message.destination.clone(),
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    headers_checked?;
    // What the envelope may have copied into header values.
    let line_break = |what, value: &str| {
        (!is_valid_header_value(value))
            .then(|| invalid(what, format!("{value:?} cannot contain line breaks")))
    };
    match line_break("destination", &message.destination)
        .or_else(|| line_break("key", message.key.as_deref().unwrap_or_default()))
        .or_else(|| line_break("source", source))
    {
        Some(error) => Err(error),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(message: OutgoingMessage) -> Result<()> {
        let system = MessagingSystem::Nats;
        let headers_checked = check_headers(system, &message.headers);
        let added = envelope::complete(&message, &Arc::from("/ferrishop/test"));
        validate(system, &message, &added, "/ferrishop/test", headers_checked)
    }

    fn rejected(message: OutgoingMessage) -> (&'static str, String) {
        match checked(message) {
            Err(MessagingError::Invalid { what, reason, .. }) => (what, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn messages_are_validated_with_their_envelope() {
        assert!(checked(OutgoingMessage::new("orders", "{}").with_key("order-1")).is_ok());
        assert_eq!(rejected(OutgoingMessage::new("", "{}")).0, "destination");
        assert_eq!(
            rejected(OutgoingMessage::new("orders", "{}").with_header("bad name", "x")).0,
            "header name"
        );
        assert_eq!(
            rejected(OutgoingMessage::new("orders", "{}").with_header("x-note", "a\nb")).0,
            "header value"
        );
        // Values the envelope copies from the message are checked too.
        assert_eq!(
            rejected(OutgoingMessage::new("orders\n", "{}")).0,
            "destination"
        );
        assert_eq!(
            rejected(OutgoingMessage::new("orders", "{}").with_key("a\r\nb")).0,
            "key"
        );
        assert!(matches!(
            checked(OutgoingMessage::new("orders", vec![0; MAX_MESSAGE_BYTES])),
            Err(MessagingError::TooLarge { .. })
        ));
    }
}
