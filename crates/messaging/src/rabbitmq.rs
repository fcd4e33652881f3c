//! RabbitMQ through lapin: confirmed publishing, quorum queues, a delayed
//! retry path and a dead-letter queue per consumer group, request/reply, and
//! reconnection.
//!
//! Topology for a durable subscription of group `g` to exchange `e`:
//!
//! ```text
//! e (topic, durable) ──binding──▶ e.g (quorum queue, DLX = e.g.dlx)
//!                                   │ reject (nack requeue)
//!                                   ▼
//!                         e.g.dlx (fanout) ──▶ e.g.retry (TTL = retry delay,
//!                                                DLX = "" → back to e.g)
//! e.g.dlq (quorum queue) ◀── publish + ack, once attempts are exhausted
//! ```
//!
//! The retry path uses the broker's own dead-lettering, so a message waiting
//! for its retry lives in RabbitMQ, not in a consumer's memory, and its
//! attempts are counted by the broker (`x-death`). The final move to `.dlq` is
//! an explicit confirmed publish (then an ack) because only the consumer knows
//! the failure reason to attach.
//!
//! Publishing goes over one confirm-mode channel per process; `publish`
//! returns once the broker confirmed. Before the first publish to an exchange
//! its existence is checked on a throw-away channel, because publishing to a
//! missing exchange makes RabbitMQ close the channel — which would fail every
//! other publish in flight on the shared one. Connections that drop (broker
//! restart, `rabbitmqctl close_connection`) are re-opened with backoff
//! (250 ms doubling to 4 s) on the next publish, in a task that every
//! publish waiting meanwhile shares and none can cancel, and by each
//! subscription's worker, which also re-declares its topology.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex, RwLock as StdRwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use opentelemetry::Context;
use tokio::sync::{Mutex, OnceCell, oneshot};

use crate::broker::{Broker, Target, Transport};
use crate::connecting::{Attempt, ConnectAttempts};
use crate::delivery::{
    DRAIN_TIMEOUT, DeadLetter, DeliveryParts, DeliverySink, DeliveryStream, ReceivedMessage,
    RetryPolicy, Settler,
};
use crate::envelope::{self, Added};
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::message::{Headers, OutgoingMessage, Persistence, Reply};
use crate::propagation::{self, AmqpHeaderExtractor, AmqpHeaderInjector, amqp_text};
use crate::subscription::{DestinationSpec, Subscription};

const SYSTEM: MessagingSystem = MessagingSystem::RabbitMq;
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(4);
/// How long connecting, opening a channel or selecting confirm mode may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach RabbitMQ.
#[derive(Debug, Clone)]
pub struct RabbitMqConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Shown in the management UI and `rabbitmqctl list_connections`
    /// (`client_properties.connection_name`); suffixed `publish`/`consume`.
    pub connection_name: String,
    /// Declare consumer-group queues as quorum queues (replicated, at-least-once
    /// dead-lettering); classic queues otherwise.
    pub quorum_queues: bool,
    /// How long a publish waits for a lost connection to come back.
    pub reconnect_timeout: Duration,
    /// How long a publish waits for the broker's confirm.
    pub confirm_timeout: Duration,
}

impl RabbitMqConfig {
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connection_name: connection_name.into(),
            quorum_queues: true,
            reconnect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

/// A RabbitMQ client: lazy, reconnecting, cheap to clone.
#[derive(Clone)]
pub struct RabbitMq {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("connection_name", &self.shared.config.connection_name)
            .finish()
    }
}

struct Shared {
    config: RabbitMqConfig,
    /// The session publishes use, read without waiting (the fast path).
    current: StdRwLock<Option<Arc<PublishSession>>>,
    /// The reconnection in flight, which every caller without a usable
    /// session waits for.
    reconnecting: ConnectAttempts<Arc<PublishSession>>,
    consumer_connection: Mutex<Option<Arc<Connection>>>,
    pending_replies: Arc<StdMutex<HashMap<String, oneshot::Sender<Reply>>>>,
}

/// One publisher connection with its confirm-mode channel.
struct PublishSession {
    connection: Arc<Connection>,
    channel: Channel,
    known_exchanges: StdMutex<HashSet<String>>,
    reply_queue: OnceCell<ShortString>,
}

