//! NATS through async-nats: core pub/sub and queue groups for transient
//! notifications, JetStream for everything that must not be lost.
//!
//! Which of the two a message takes is its [`Persistence`]: `Transient`
//! messages and subscriptions use core NATS (no storage, no acks — a browser
//! that misses an order-status push refreshes), `Durable` ones use JetStream:
//! publishes wait for the stream's ack and carry `Nats-Msg-Id` = `ce_id`, so a
//! publisher retry inside the stream's duplicate window (120 s) is stored
//! once; subscriptions are durable pull consumers (the group is the durable
//! name, so competing consumers share one) with explicit acks and `ack_wait`
//! redelivery; the delivery count the server keeps decides when a message is
//! dead-lettered, not a `max_deliver` of the server's.
//!
//! **Leases.** JetStream redelivers a message not acked within `ack_wait`,
//! whether it is being handled, held through an outage, or waiting in the
//! consumer behind one that is. So the consumer pulls only as many messages
//! as its stream has room for, and every message it has received and not
//! settled is leased: a progress ack (`+WPI`) every third of `ack_wait`
//! restarts the server's timer, as Google Pub/Sub's clients extend their
//! deadlines, until the delivery is settled or dropped. A pull sent before
//! the client reconnected is replaced at once, not left to expire.
//!
//! Streams are found by subject: a destination already captured by a stream
//! (say the domain stream `orders.>`) uses it; otherwise `ensure_destination`
//! or the first subscription creates one capturing `<subject>` and
//! `<subject>.>`. Dead letters go to `dlq.<subject>.<group>`, in a separate
//! stream per destination, so they never reach the subscription they failed in.
//!
//! Request/reply is core NATS (`request` with a timeout; responders subscribe
//! transiently). A subject captured by a stream cannot also be a request
//! subject: the stream would answer every request with its publish ack.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, AckKind, stream};
use async_nats::{
    Client, ConnectOptions, Event, HeaderMap, HeaderValue, RequestErrorKind, Subject,
    connection::State,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use opentelemetry::Context;
use tokio::sync::OnceCell;

use crate::broker::{Broker, Target, Transport};
use crate::connecting::ConnectAttempts;
use crate::delivery::{
    DRAIN_TIMEOUT, DeadLetter, DeliveryParts, DeliverySink, DeliveryStream, NoopSettler,
    ReceivedMessage, Replier, RetryPolicy, Settler,
};
use crate::envelope::{self, Added};
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::message::{Headers, OutgoingMessage, Persistence, Reply};
use crate::propagation::{self, NatsHeaderExtractor, NatsHeaderInjector};
use crate::subscription::{DestinationSpec, Subscription};

const SYSTEM: MessagingSystem = MessagingSystem::Nats;
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(4);
/// How long one pull request waits at the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The most often a lease is renewed, whatever the ack wait.
const MIN_LEASE_RENEWAL: Duration = Duration::from_millis(100);

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    /// Shown in the server's connection list (`connz`).
    pub client_name: String,
    /// How long a JetStream publish waits for the stream's ack.
    pub ack_timeout: Duration,
    /// How long a retried publish with the same `ce_id` is recognised as a duplicate.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: client_name.into(),
            ack_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// A NATS client: connects on first use, then reconnects by itself (250 ms
/// doubling to 4 s, forever). Cheap to clone.
#[derive(Clone)]
pub struct Nats {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.shared.config.url)
            .finish()
    }
}

struct Shared {
    config: NatsConfig,
    connection: OnceCell<(Client, jetstream::Context)>,
    /// The first connection attempt, while it runs.
    connecting: ConnectAttempts<(Client, jetstream::Context)>,
    /// Subject → the stream that captures it.
    streams: StdMutex<HashMap<String, String>>,
    /// Bumped each time the connection is (re)established: a pull sent
    /// before is gone with the old connection.
    connections: tokio::sync::watch::Sender<u64>,
}

impl Nats {
    /// No I/O happens until first use.
    pub fn new(config: NatsConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                connection: OnceCell::new(),
                connecting: ConnectAttempts::default(),
                streams: StdMutex::default(),
                connections: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// The broker-neutral handle; `source` is the default `ce_source`.
    pub fn into_broker(self, source: &str) -> Broker {
        Broker::new(self, source)
    }

    /// The underlying client, connecting if needed.
    pub async fn client(&self) -> Result<Client> {
        self.shared
            .connect()
            .await
            .map(|(client, _)| client.clone())
    }

    /// The JetStream context, connecting if needed.
    pub async fn jetstream(&self) -> Result<jetstream::Context> {
        self.shared.connect().await.map(|(_, js)| js.clone())
    }
}

/// The JetStream stream name for a subject: stream and consumer names may
/// not contain `.`, `*`, `>` or spaces.
pub fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn dead_letter_subject(subscription: &Subscription) -> String {
    format!(
        "dlq.{}.{}",
        subscription.destination,
        sanitize_name(&subscription.group)
    )
}

/// What a stream created for a destination keeps ([`DestinationSpec`]):
/// JetStream's defaults (everything, for ever) unless the spec says less.
#[derive(Debug, Clone, Copy, Default)]
struct StreamLimits {
    max_age: Option<Duration>,
    latest_per_subject: bool,
}

impl Shared {
    fn unreachable(&self, reason: impl std::fmt::Display) -> MessagingError {
        MessagingError::Unreachable {
            system: SYSTEM,
            endpoint: self.config.url.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<&(Client, jetstream::Context)> {
        let connection = match self.connection.get() {
            Some(connection) => connection,
            // Connecting is a large future; boxed, it stays out of the
            // future of every publish that finds the connection open.
            None => Box::pin(self.open()).await?,
        };
        if connection.0.connection_state() == State::Disconnected {
            return Err(self.unreachable("the connection is down; reconnecting"));
        }
        Ok(connection)
    }

    /// The first connection, made in a task of its own that no caller
    /// giving up cancels (see [`crate::connecting`]); the client reconnects
    /// by itself from then on.
    async fn open(self: &Arc<Self>) -> Result<&(Client, jetstream::Context)> {
        let shared = Arc::clone(self);
        let connection = self
            .connecting
            .join(move || async move { shared.dial().await })
            .await
            .map_err(|reason| self.unreachable(reason))?;
        Ok(self.connection.get_or_init(|| async { connection }).await)
    }

    async fn dial(&self) -> Result<(Client, jetstream::Context)> {
        let connections = self.connections.clone();
        let client = ConnectOptions::new()
            .name(&self.config.client_name)
            .event_callback(move |event| {
                if matches!(event, Event::Connected) {
                    connections.send_modify(|count| *count += 1);
                }
                std::future::ready(())
            })
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let exponent = u32::try_from(attempts.min(8)).unwrap_or(8);
                (RECONNECT_INITIAL * 2u32.pow(exponent)).min(RECONNECT_MAX)
            })
            .connect(&self.config.url)
            .await
            .map_err(|error| self.unreachable(error))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.config.ack_timeout);
        Ok((client, js))
    }