impl PublishSession {
    fn is_usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// What a publish asks of the broker's routing.
#[derive(Debug, Clone, Copy)]
enum Routing<'a> {
    /// An announcement: with no queue bound, no one is listening, which is
    /// not the publisher's failure.
    Any,
    /// A command: it must reach a queue (`mandatory`), or the publish fails.
    Queued,
    /// A request with this correlation id: it must reach a queue, and its
    /// reply comes to the session's reply queue.
    Request(&'a str),
}

/// Why one publish attempt failed.
enum AttemptError {
    /// The connection or channel went away (the session that lost it): worth
    /// one more try on a new one.
    Lost(lapin::Error, Arc<PublishSession>),
    /// Final.
    Failed(MessagingError),
}

impl RabbitMq {
    /// No I/O happens until the first publish or subscribe.
    pub fn new(config: RabbitMqConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                current: StdRwLock::new(None),
                reconnecting: ConnectAttempts::default(),
                consumer_connection: Mutex::new(None),
                pending_replies: Arc::default(),
            }),
        }
    }

    /// The broker-neutral handle; `source` is the default `ce_source`.
    pub fn into_broker(self, source: &str) -> Broker {
        Broker::new(self, source)
    }

    /// The `connection_name` this client's connections carry.
    pub fn connection_name(&self) -> &str {
        &self.shared.config.connection_name
    }
}