    /// The stream capturing `subject`, created (capturing `create_as` and
    /// `create_as.>`) if none does.
    async fn stream_for(
        self: &Arc<Self>,
        subject: &str,
        create_as: &str,
        limits: StreamLimits,
    ) -> Result<String> {
        if let Some(name) = self
            .streams
            .lock()
            .ok()
            .and_then(|s| s.get(subject).cloned())
        {
            return Ok(name);
        }
        let (_, js) = self.connect().await?;
        let name = match js.stream_by_subject(subject).await {
            Ok(name) => name,
            Err(_) => {
                let name = sanitize_name(create_as);
                js.get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![create_as.to_owned(), format!("{create_as}.>")],
                    duplicate_window: self.config.duplicate_window,
                    storage: stream::StorageType::File,
                    max_age: limits.max_age.unwrap_or_default(),
                    max_messages_per_subject: if limits.latest_per_subject { 1 } else { 0 },
                    ..stream::Config::default()
                })
                .await
                .map_err(|e| MessagingError::broker(SYSTEM, subject, "create stream", e))?;
                name
            }
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(subject.to_owned(), name.clone());
        }
        Ok(name)
    }

    /// The NATS header map of a message: the envelope attributes `added`, the
    /// caller's `headers` (names and values moved rather than copied) and
    /// the producer's trace context.
    fn header_map<'a>(
        added: impl Iterator<Item = (&'static str, Cow<'a, str>)>,
        headers: Headers,
        trace: Option<&Context>,
    ) -> HeaderMap {
        let mut map = HeaderMap::new();
        // Names and values were validated by `Broker::publish`.
        for (name, value) in added {
            map.insert(HeaderName::from_static(name), value.into_owned());
        }
        for (name, value) in headers {
            map.insert(name, value);
        }
        if let Some(trace) = trace {
            propagation::inject(trace, &mut NatsHeaderInjector(&mut map));
        }
        map
    }

    /// `message` as NATS sends it, with the envelope attributes `added`, the
    /// trace context and, when `deduplicate`, `Nats-Msg-Id` = `ce_id` (the
    /// stream then stores a retried publish once). Built before any await,
    /// so the publish future carries the wire form only.
    fn wire(
        mut message: OutgoingMessage,
        added: Added,
        trace: Option<&Context>,
        deduplicate: bool,
    ) -> Wire {
        let id = deduplicate
            .then(|| added.message_id(&message.headers).map(HeaderValue::from))
            .flatten();
        let headers = std::mem::take(&mut message.headers);
        let mut map = Self::header_map(added.into_iter(&message), headers, trace);
        if let Some(id) = id {
            map.insert(NATS_MESSAGE_ID, id);
        }
        Wire {
            subject: message.destination,
            headers: map,
            payload: message.payload,
        }
    }

    async fn publish_durable(self: &Arc<Self>, wire: Wire) -> Result<()> {
        let (_, js) = self.connect().await?;
        let Wire {
            subject,
            headers,
            payload,
        } = wire;
        let not_confirmed = |reason: String| MessagingError::NotConfirmed {
            system: SYSTEM,
            destination: subject.clone(),
            reason,
        };
        // Boxed: async-nats' publish future (about 1 KiB) would be most of
        // this one, and every layer of futures above copies all of it per
        // publish; boxed it is one allocation of a size the allocator keeps
        // ready.
        let ack = Box::pin(js.publish_with_headers(subject.clone(), headers, payload))
            .await
            .map_err(|error| not_confirmed(error.to_string()))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(error) => Err(match error.kind() {
                PublishErrorKind::StreamNotFound => MessagingError::NotFound {
                    system: SYSTEM,
                    destination: subject.clone(),
                    detail: " (no JetStream stream captures this subject; create one with ensure_destination)".into(),
                },
                PublishErrorKind::BrokenPipe => self.unreachable(error),
                _ => not_confirmed(error.to_string()),
            }),
        }
    }
}

/// A message as NATS sends it.
struct Wire {
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

/// Headers NATS adds for its own bookkeeping; not part of the message.
fn is_broker_header(name: &str) -> bool {
    name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")
}

fn headers_from_nats(map: Option<&HeaderMap>) -> Headers {
    map.map(|map| {
        map.iter()
            .filter(|(name, _)| !is_broker_header(name.as_ref()))
            .filter_map(|(name, values)| {
                values
                    .last()
                    .map(|value| (name.to_string(), value.as_str().to_owned()))
            })
            .collect()
    })
    .unwrap_or_default()
}

impl Transport for Nats {
    fn system(&self) -> MessagingSystem {
        SYSTEM
    }