impl Shared {
    fn unreachable(&self, reason: impl std::fmt::Display) -> MessagingError {
        MessagingError::Unreachable {
            system: SYSTEM,
            endpoint: redact(&self.config.url),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self, role: &str) -> Result<Arc<Connection>> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("{} {role}", self.config.connection_name).into());
        self.within(
            "connecting",
            Connection::connect(&self.config.url, properties),
        )
        .await
        .map(Arc::new)
    }

    /// The publisher session, (re)connecting with backoff when needed.
    ///
    /// An async mutex on every publish would make concurrent publishers
    /// queue behind each other's wake-ups; a usable session is shared
    /// through a read lock instead.
    async fn session(self: &Arc<Self>) -> Result<Arc<PublishSession>> {
        match self.usable_session() {
            Some(session) => Ok(session),
            None => self
                .reconnection()
                .await
                .map_err(|reason| self.unreachable(reason)),
        }
    }

    /// The slow path of [`Self::session`]: joins the reconnection under
    /// way, or starts one (see [`crate::connecting`]).
    fn reconnection(self: &Arc<Self>) -> Attempt<Arc<PublishSession>> {
        let shared = Arc::clone(self);
        self.reconnecting
            .join(move || async move { shared.reconnect().await })
    }

    /// Opens a publisher session, re-using the connection of the last one
    /// while it stays connected; retries with backoff until
    /// `reconnect_timeout`, each step bounded by [`STEP_TIMEOUT`].
    async fn reconnect(&self) -> Result<Arc<PublishSession>> {
        let last = self.current.read().ok().and_then(|current| current.clone());
        if let Some(session) = last.as_ref().filter(|s| s.is_usable()) {
            return Ok(session.clone());
        }
        let mut connection = last
            .map(|s| s.connection.clone())
            .filter(|c| c.status().connected());
        let deadline = tokio::time::Instant::now() + self.config.reconnect_timeout;
        let mut delay = RECONNECT_INITIAL;
        loop {
            let attempt = async {
                let connection = match connection.take() {
                    Some(connection) => connection,
                    None => self.connect("publish").await?,
                };
                let channel = self
                    .within("opening a channel", connection.create_channel())
                    .await?;
                self.within(
                    "selecting confirm mode",
                    channel.confirm_select(ConfirmSelectOptions::default()),
                )
                .await?;
                Ok::<_, MessagingError>(PublishSession {
                    connection,
                    channel,
                    known_exchanges: StdMutex::default(),
                    reply_queue: OnceCell::new(),
                })
            };
            match attempt.await {
                Ok(session) => {
                    let session = Arc::new(session);
                    if let Ok(mut current) = self.current.write() {
                        *current = Some(session.clone());
                    }
                    return Ok(session);
                }
                Err(error) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(%error, retry_in = ?delay, "RabbitMQ publisher connection failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_MAX);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn usable_session(&self) -> Option<Arc<PublishSession>> {
        self.current
            .read()
            .ok()
            .and_then(|current| current.clone())
            .filter(|s| s.is_usable())
    }

    /// One step of opening a session, as [`MessagingError::Unreachable`] when
    /// it fails or the broker does not answer within [`STEP_TIMEOUT`].
    async fn within<T>(
        &self,
        step: &str,
        operation: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(STEP_TIMEOUT, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.unreachable(format!("{step}: {error}"))),
            Err(_) => Err(self.unreachable(format!(
                "{step}: no answer within {}s",
                STEP_TIMEOUT.as_secs()
            ))),
        }
    }

    fn invalidate(&self, session: &Arc<PublishSession>) {
        if let Ok(mut current) = self.current.write()
            && current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session))
        {
            *current = None;
        }
    }

    /// Fails with `NotFound` unless `exchange` exists, checked once per
    /// connection on a throw-away channel.
    async fn check_exchange(&self, session: &PublishSession, exchange: &str) -> Result<()> {
        if exchange.is_empty() || known(&session.known_exchanges, exchange) {
            return Ok(());
        }
        Box::pin(self.declare_passive(session, exchange)).await
    }

    /// The slow path of [`Self::check_exchange`], once per exchange and connection.
    async fn declare_passive(&self, session: &PublishSession, exchange: &str) -> Result<()> {
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| self.unreachable(e))?;
        let declared = channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                remember(&session.known_exchanges, exchange);
                Ok(())
            }
            Err(error) if is_not_found(&error) => Err(MessagingError::NotFound {
                system: SYSTEM,
                destination: exchange.to_owned(),
                detail: " (no such exchange; declare it with ensure_destination)".into(),
            }),
            Err(error) => Err(MessagingError::broker(
                SYSTEM,
                exchange,
                "exchange check",
                error,
            )),
        }
    }

    /// Publishes and waits for the confirm, retrying once on a fresh
    /// connection if the old one was lost meanwhile. `properties` builds the
    /// message's properties for each attempt (the retry is rare; cloning a
    /// header table up front for it on every publish is not).
    async fn publish_confirmed(
        self: &Arc<Self>,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: impl Fn() -> BasicProperties + Send + Sync,
        routing: Routing<'_>,
    ) -> Result<()> {
        let lost = match self
            .attempt(exchange, routing_key, payload, &properties, routing)
            .await
        {
            Ok(()) => return Ok(()),
            Err(AttemptError::Failed(error)) => return Err(error),
            Err(AttemptError::Lost(error, session)) => (error, session),
        };
        // Rare: boxed so that the future of every publish stays small.
        Box::pin(async move {
            let (mut error, mut session) = lost;
            for retry in [true, false] {
                if retry {
                    tracing::warn!(%error, exchange, "RabbitMQ channel lost while publishing; retrying on a new one");
                } else {
                    tracing::warn!(%error, exchange, "RabbitMQ channel lost while publishing, again");
                }
                self.invalidate(&session);
                if !retry {
                    break;
                }
                match self
                    .attempt(exchange, routing_key, payload, &properties, routing)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(AttemptError::Failed(failed)) => return Err(failed),
                    Err(AttemptError::Lost(again, on)) => (error, session) = (again, on),
                }
            }
            Err(MessagingError::NotConfirmed {
                system: SYSTEM,
                destination: exchange.to_owned(),
                reason: error.to_string(),
            })
        })
        .await
    }

    /// One publish on the current session, waiting for the confirm.
    async fn attempt(
        self: &Arc<Self>,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: &(impl Fn() -> BasicProperties + Send + Sync),
        routing: Routing<'_>,
    ) -> std::result::Result<(), AttemptError> {
        let request = match routing {
            Routing::Request(correlation_id) => Some(correlation_id),
            Routing::Any | Routing::Queued => None,
        };
        let session = self.session().await.map_err(AttemptError::Failed)?;
        self.check_exchange(&session, exchange)
            .await
            .map_err(AttemptError::Failed)?;
        let reply_to = match request {
            // Set up once per session; boxed to keep it out of the future of
            // every publish.
            Some(_) => Some(match session.reply_queue.get() {
                Some(queue) => queue.clone(),
                None => Box::pin(self.reply_queue(&session))
                    .await
                    .map_err(AttemptError::Failed)?,
            }),
            None => None,
        };
        // Built after the last await before the publish, so the properties
        // are not kept in this future next to lapin's copy of them.
        let mut properties = properties();
        if let (Some(reply_to), Some(correlation_id)) = (reply_to, request) {
            properties = properties
                .with_reply_to(reply_to)
                .with_correlation_id(correlation_id.into());
        }
        let lost = |error| AttemptError::Lost(error, session.clone());
        let confirm = session
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: !matches!(routing, Routing::Any),
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .map_err(lost)?;
        let confirmation = tokio::time::timeout(self.config.confirm_timeout, confirm)
            .await
            .map_err(|_| {
                AttemptError::Failed(MessagingError::NotConfirmed {
                    system: SYSTEM,
                    destination: exchange.to_owned(),
                    reason: format!("no confirm within {:?}", self.config.confirm_timeout),
                })
            })?
            .map_err(lost)?;
        if confirmation.is_nack() {
            return Err(AttemptError::Failed(MessagingError::NotConfirmed {
                system: SYSTEM,
                destination: exchange.to_owned(),
                reason: "the broker nacked the message".into(),
            }));
        }
        if let Some(returned) = confirmation.take_message() {
            let unroutable = format!(
                "returned unroutable: {} {}; no queue is bound to receive it",
                returned.reply_code, returned.reply_text
            );
            return Err(AttemptError::Failed(match request {
                // No one will answer: the request's own timeout, at once.
                Some(_) => MessagingError::Timeout {
                    system: SYSTEM,
                    destination: exchange.to_owned(),
                    timeout: Duration::ZERO,
                    detail: format!(" ({unroutable})"),
                },
                None => MessagingError::NotConfirmed {
                    system: SYSTEM,
                    destination: exchange.to_owned(),
                    reason: unroutable,
                },
            }));
        }
        Ok(())
    }

    /// This session's exclusive reply queue, consumed without acks; replies
    /// are routed to waiting requests by correlation id.
    async fn reply_queue(&self, session: &PublishSession) -> Result<ShortString> {
        session
            .reply_queue
            .get_or_try_init(|| async {
                let channel = session
                    .connection
                    .create_channel()
                    .await
                    .map_err(|e| self.unreachable(e))?;
                let queue = channel
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| MessagingError::broker(SYSTEM, "reply queue", "declare", e))?;
                let name = queue.name().clone();
                let mut consumer = channel
                    .basic_consume(
                        name.clone(),
                        "".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| MessagingError::broker(SYSTEM, name.as_str(), "consume", e))?;
                let pending = self.pending_replies.clone();
                tokio::spawn(async move {
                    // Keeps the channel alive as long as the consumer runs.
                    let _channel = channel;
                    while let Some(Ok(delivery)) = consumer.next().await {
                        let Some(id) = delivery.properties.correlation_id().as_ref() else {
                            continue;
                        };
                        let waiter = pending.lock().ok().and_then(|mut p| p.remove(id.as_str()));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(Reply {
                                headers: headers_from_amqp(delivery.properties.headers().as_ref()),
                                payload: Bytes::from(delivery.data),
                            });
                        }
                    }
                });
                Ok(name)
            })
            .await
            .cloned()
    }

    async fn consumer_connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.consumer_connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(connection.clone());
        }
        let connection = self.connect("consume").await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Declares `topology` and starts consuming its queue.
    async fn open_consumer(
        &self,
        topology: &Topology,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer)> {
        let connection = self.consumer_connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.unreachable(e))?;
        let fail = |operation, error: lapin::Error| {
            MessagingError::broker(SYSTEM, &topology.queue, operation, error)
        };
        topology
            .declare(&connection, &channel, self.config.quorum_queues)
            .await
            .map_err(|e| fail("declare topology", e))?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| fail("basic.qos", e))?;
        let consumer = channel
            .basic_consume(
                topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail("basic.consume", e))?;
        Ok((channel, consumer))
    }
}