    async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()> {
        match spec.persistence {
            Persistence::Durable => self
                .shared
                .stream_for(
                    &spec.name,
                    &spec.name,
                    StreamLimits {
                        max_age: spec.max_age,
                        latest_per_subject: spec.latest_per_subject,
                    },
                )
                .await
                .map(|_| ()),
            // Core subjects exist by being used.
            Persistence::Transient => self.shared.connect().await.map(|_| ()),
        }
    }

    // A plain `fn` returning the future: the wire form is built before it,
    // so the future does not hold the message, its headers and the envelope
    // as well.
    fn publish(
        &self,
        message: OutgoingMessage,
        added: Added,
        trace: Option<&Context>,
    ) -> impl Future<Output = Result<()>> {
        let persistence = message.persistence;
        let wire = Shared::wire(message, added, trace, persistence == Persistence::Durable);
        async move {
            match persistence {
                Persistence::Durable => self.shared.publish_durable(wire).await,
                Persistence::Transient => {
                    let (client, _) = self.shared.connect().await?;
                    // Boxed for the same reason as the JetStream publish.
                    Box::pin(client.publish_with_headers(wire.subject, wire.headers, wire.payload))
                        .await
                        .map_err(|error| self.shared.unreachable(error))
                }
            }
        }
    }

    async fn subscribe(
        &self,
        subscription: &Subscription,
        target: Target,
    ) -> Result<DeliveryStream> {
        let policy = RetryPolicy::from(subscription);
        let (mut stream, sink) = DeliveryStream::channel(SYSTEM, policy, subscription.prefetch);
        let (client, js) = self.shared.connect().await?;
        if target == Target::Main && subscription.persistence == Persistence::Transient {
            let filter = subscription
                .filter
                .clone()
                .unwrap_or_else(|| subscription.destination.clone());
            let subscriber = client
                .queue_subscribe(filter, sanitize_name(&subscription.group))
                .await
                .map_err(|e| {
                    MessagingError::broker(SYSTEM, &subscription.destination, "subscribe", e)
                })?;
            let worker = CoreWorker {
                client: client.clone(),
                group: subscription.group.clone(),
                sink,
            };
            stream.attach_worker(tokio::spawn(worker.run(subscriber)));
            return Ok(stream);
        }

        let dead_letters = dead_letter_subject(subscription);
        let dead_letter_stream_root = format!("dlq.{}", subscription.destination);
        let (stream_name, filter, durable, dead_letter_subject) = match target {
            Target::Main => {
                self.shared
                    .stream_for(
                        &dead_letters,
                        &dead_letter_stream_root,
                        StreamLimits::default(),
                    )
                    .await?;
                let name = self
                    .shared
                    .stream_for(
                        &subscription.destination,
                        &subscription.destination,
                        StreamLimits::default(),
                    )
                    .await?;
                let filter = subscription
                    .filter
                    .clone()
                    .unwrap_or_else(|| subscription.destination.clone());
                (
                    name,
                    filter,
                    sanitize_name(&subscription.group),
                    Some(dead_letters),
                )
            }
            Target::DeadLetters => {
                let name = self
                    .shared
                    .stream_for(
                        &dead_letters,
                        &dead_letter_stream_root,
                        StreamLimits::default(),
                    )
                    .await?;
                let durable = format!("{}-dlq-reader", sanitize_name(&subscription.group));
                (name, dead_letters, durable, None)
            }
        };
        let fail = |operation, error: &dyn std::fmt::Display| {
            MessagingError::broker(SYSTEM, &subscription.destination, operation, error)
        };
        let js_stream = js
            .get_stream(&stream_name)
            .await
            .map_err(|e| fail("get stream", &e))?;
        let consumer = js_stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: subscription.ack_wait,
                    // No cap of the server's: the delivery's own count
                    // decides (`DeliverySink::admit`), and a message whose
                    // dead letter could not be published must come back to
                    // be dead-lettered again, not silently stop.
                    max_deliver: -1,
                    filter_subject: filter,
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|e| fail("create consumer", &e))?;
        let leases = Arc::new(Leases::default());
        tokio::spawn(keep_leases(
            Arc::downgrade(&leases),
            client.clone(),
            (subscription.ack_wait / 3).max(MIN_LEASE_RENEWAL),
        ));
        let worker = JetStreamWorker {
            shared: self.shared.clone(),
            consumer,
            group: subscription.group.clone(),
            dead_letter_subject,
            leases,
            sink,
        };
        stream.attach_worker(tokio::spawn(worker.run()));
        Ok(stream)
    }

    async fn request(
        &self,
        message: &OutgoingMessage,
        added: &Added,
        trace: Option<&Context>,
        timeout: Duration,
    ) -> Result<Reply> {
        let (client, _) = self.shared.connect().await?;
        let added = added
            .iter(message)
            .map(|(name, value)| (name, Cow::Borrowed(value)));
        let map = Shared::header_map(added, message.headers.clone(), trace);
        let request = async_nats::Request::new()
            .payload(message.payload.clone())
            .headers(map)
            .timeout(Some(timeout));
        let timed_out = |detail: &str| MessagingError::Timeout {
            system: SYSTEM,
            destination: message.destination.clone(),
            timeout,
            detail: detail.to_owned(),
        };
        match client
            .send_request(message.destination.clone(), request)
            .await
        {
            Ok(reply) => Ok(Reply {
                headers: headers_from_nats(reply.headers.as_ref()),
                payload: reply.payload,
            }),
            Err(error) => Err(match error.kind() {
                RequestErrorKind::TimedOut => timed_out(""),
                RequestErrorKind::NoResponders => timed_out(" (no responder is subscribed)"),
                _ => MessagingError::broker(SYSTEM, &message.destination, "request", error),
            }),
        }
    }

    async fn check(&self) -> Result<()> {
        let (client, _) = self.shared.connect().await?;
        tokio::time::timeout(Duration::from_secs(5), client.flush())
            .await
            .map_err(|_| self.shared.unreachable("no answer within 5s"))?
            .map_err(|error| self.shared.unreachable(error))
    }

    fn dead_letter_destination(&self, subscription: &Subscription) -> String {
        dead_letter_subject(subscription)
    }
}

/// Feeds a core (transient) queue-group subscription; async-nats
/// re-subscribes by itself after a reconnect.
struct CoreWorker {
    client: Client,
    group: String,
    sink: DeliverySink,
}

impl CoreWorker {
    async fn run(self, mut subscriber: async_nats::Subscriber) {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.sink.stop().cancelled() => break,
                next = subscriber.next() => next,
            };
            let Some(message) = next else { break };
            let parent = message
                .headers
                .as_ref()
                .map(|map| propagation::extract(&NatsHeaderExtractor(map)))
                .unwrap_or_default();
            let headers = headers_from_nats(message.headers.as_ref());
            let delivery = self.sink.delivery(DeliveryParts {
                message: ReceivedMessage {
                    destination: message.subject.to_string(),
                    key: headers.get(envelope::PARTITION_KEY).map(str::to_owned),
                    headers,
                    payload: message.payload,
                    attempt: 1,
                    redelivered: false,
                },
                group: self.group.clone(),
                parent,
                settler: Box::new(NoopSettler {
                    replier: CoreReplier {
                        client: self.client.clone(),
                        reply_to: message.reply.map(|subject| subject.to_string()),
                    },
                }),
            });
            if !self.sink.send(delivery).await {
                break;
            }
        }
        let _ = subscriber.unsubscribe().await;
        self.sink.wait_settled(DRAIN_TIMEOUT).await;
    }
}

struct CoreReplier {
    client: Client,
    reply_to: Option<String>,
}