fn known(set: &StdMutex<HashSet<String>>, name: &str) -> bool {
    set.lock().is_ok_and(|s| s.contains(name))
}

fn remember(set: &StdMutex<HashSet<String>>, name: &str) {
    if let Ok(mut s) = set.lock() {
        s.insert(name.to_owned());
    }
}

/// Declares a subscription's retry queue, whose `x-message-ttl` is the
/// retry delay. A queue's arguments cannot change: one declared before with
/// another delay keeps it (with a warning, until an operator deletes the
/// queue) rather than failing the consumer at every start. Each declaration
/// on a channel of its own, since a refused one closes its channel.
async fn declare_retry_queue(
    connection: &Connection,
    name: &str,
    arguments: FieldTable,
    delay: Duration,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let channel = connection.create_channel().await?;
    match channel.queue_declare(name.into(), durable, arguments).await {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(error) if is_precondition_failed(&error) => {
            let channel = connection.create_channel().await?;
            channel
                .queue_declare(
                    name.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "checked".into()).await;
            tracing::warn!(
                queue = name,
                retry_delay = ?delay,
                "the retry queue exists with another delay, which it keeps until it is deleted"
            );
            Ok(())
        }
        Err(error) => Err(error),
    }
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp)
        if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Queues and exchanges one subscription consumes from.
#[derive(Debug, Clone)]
struct Topology {
    /// What deliveries report as their destination.
    destination: String,
    group: String,
    /// The exchange to bind to, with the binding pattern.
    exchange: Option<(String, String)>,
    queue: String,
    durable: bool,
    /// `(dead-letter exchange, retry queue, delay)` of the retry path.
    retry: Option<(String, String, Duration)>,
    dead_letter_queue: Option<String>,
}

impl Topology {
    fn for_subscription(subscription: &Subscription, target: Target) -> Self {
        let queue = queue_name(subscription);
        let durable = subscription.persistence == Persistence::Durable;
        match target {
            Target::DeadLetters => Self {
                destination: format!("{queue}.dlq"),
                group: subscription.group.clone(),
                exchange: None,
                queue: format!("{queue}.dlq"),
                durable: true,
                retry: None,
                dead_letter_queue: None,
            },
            Target::Main => Self {
                destination: subscription.destination.clone(),
                group: subscription.group.clone(),
                exchange: Some((
                    subscription.destination.clone(),
                    subscription.filter.clone().unwrap_or_else(|| "#".into()),
                )),
                retry: durable.then(|| {
                    (
                        format!("{queue}.dlx"),
                        format!("{queue}.retry"),
                        subscription.retry_delay,
                    )
                }),
                dead_letter_queue: durable.then(|| format!("{queue}.dlq")),
                queue,
                durable,
            },
        }
    }