#[async_trait]
impl Replier for CoreReplier {
    async fn reply(&self, reply: OutgoingMessage, trace: Option<Context>) -> Result<()> {
        let Some(reply_to) = &self.reply_to else {
            return Err(MessagingError::Invalid {
                system: SYSTEM,
                what: "reply",
                reason: "the message is not a request (no reply subject)".into(),
            });
        };
        crate::broker::check_headers(SYSTEM, &reply.headers)?;
        let map = Shared::header_map(std::iter::empty(), reply.headers, trace.as_ref());
        let fail = |error: &dyn std::fmt::Display| {
            MessagingError::broker(SYSTEM, reply_to, "reply", error)
        };
        self.client
            .publish_with_headers(reply_to.clone(), map, reply.payload)
            .await
            .map_err(|e| fail(&e))?;
        self.client.flush().await.map_err(|e| fail(&e))
    }
}

/// NAKs what a pull has already received and nobody took: handed back now,
/// the messages go to another consumer of the group at once instead of
/// after the ack wait (a replica stopping in a rolling deploy).
async fn hand_back_received<S, E>(batch: &mut S)
where
    S: futures::Stream<Item = std::result::Result<jetstream::Message, E>> + Unpin,
{
    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
        if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%error, "message not handed back; redelivered after the ack wait");
        }
    }
}

/// Feeds a JetStream durable pull consumer; re-opens the pull after errors.
struct JetStreamWorker {
    shared: Arc<Shared>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    group: String,
    dead_letter_subject: Option<String>,
    leases: Arc<Leases>,
    sink: DeliverySink,
}

impl JetStreamWorker {
    /// Pulls as many messages as the stream has room for, hands them over,
    /// and pulls again; a pull that fails is retried with backoff.
    async fn run(self) {
        let mut delay = RECONNECT_INITIAL;
        let mut connections = self.shared.connections.subscribe();
        'pulling: loop {
            connections.mark_unchanged();
            let room = tokio::select! {
                biased;
                _ = self.sink.stop().cancelled() => break,
                room = self.sink.room() => match room {
                    Some(room) => room,
                    None => break,
                },
            };
            let pulled = self
                .consumer
                .batch()
                .max_messages(room)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let failure = match pulled {
                Ok(mut batch) => loop {
                    let next = tokio::select! {
                        biased;
                        _ = self.sink.stop().cancelled() => {
                            hand_back_received(&mut batch).await;
                            break 'pulling;
                        }
                        // Reconnected: pull again now rather than wait for
                        // this pull's expiry.
                        Ok(()) = connections.changed() => break None,
                        next = batch.next() => next,
                    };
                    match next {
                        Some(Ok(message)) => {
                            delay = RECONNECT_INITIAL;
                            // There is room: the pull asked for no more.
                            if !self.sink.send(self.to_delivery(message)).await {
                                break 'pulling;
                            }
                        }
                        Some(Err(error)) => break Some(error.to_string()),
                        None => break None,
                    }
                },
                Err(error) => Some(error.to_string()),
            };
            if let Some(error) = failure {
                tracing::warn!(%error, group = %self.group, retry_in = ?delay, "JetStream pull failed");
                tokio::select! {
                    _ = self.sink.stop().cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
        self.finish().await;
    }

    async fn finish(&self) {
        self.sink.wait_settled(DRAIN_TIMEOUT).await;
    }

    fn to_delivery(&self, message: jetstream::Message) -> crate::delivery::Delivery {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let parent = message
            .message
            .headers
            .as_ref()
            .map(|map| propagation::extract(&NatsHeaderExtractor(map)))
            .unwrap_or_default();
        let headers = headers_from_nats(message.message.headers.as_ref());
        let received = ReceivedMessage {
            destination: message.message.subject.to_string(),
            key: headers.get(envelope::PARTITION_KEY).map(str::to_owned),
            headers,
            payload: message.message.payload.clone(),
            attempt,
            redelivered: attempt > 1,
        };
        self.sink.delivery(DeliveryParts {
            message: received,
            group: self.group.clone(),
            parent,
            settler: Box::new(JetStreamSettler {
                shared: self.shared.clone(),
                dead_letter_subject: self.dead_letter_subject.clone(),
                _lease: self.leases.take(&message),
                message,
            }),
        })
    }
}

/// The ack subjects of the deliveries received and not settled yet (each
/// delivery has its own: it names the delivery's sequence numbers).
#[derive(Default)]
struct Leases {
    held: StdMutex<BTreeSet<Subject>>,
}

impl Leases {
    /// Leases `message` until the returned guard is dropped; a message
    /// without an ack subject (not from JetStream) needs none.
    fn take(self: &Arc<Self>, message: &jetstream::Message) -> Option<Lease> {
        let subject = message.message.reply.clone()?;
        self.held.lock().ok()?.insert(subject.clone());
        Some(Lease {
            leases: self.clone(),
            subject,
        })
    }

    fn subjects(&self) -> Vec<Subject> {
        self.held
            .lock()
            .map(|held| held.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Ends a delivery's lease when the delivery is settled or dropped.
struct Lease {
    leases: Arc<Leases>,
    subject: Subject,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut held) = self.leases.held.lock() {
            held.remove(&self.subject);
        }
    }
}

/// Renews every lease each `every`, until the worker and every delivery it
/// handed out are gone.
async fn keep_leases(leases: Weak<Leases>, client: Client, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(subjects) = leases.upgrade().map(|leases| leases.subjects()) else {
            return;
        };
        for subject in subjects {
            // Lost while disconnected: the server redelivers after
            // `ack_wait`, as it would have without the lease.
            let _ = client.publish(subject, Bytes::from_static(b"+WPI")).await;
        }
    }
}

struct JetStreamSettler {
    shared: Arc<Shared>,
    dead_letter_subject: Option<String>,
    _lease: Option<Lease>,
    message: jetstream::Message,
}

impl JetStreamSettler {
    fn failed(&self, operation: &'static str, error: impl std::fmt::Display) -> MessagingError {
        MessagingError::broker(
            SYSTEM,
            self.message.message.subject.as_str(),
            operation,
            error,
        )
    }
}

#[async_trait]
impl Settler for JetStreamSettler {
    async fn ack(self: Box<Self>) -> Result<()> {
        // Waits for the server's confirmation: an ack lost on the way would
        // mean a redelivery after ack_wait.
        self.message
            .double_ack()
            .await
            .map_err(|error| self.failed("ack", error))
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|error| self.failed("nak", error))
    }

    async fn publish_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        if let Some(subject) = &self.dead_letter_subject {
            let mut headers = letter.headers;
            // A dead letter is a new message: it must not be taken for a
            // duplicate of the original in the dead-letter stream.
            if let Some(id) = headers.get(envelope::ID).map(str::to_owned) {
                headers.insert("x-original-id", id);
            }
            let mut map = Shared::header_map(std::iter::empty(), headers, None);
            map.insert(NATS_MESSAGE_ID, uuid::Uuid::now_v7().to_string());
            let (_, js) = self.shared.connect().await?;
            js.publish_with_headers(subject.clone(), map, letter.payload)
                .await
                .map_err(|error| self.failed("dead-letter", error))?
                .await
                .map_err(|error| self.failed("dead-letter", error))?;
        }
        Ok(())
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        self.message
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|error| self.failed("term", error))
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.message
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(|error| self.failed("nak", error))
    }

    async fn reply(&self, _reply: OutgoingMessage, _trace: Option<Context>) -> Result<()> {
        Err(MessagingError::Unsupported {
            system: SYSTEM,
            operation: "replies to JetStream deliveries (subscribe transiently to serve requests)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_for_streams_and_consumers() {
        assert_eq!(sanitize_name("ferrishop.orders"), "ferrishop_orders");
        assert_eq!(sanitize_name("dlq.a-b.c*"), "dlq_a-b_c_");
    }

    #[test]
    fn nats_bookkeeping_headers_are_dropped() {
        let mut map = HeaderMap::new();
        map.insert("Nats-Msg-Id", "1");
        map.insert("ce_id", "1");
        let headers = headers_from_nats(Some(&map));
        assert_eq!(headers.len(), 1);
        assert_eq!(headers.get("ce_id"), Some("1"));
    }
}