    async fn declare(
        &self,
        connection: &Connection,
        channel: &Channel,
        quorum: bool,
    ) -> lapin::Result<()> {
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let quorum_arguments = || {
            let mut arguments = FieldTable::default();
            if quorum {
                arguments.insert("x-queue-type".into(), long_string("quorum"));
            }
            arguments
        };
        if let Some(dead_letter_queue) = &self.dead_letter_queue {
            channel
                .queue_declare(
                    dead_letter_queue.as_str().into(),
                    durable_queue,
                    quorum_arguments(),
                )
                .await?;
        }
        let mut main_arguments = if self.durable {
            quorum_arguments()
        } else {
            FieldTable::default()
        };
        if let Some((dead_letter_exchange, retry_queue, delay)) = &self.retry {
            channel
                .exchange_declare(
                    dead_letter_exchange.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let mut retry_arguments = FieldTable::default();
            let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            retry_arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
            retry_arguments.insert("x-dead-letter-exchange".into(), long_string(""));
            retry_arguments.insert("x-dead-letter-routing-key".into(), long_string(&self.queue));
            declare_retry_queue(connection, retry_queue, retry_arguments, *delay).await?;
            channel
                .queue_bind(
                    retry_queue.as_str().into(),
                    dead_letter_exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            main_arguments.insert(
                "x-dead-letter-exchange".into(),
                long_string(dead_letter_exchange),
            );
            if quorum {
                main_arguments.insert(
                    "x-dead-letter-strategy".into(),
                    long_string("at-least-once"),
                );
                main_arguments.insert("x-overflow".into(), long_string("reject-publish"));
            }
        }
        let queue_options = if self.durable {
            durable_queue
        } else {
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            }
        };
        channel
            .queue_declare(self.queue.as_str().into(), queue_options, main_arguments)
            .await?;
        if let Some((exchange, binding)) = &self.exchange {
            declare_exchange(channel, exchange).await?;
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    exchange.as_str().into(),
                    binding.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Attempts so far, from the broker's own bookkeeping: one, plus each
    /// trip through the retry path (`x-death`), plus each return after a
    /// consumer died holding it (quorum `x-delivery-count`).
    fn attempt(&self, headers: Option<&FieldTable>) -> u32 {
        let Some(headers) = headers else { return 1 };
        let retried = match headers.inner().get("x-death") {
            Some(AMQPValue::FieldArray(deaths)) => deaths
                .as_slice()
                .iter()
                .filter_map(|death| match death {
                    AMQPValue::FieldTable(death) => Some(death),
                    _ => None,
                })
                .filter(|death| {
                    death.inner().get("queue").and_then(amqp_text) == Some(self.queue.as_str())
                        && death.inner().get("reason").and_then(amqp_text) == Some("rejected")
                })
                .filter_map(|death| death.inner().get("count").and_then(amqp_integer))
                .sum(),
            _ => 0,
        };
        let returned = headers
            .inner()
            .get("x-delivery-count")
            .and_then(amqp_integer)
            .unwrap_or(0);
        u32::try_from(1 + retried + returned).unwrap_or(u32::MAX)
    }
}

/// A consumer group's queue: `<exchange>.<group>`.
fn queue_name(subscription: &Subscription) -> String {
    format!("{}.{}", subscription.destination, subscription.group)
}

async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

fn amqp_integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Headers RabbitMQ adds for its own bookkeeping; not part of the message.
fn is_broker_header(name: &str) -> bool {
    name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
        || name == "x-delivery-count"
}

/// The text headers of an AMQP header table.
fn headers_from_amqp(table: Option<&FieldTable>) -> Headers {
    table
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(name, _)| !is_broker_header(name.as_str()))
                .filter_map(|(name, value)| {
                    amqp_text(value).map(|text| (name.as_str().to_owned(), text.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Properties for a message: persistent unless transient, its headers and
/// the envelope attributes `added` as long strings plus the producer's trace
/// context, `message_id` = `ce_id`.
fn properties<'a>(
    headers: &'a Headers,
    added: impl Iterator<Item = (&'static str, &'a str)>,
    persistence: Persistence,
    trace: Option<&Context>,
) -> BasicProperties {
    let mut table = FieldTable::default();
    for (name, value) in headers.iter() {
        table.insert(name.into(), long_string(value));
    }
    let mut message_id = headers.get(envelope::ID);
    for (name, value) in added {
        if name == envelope::ID {
            message_id = Some(value);
        }
        table.insert(name.into(), long_string(value));
    }
    if let Some(trace) = trace {
        propagation::inject(trace, &mut AmqpHeaderInjector(&mut table));
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(if persistence == Persistence::Durable {
            2
        } else {
            1
        })
        .with_headers(table);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    if let Some(content_type) = headers.get(envelope::CONTENT_TYPE) {
        properties = properties.with_content_type(content_type.into());
    }
    properties
}

impl Transport for RabbitMq {
    fn system(&self) -> MessagingSystem {
        SYSTEM
    }

    async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()> {
        let session = self.shared.session().await?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| self.shared.unreachable(e))?;
        declare_exchange(&channel, &spec.name)
            .await
            .map_err(|e| MessagingError::broker(SYSTEM, &spec.name, "declare exchange", e))?;
        let _ = channel.close(200, "declared".into()).await;
        remember(&session.known_exchanges, &spec.name);
        Ok(())
    }

    async fn publish(
        &self,
        message: OutgoingMessage,
        added: Added,
        trace: Option<&Context>,
    ) -> Result<()> {
        let properties = || {
            properties(
                &message.headers,
                added.iter(&message),
                message.persistence,
                trace,
            )
        };
        self.shared
            .publish_confirmed(
                &message.destination,
                message.key.as_deref().unwrap_or_default(),
                &message.payload,
                properties,
                if message.must_be_routed {
                    Routing::Queued
                } else {
                    Routing::Any
                },
            )
            .await
    }

    async fn subscribe(
        &self,
        subscription: &Subscription,
        target: Target,
    ) -> Result<DeliveryStream> {
        let topology = Topology::for_subscription(subscription, target);
        let policy = RetryPolicy::from(subscription);
        let (channel, consumer) = self
            .shared
            .open_consumer(&topology, subscription.prefetch)
            .await?;
        let (mut stream, sink) = DeliveryStream::channel(SYSTEM, policy, subscription.prefetch);
        let worker = ConsumerWorker {
            shared: self.shared.clone(),
            topology,
            prefetch: subscription.prefetch,
            sink,
        };
        stream.attach_worker(tokio::spawn(worker.run(channel, consumer)));
        Ok(stream)
    }

    async fn request(
        &self,
        message: &OutgoingMessage,
        added: &Added,
        trace: Option<&Context>,
        timeout: Duration,
    ) -> Result<Reply> {
        let correlation_id = uuid::Uuid::now_v7().to_string();
        let (sender, receiver) = oneshot::channel();
        let pending = self.shared.pending_replies.clone();
        if let Ok(mut waiting) = pending.lock() {
            waiting.insert(correlation_id.clone(), sender);
        }
        // Whatever happens next, the waiter must not outlive this call.
        let _forget = ForgetOnDrop {
            pending: &pending,
            correlation_id: &correlation_id,
        };
        let published = self
            .shared
            .publish_confirmed(
                &message.destination,
                message.key.as_deref().unwrap_or_default(),
                &message.payload,
                || {
                    properties(
                        &message.headers,
                        added.iter(message),
                        message.persistence,
                        trace,
                    )
                },
                Routing::Request(&correlation_id),
            )
            .await;
        if let Err(MessagingError::Timeout { detail, .. }) = published {
            return Err(MessagingError::Timeout {
                system: SYSTEM,
                destination: message.destination.clone(),
                timeout,
                detail,
            });
        }
        published?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(MessagingError::broker(
                SYSTEM,
                &message.destination,
                "request",
                "the reply queue was lost with its connection",
            )),
            Err(_) => Err(MessagingError::Timeout {
                system: SYSTEM,
                destination: message.destination.clone(),
                timeout,
                detail: String::new(),
            }),
        }
    }

    async fn check(&self) -> Result<()> {
        self.shared.session().await.map(|_| ())
    }

    fn dead_letter_destination(&self, subscription: &Subscription) -> String {
        format!("{}.dlq", queue_name(subscription))
    }
}

struct ForgetOnDrop<'a> {
    pending: &'a StdMutex<HashMap<String, oneshot::Sender<Reply>>>,
    correlation_id: &'a str,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(self.correlation_id);
        }
    }
}

/// Feeds one subscription's stream; re-opens the consumer after a lost
/// connection until the stream is drained or dropped.
struct ConsumerWorker {
    shared: Arc<Shared>,
    topology: Topology,
    prefetch: u16,
    sink: DeliverySink,
}

impl ConsumerWorker {
    async fn run(self, mut channel: Channel, mut consumer: lapin::Consumer) {
        loop {
            let stopped = self.pump(&mut consumer).await;
            if stopped {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                self.sink.wait_settled(DRAIN_TIMEOUT).await;
                let _ = channel.close(200, "drained".into()).await;
                return;
            }
            match self.reopen().await {
                Some((new_channel, new_consumer)) => {
                    channel = new_channel;
                    consumer = new_consumer;
                }
                None => return,
            }
        }
    }

    /// Forwards deliveries; `true` when stopped, `false` when the consumer died.
    async fn pump(&self, consumer: &mut lapin::Consumer) -> bool {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.sink.stop().cancelled() => return true,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let delivery = self.to_delivery(delivery);
                    if !self.sink.send(delivery).await {
                        return true;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, queue = %self.topology.queue, "RabbitMQ consumer lost; reconnecting");
                    return false;
                }
                None => {
                    tracing::warn!(queue = %self.topology.queue, "RabbitMQ consumer cancelled; reconnecting");
                    return false;
                }
            }
        }
    }

    async fn reopen(&self) -> Option<(Channel, lapin::Consumer)> {
        let mut delay = RECONNECT_INITIAL;
        loop {
            tokio::select! {
                _ = self.sink.stop().cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            match self
                .shared
                .open_consumer(&self.topology, self.prefetch)
                .await
            {
                Ok(opened) => {
                    tracing::info!(queue = %self.topology.queue, "RabbitMQ consumer re-opened");
                    return Some(opened);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "re-opening the RabbitMQ consumer failed");
                    delay = (delay * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    fn to_delivery(&self, delivery: lapin::message::Delivery) -> crate::delivery::Delivery {
        let table = delivery.properties.headers().as_ref();
        let headers = headers_from_amqp(table);
        let parent = table
            .map(|table| propagation::extract(&AmqpHeaderExtractor(table)))
            .unwrap_or_default();
        let key = headers
            .get(envelope::PARTITION_KEY)
            .map(str::to_owned)
            .or_else(|| {
                (!delivery.exchange.as_str().is_empty()
                    && !delivery.routing_key.as_str().is_empty())
                .then(|| delivery.routing_key.to_string())
            });
        let settler = RabbitSettler {
            acker: delivery.acker,
            shared: self.shared.clone(),
            has_retry_path: self.topology.retry.is_some(),
            dead_letter_queue: self.topology.dead_letter_queue.clone(),
            reply_to: delivery.properties.reply_to().clone(),
            correlation_id: delivery.properties.correlation_id().clone(),
        };
        let attempt = self.topology.attempt(table);
        self.sink.delivery(DeliveryParts {
            message: ReceivedMessage {
                destination: self.topology.destination.clone(),
                key,
                headers,
                attempt,
                // A trip through the retry queue is a new AMQP delivery.
                redelivered: delivery.redelivered || attempt > 1,
                payload: Bytes::from(delivery.data),
            },
            group: self.topology.group.clone(),
            parent,
            settler: Box::new(settler),
        })
    }
}

struct RabbitSettler {
    acker: lapin::Acker,
    shared: Arc<Shared>,
    has_retry_path: bool,
    dead_letter_queue: Option<String>,
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
}

impl RabbitSettler {
    fn settled(&self, operation: &'static str, result: lapin::Result<bool>) -> Result<()> {
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(MessagingError::broker(
                SYSTEM,
                "delivery",
                operation,
                "the channel is closed; the message will be redelivered",
            )),
            Err(error) => Err(MessagingError::broker(SYSTEM, "delivery", operation, error)),
        }
    }
}

#[async_trait]
impl Settler for RabbitSettler {
    async fn ack(self: Box<Self>) -> Result<()> {
        let result = self.acker.ack(BasicAckOptions::default()).await;
        self.settled("ack", result)
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        // Durable group queues: dead-lettered into the TTL retry queue, whose
        // TTL is the subscription's retry delay.
        if self.has_retry_path {
            let result = self
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            return self.settled("retry", result);
        }
        // Transient and dead-letter queues have no retry path: the message
        // is handed back after the delay, since a requeued one comes
        // straight back (and on a classic queue carries no count of tries).
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = self
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            if let Err(error) = self.settled("retry", result) {
                tracing::debug!(%error, "delayed requeue not sent; the broker redelivers");
            }
        });
        Ok(())
    }

    async fn publish_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        let Some(queue) = &self.dead_letter_queue else {
            tracing::warn!(
                reason = letter
                    .headers
                    .get(envelope::FAILURE_REASON)
                    .unwrap_or_default(),
                "a message of a transient RabbitMQ subscription failed and was dropped"
            );
            return Ok(());
        };
        self.shared
            .publish_confirmed(
                "",
                queue,
                &letter.payload,
                || {
                    properties(
                        &letter.headers,
                        std::iter::empty(),
                        Persistence::Durable,
                        None,
                    )
                },
                // A dead-letter queue deleted meanwhile must not swallow it.
                Routing::Queued,
            )
            .await
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        self.ack().await
    }

    fn taken_back(&self) -> bool {
        // Set when the channel closed: RabbitMQ requeued the message.
        self.acker.poisoned()
    }

    async fn release(self: Box<Self>) -> Result<()> {
        let result = self
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
        self.settled("release", result)
    }

    async fn reply(&self, reply: OutgoingMessage, trace: Option<Context>) -> Result<()> {
        let (Some(reply_to), Some(correlation_id)) = (&self.reply_to, &self.correlation_id) else {
            return Err(MessagingError::Invalid {
                system: SYSTEM,
                what: "reply",
                reason: "the delivery is not a request (no reply_to/correlation_id)".into(),
            });
        };
        crate::broker::check_headers(SYSTEM, &reply.headers)?;
        let properties = || {
            properties(
                &reply.headers,
                std::iter::empty(),
                Persistence::Transient,
                trace.as_ref(),
            )
            .with_correlation_id(correlation_id.clone())
        };
        self.shared
            .publish_confirmed(
                "",
                reply_to.as_str(),
                &reply.payload,
                properties,
                Routing::Any,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn attempts_count_retries_through_this_queue_and_returns() {
        let subscription = Subscription::new("orders", "billing");
        let topology = Topology::for_subscription(&subscription, Target::Main);
        assert_eq!(topology.queue, "orders.billing");
        assert_eq!(topology.attempt(None), 1);

        let death = |queue: &str, reason: &str, count: i64| {
            let mut table = FieldTable::default();
            table.insert("queue".into(), long_string(queue));
            table.insert("reason".into(), long_string(reason));
            table.insert("count".into(), AMQPValue::LongLongInt(count));
            AMQPValue::FieldTable(table)
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![
                    death("orders.billing", "rejected", 2),
                    death("orders.billing.retry", "expired", 2),
                ]
                .into(),
            ),
        );
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        headers.insert("ce_id".into(), long_string("abc"));
        assert_eq!(topology.attempt(Some(&headers)), 4);
        let neutral = headers_from_amqp(Some(&headers));
        assert_eq!(neutral.len(), 1);
        assert_eq!(neutral.get("ce_id"), Some("abc"));
    }
}
