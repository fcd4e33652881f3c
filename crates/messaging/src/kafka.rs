//! Kafka through rdkafka (bundled librdkafka): idempotent `acks=all`
//! publishing, keyed partitioning, consumer groups that commit only what was
//! processed, in-process delayed retries and a dead-letter topic.
//!
//! **Commits.** Deliveries may be settled out of order (several handlers at
//! once, a retry waiting while later messages are acked), but a Kafka offset
//! commit means "everything before this is done". The `OffsetTracker`
//! therefore commits, per partition, only up to the oldest offset still
//! unsettled, so a crash redelivers every message not yet acked (and possibly
//! some that were — at-least-once, never at-most-once). Commits are batched
//! every 100 ms and flushed synchronously when partitions are revoked and when
//! the consumer stops, so a rebalance hands the next owner an exact position.
//!
//! **Retries.** Kafka cannot requeue one message. A `nack { requeue }` keeps the
//! offset uncommitted and re-yields the same message on the stream after the
//! retry delay; the attempt count lives in the consumer's memory, so it
//! restarts at 1 if the consumer dies (the uncommitted message is then read
//! again by the next owner). After `max_attempts` — or on `nack { requeue:
//! false }` — the message is produced to `<topic>.<group>.dlq` with the failure
//! headers and its offset is settled.
//!
//! **Backpressure.** The worker stops reading once the stream holds
//! `prefetch` deliveries. librdkafka, though, takes a consumer that has not
//! polled for `max.poll.interval.ms` for a stuck one and leaves its group:
//! the partitions move, and every unsettled message is read again. So when
//! the stream has taken nothing for half that interval (a handler waiting
//! out a database outage), the worker pauses its partitions and polls on; a
//! paused partition yields nothing and, once resumed, is read from where the
//! worker stopped.
//!
//! Request/reply is not offered: Kafka has no reply path, and emulating one
//! with reply topics would hide a design smell behind an API that looks cheap.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use opentelemetry::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::broker::{Broker, MAX_MESSAGE_BYTES, Target, Transport};
use crate::delivery::{
    DRAIN_TIMEOUT, DeadLetter, Delivery, DeliveryParts, DeliverySink, DeliveryStream,
    ReceivedMessage, RetryPolicy, Settler,
};
use crate::envelope::Added;
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::message::{Headers, OutgoingMessage, Reply};
use crate::propagation::{self, KafkaHeaderExtractor, KafkaHeaderInjector};
use crate::subscription::{DestinationSpec, Subscription};

const SYSTEM: MessagingSystem = MessagingSystem::Kafka;
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How long a [`Transport::check`] waits for the cluster's metadata: under
/// the platform's 2 s readiness timeout, so that a probe's answer is the
/// cluster's and not the probe's own timeout.
const METADATA_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// How to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub client_id: String,
    /// Partitions of topics this client creates implicitly (the topic a
    /// subscription reads when it does not exist yet, dead-letter topics).
    pub default_partitions: u32,
    /// How long the producer keeps trying to deliver (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How long a silent group member keeps its partitions (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// How long a consumer may go without polling before it leaves its group
    /// (`max.poll.interval.ms`, at least `session_timeout`). A consumer whose
    /// handler stops taking deliveries pauses its partitions after half of
    /// it and polls on, so a long wait keeps the group's assignment.
    pub max_poll_interval: Duration,
    /// How long `subscribe` waits for the group to assign partitions.
    pub assignment_timeout: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            default_partitions: DestinationSpec::DEFAULT_PARTITIONS,
            delivery_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            assignment_timeout: Duration::from_secs(30),
        }
    }
}

/// A Kafka client: one idempotent producer shared by every publish, one
/// consumer per subscription. Cheap to clone.
#[derive(Clone)]
pub struct Kafka {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.shared.config.brokers)
            .finish()
    }
}

struct Shared {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    known_topics: StdMutex<HashSet<String>>,
    /// Held by the one metadata request of a [`Transport::check`] in flight.
    checking: Arc<tokio::sync::Mutex<()>>,
}

impl Kafka {
    /// Creates the clients; they connect in the background.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let invalid = |error: KafkaError| MessagingError::Invalid {
            system: SYSTEM,
            what: "client configuration",
            reason: error.to_string(),
        };
        let producer: FutureProducer = base_config(&config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "message.max.bytes",
                (MAX_MESSAGE_BYTES + 64 * 1024).to_string(),
            )
            .create()
            .map_err(invalid)?;
        let admin: AdminClient<DefaultClientContext> =
            base_config(&config).create().map_err(invalid)?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                producer,
                admin,
                known_topics: StdMutex::default(),
                checking: Arc::default(),
            }),
        })
    }

    /// The broker-neutral handle; `source` is the default `ce_source`.
    pub fn into_broker(self, source: &str) -> Broker {
        Broker::new(self, source)
    }
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id)
        .set("broker.address.family", "v4");
    client
}

impl Shared {
    fn unreachable(&self, reason: impl std::fmt::Display) -> MessagingError {
        MessagingError::Unreachable {
            system: SYSTEM,
            endpoint: self.config.brokers.clone(),
            reason: reason.to_string(),
        }
    }

    async fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        if self
            .known_topics
            .lock()
            .is_ok_and(|topics| topics.contains(name))
        {
            return Ok(());
        }
        let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = tokio::time::timeout(
            Duration::from_secs(15),
            self.admin.create_topics([&topic], &options),
        )
        .await
        .map_err(|_| self.unreachable("no answer to CreateTopics within 15s"))?
        .map_err(|error| self.map_error(name, "create topic", error))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(MessagingError::broker(SYSTEM, name, "create topic", code));
                }
            }
        }
        if let Ok(mut topics) = self.known_topics.lock() {
            topics.insert(name.to_owned());
        }
        Ok(())
    }

    /// Produces one record and waits for its delivery report.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        headers: OwnedHeaders,
        payload: &[u8],
    ) -> Result<()> {
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        // Boxed: rdkafka's send future would be most of the publish future,
        // which every layer above copies per publish.
        Box::pin(
            self.producer
                .send(record, Timeout::After(self.config.delivery_timeout)),
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| self.map_error(topic, "publish", error))
    }

    fn map_error(&self, topic: &str, operation: &'static str, error: KafkaError) -> MessagingError {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                MessagingError::NotFound {
                    system: SYSTEM,
                    destination: topic.to_owned(),
                    detail: " (no such topic; create it with ensure_destination)".into(),
                }
            }
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::MessageTimedOut,
            ) => self.unreachable(format!("{operation} on {topic:?}: {error}")),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
                MessagingError::TooLarge {
                    system: SYSTEM,
                    destination: topic.to_owned(),
                    size: 0,
                    limit: MAX_MESSAGE_BYTES,
                }
            }
            _ if operation == "publish" => MessagingError::NotConfirmed {
                system: SYSTEM,
                destination: topic.to_owned(),
                reason: error.to_string(),
            },
            _ => MessagingError::broker(SYSTEM, topic, operation, error),
        }
    }
}

/// Kafka record headers: `headers` (names and values) and the producer's
/// trace context.
fn record_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    trace: Option<&Context>,
) -> OwnedHeaders {
    let (least, most) = headers.size_hint();
    // Room for the trace context too.
    let mut record_headers = OwnedHeaders::new_with_capacity(most.unwrap_or(least) + 2);
    for (name, value) in headers {
        record_headers = record_headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    if let Some(trace) = trace {
        propagation::inject(trace, &mut KafkaHeaderInjector(&mut record_headers));
    }
    record_headers
}

/// `<topic>.<group>.dlq`.
fn dead_letter_topic(subscription: &Subscription) -> String {
    format!("{}.{}.dlq", subscription.destination, subscription.group)
}

impl Transport for Kafka {
    fn system(&self) -> MessagingSystem {
        SYSTEM
    }

    async fn ensure_destination(&self, spec: &DestinationSpec) -> Result<()> {
        self.shared.create_topic(&spec.name, spec.partitions).await
    }

    // A plain `fn` returning the future: the record's headers are built
    // before it, so the future does not hold the envelope as well.
    fn publish(
        &self,
        message: OutgoingMessage,
        added: Added,
        trace: Option<&Context>,
    ) -> impl Future<Output = Result<()>> {
        let added = added
            .iter(&message)
            .map(|(name, value)| (name as &str, value));
        let headers = record_headers(message.headers.iter().chain(added), trace);
        async move {
            self.shared
                .produce(
                    &message.destination,
                    message.key.as_deref(),
                    headers,
                    &message.payload,
                )
                .await
        }
    }

    async fn subscribe(
        &self,
        subscription: &Subscription,
        target: Target,
    ) -> Result<DeliveryStream> {
        let partitions = self.shared.config.default_partitions;
        let (topic, group, dead_letter_topic) = match target {
            Target::Main => {
                let dead_letters = dead_letter_topic(subscription);
                self.shared.create_topic(&dead_letters, partitions).await?;
                (
                    subscription.destination.clone(),
                    subscription.group.clone(),
                    Some(dead_letters),
                )
            }
            Target::DeadLetters => (
                dead_letter_topic(subscription),
                format!("{}.dlq-reader", subscription.group),
                None,
            ),
        };
        self.shared.create_topic(&topic, partitions).await?;

        let tracker = Arc::new(StdMutex::new(OffsetTracker::new(&topic)));
        let (assigned_sender, mut assigned) = watch::channel(false);
        let context = GroupContext {
            tracker: tracker.clone(),
            assigned: assigned_sender,
        };
        let consumer: StreamConsumer<GroupContext> = base_config(&self.shared.config)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                self.shared.config.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set(
                "max.poll.interval.ms",
                self.shared.config.max_poll_interval.as_millis().to_string(),
            )
            .create_with_context(context)
            .map_err(|error| self.shared.map_error(&topic, "create consumer", error))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|error| self.shared.map_error(&topic, "subscribe", error))?;

        let policy = RetryPolicy::from(subscription);
        let (mut stream, sink) = DeliveryStream::channel(SYSTEM, policy, subscription.prefetch);
        let (redeliver, redeliveries) = mpsc::unbounded_channel();
        let worker = ConsumerWorker {
            shared: self.shared.clone(),
            topic: topic.clone(),
            group,
            dead_letter_topic,
            tracker,
            sink,
            redeliver,
        };
        stream.attach_worker(tokio::spawn(worker.run(consumer, redeliveries)));

        // The worker's polling drives the group join; wait for our share so a
        // caller that publishes next is not racing the first rebalance.
        let waited = tokio::time::timeout(
            self.shared.config.assignment_timeout,
            assigned.wait_for(|assigned| *assigned),
        )
        .await;
        if waited.is_err() {
            tracing::warn!(
                topic,
                timeout = ?self.shared.config.assignment_timeout,
                "no partition assignment yet; consuming will start once the group settles"
            );
        }
        Ok(stream)
    }

    async fn request(
        &self,
        _message: &OutgoingMessage,
        _added: &Added,
        _trace: Option<&Context>,
        _timeout: Duration,
    ) -> Result<Reply> {
        Err(MessagingError::Unsupported {
            system: SYSTEM,
            operation: "request/reply (Kafka has no reply path; use RabbitMQ or NATS)",
        })
    }

    /// Asks the cluster for its metadata, on a blocking thread, for at most
    /// [`METADATA_CHECK_TIMEOUT`]. One request at a time: a caller that
    /// gives up first (a readiness probe's own timeout) leaves the thread
    /// waiting on the cluster, and while the cluster is down the probes keep
    /// coming; the next check waits for that thread rather than adding one.
    async fn check(&self) -> Result<()> {
        let in_flight = self.shared.checking.clone().lock_owned().await;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _in_flight = in_flight;
            shared
                .producer
                .client()
                .fetch_metadata(None, METADATA_CHECK_TIMEOUT)
                .map(|_| ())
                .map_err(|error| shared.unreachable(error))
        })
        .await
        .map_err(|error| self.shared.unreachable(error))?
    }

    fn dead_letter_destination(&self, subscription: &Subscription) -> String {
        dead_letter_topic(subscription)
    }
}

/// Per-partition bookkeeping of what may be committed.
#[derive(Debug)]
struct PartitionState {
    /// Bumped on every assignment, so settlements of deliveries read before a
    /// rebalance cannot move the new owner's offsets.
    generation: u64,
    /// Offsets handed out and not settled yet.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: i64,
    /// Last position committed (or sent to be committed).
    committed: i64,
}

#[derive(Debug)]
struct OffsetTracker {
    topic: String,
    partitions: HashMap<i32, PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            partitions: HashMap::new(),
            generations: 0,
        }
    }

    fn assign(&mut self, partition: i32) {
        self.generations += 1;
        self.partitions.insert(
            partition,
            PartitionState {
                generation: self.generations,
                outstanding: BTreeSet::new(),
                next: -1,
                committed: -1,
            },
        );
    }

    /// Starts tracking a delivery; returns its partition's generation.
    fn track(&mut self, partition: i32, offset: i64) -> u64 {
        if !self.partitions.contains_key(&partition) {
            self.assign(partition);
        }
        let Some(state) = self.partitions.get_mut(&partition) else {
            return 0;
        };
        state.outstanding.insert(offset);
        state.next = state.next.max(offset + 1);
        state.generation
    }

    fn settle(&mut self, partition: i32, offset: i64, generation: u64) {
        if let Some(state) = self
            .partitions
            .get_mut(&partition)
            .filter(|state| state.generation == generation)
        {
            state.outstanding.remove(&offset);
        }
    }

    fn is_current(&self, partition: i32, generation: u64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|state| state.generation == generation)
    }

    /// Positions that can be committed now, for `only` partitions or all;
    /// records them as committed.
    fn take_committable(&mut self, only: Option<&[i32]>) -> Vec<(i32, i64)> {
        let mut ready = Vec::new();
        for (partition, state) in &mut self.partitions {
            if only.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            let position = state.outstanding.first().copied().unwrap_or(state.next);
            if position > state.committed {
                state.committed = position;
                ready.push((*partition, position));
            }
        }
        ready
    }

    fn commit_list(&self, positions: &[(i32, i64)]) -> Option<TopicPartitionList> {
        if positions.is_empty() {
            return None;
        }
        let mut list = TopicPartitionList::new();
        for (partition, position) in positions {
            if list
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*position))
                .is_err()
            {
                return None;
            }
        }
        Some(list)
    }
}

/// Keeps the tracker in step with the group's rebalances.
struct GroupContext {
    tracker: Arc<StdMutex<OffsetTracker>>,
    assigned: watch::Sender<bool>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let Ok(mut tracker) = self.tracker.lock() else {
            return;
        };
        let revoked: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
        // Hand the next owner an exact position: commit what is done, now.
        let positions = tracker.take_committable(Some(&revoked));
        if let Some(commit) = tracker.commit_list(&positions)
            && let Err(error) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(%error, "committing offsets of revoked partitions failed");
        }
        for partition in revoked {
            tracker.partitions.remove(&partition);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            if let Ok(mut tracker) = self.tracker.lock() {
                for element in list.elements() {
                    tracker.assign(element.partition());
                }
            }
            self.assigned.send_replace(true);
        }
    }
}

/// A message waiting for its retry.
struct Redelivery {
    message: OwnedMessage,
    attempt: u32,
    generation: u64,
}

struct ConsumerWorker {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    dead_letter_topic: Option<String>,
    tracker: Arc<StdMutex<OffsetTracker>>,
    sink: DeliverySink,
    redeliver: mpsc::UnboundedSender<Redelivery>,
}

/// What the worker holds while the stream is full: deliveries read (or due
/// again) that the stream has not taken yet. One whose partition moved
/// meanwhile is skipped by the stream, as one already in it is.
struct Backlog {
    waiters: VecDeque<Delivery>,
    /// When the worker last read from Kafka before the stream filled up.
    reading_stopped: Instant,
    /// The partitions paused while the stream takes nothing.
    paused: Option<TopicPartitionList>,
}

impl Backlog {
    fn new() -> Self {
        Self {
            waiters: VecDeque::new(),
            reading_stopped: Instant::now(),
            paused: None,
        }
    }

    fn push(&mut self, delivery: Delivery) {
        if self.waiters.is_empty() {
            self.reading_stopped = Instant::now();
        }
        self.waiters.push_back(delivery);
    }

    /// Reading on is how the consumer polls: it does while nothing waits, or
    /// once its partitions are paused.
    fn reads(&self) -> bool {
        self.waiters.is_empty() || self.paused.is_some()
    }

    fn stalled(&self) -> bool {
        !self.waiters.is_empty() && self.paused.is_none()
    }
}

impl ConsumerWorker {
    async fn run(
        self,
        consumer: StreamConsumer<GroupContext>,
        mut redeliveries: mpsc::UnboundedReceiver<Redelivery>,
    ) {
        let mut messages = consumer.stream();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pause_after = self.shared.config.max_poll_interval / 2;
        let mut backlog = Backlog::new();
        loop {
            tokio::select! {
                biased;
                _ = self.sink.stop().cancelled() => break,
                _ = commit_tick.tick() => self.commit(&consumer, CommitMode::Async),
                permit = self.sink.reserve(), if !backlog.waiters.is_empty() => {
                    let Some(permit) = permit else { break };
                    if let Some(delivery) = backlog.waiters.pop_front() {
                        permit.send(Ok(delivery));
                    }
                    if backlog.waiters.is_empty() {
                        self.resume(&consumer, &mut backlog);
                    }
                }
                () = tokio::time::sleep_until(backlog.reading_stopped + pause_after),
                    if backlog.stalled() => self.pause(&consumer, &mut backlog),
                Some(redelivery) = redeliveries.recv() => {
                    let partition = redelivery.message.partition();
                    let current = self
                        .tracker
                        .lock()
                        .is_ok_and(|t| t.is_current(partition, redelivery.generation));
                    // Otherwise the partition moved: its new owner reads it again.
                    if current {
                        let delivery = self.to_delivery(redelivery.message, redelivery.attempt, redelivery.generation);
                        if let Some(delivery) = self.sink.admit(delivery).await {
                            backlog.push(delivery);
                        }
                    }
                }
                next = messages.next(), if backlog.reads() => match next {
                    Some(Ok(message)) => {
                        let message = message.detach();
                        let partition = message.partition();
                        let generation = match self.tracker.lock() {
                            Ok(mut tracker) => tracker.track(partition, message.offset()),
                            Err(_) => break,
                        };
                        if backlog.paused.is_some() {
                            // Assigned since the pause, or fetched just before it.
                            self.pause_partition(&consumer, partition, &mut backlog);
                        }
                        backlog.push(self.to_delivery(message, 1, generation));
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, topic = %self.topic, "Kafka consumer error");
                    }
                    None => break,
                },
            }
        }
        drop(messages);
        // Its deliveries go back unsettled before the drain waits for the rest.
        drop(backlog);
        self.sink.wait_settled(DRAIN_TIMEOUT).await;
        self.commit(&consumer, CommitMode::Sync);
        consumer.unsubscribe();
    }

    fn pause(&self, consumer: &StreamConsumer<GroupContext>, backlog: &mut Backlog) {
        let assignment = consumer.assignment().unwrap_or_else(|error| {
            tracing::warn!(%error, topic = %self.topic, "reading the assignment to pause it failed; partitions are paused as they deliver");
            TopicPartitionList::new()
        });
        if let Err(error) = consumer.pause(&assignment) {
            tracing::warn!(%error, topic = %self.topic, "pausing the partitions failed");
        }
        tracing::info!(
            topic = %self.topic,
            partitions = assignment.count(),
            waiting = backlog.waiters.len(),
            "the handler has taken no delivery for half the poll interval; partitions paused, the group keeps them"
        );
        backlog.paused = Some(assignment);
    }

    fn pause_partition(
        &self,
        consumer: &StreamConsumer<GroupContext>,
        partition: i32,
        backlog: &mut Backlog,
    ) {
        let Some(paused) = &mut backlog.paused else {
            return;
        };
        // Even if it is on the list: an assignment since the pause may
        // have resumed it.
        let mut one = TopicPartitionList::new();
        one.add_partition(&self.topic, partition);
        if let Err(error) = consumer.pause(&one) {
            tracing::warn!(%error, topic = %self.topic, partition, "pausing a partition failed");
        }
        if paused.find_partition(&self.topic, partition).is_none() {
            paused.add_partition(&self.topic, partition);
        }
    }

    fn resume(&self, consumer: &StreamConsumer<GroupContext>, backlog: &mut Backlog) {
        let Some(paused) = backlog.paused.take() else {
            return;
        };
        // A partition revoked meanwhile is not ours to resume; librdkafka
        // says so per partition, and the others resume regardless.
        if let Err(error) = consumer.resume(&paused) {
            tracing::warn!(%error, topic = %self.topic, "resuming the partitions failed");
        }
        tracing::info!(topic = %self.topic, "the handler takes deliveries again; partitions resumed");
    }

    fn commit(&self, consumer: &StreamConsumer<GroupContext>, mode: CommitMode) {
        let list = match self.tracker.lock() {
            Ok(mut tracker) => {
                let positions = tracker.take_committable(None);
                tracker.commit_list(&positions)
            }
            Err(_) => None,
        };
        if let Some(list) = list
            && let Err(error) = consumer.commit(&list, mode)
        {
            tracing::warn!(%error, topic = %self.topic, "committing offsets failed; they will be committed with the next ones");
        }
    }

    fn to_delivery(&self, message: OwnedMessage, attempt: u32, generation: u64) -> Delivery {
        let (headers, parent) = match message.headers() {
            Some(kafka_headers) => {
                let headers: Headers = kafka_headers
                    .iter()
                    .filter_map(|header| {
                        let value = std::str::from_utf8(header.value?).ok()?;
                        Some((header.key.to_owned(), value.to_owned()))
                    })
                    .collect();
                let parent =
                    propagation::extract(&KafkaHeaderExtractor(kafka_headers.as_borrowed()));
                (headers, parent)
            }
            None => (Headers::new(), Context::new()),
        };
        let key = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned());
        let received = ReceivedMessage {
            destination: message.topic().to_owned(),
            key,
            headers,
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            attempt,
            redelivered: attempt > 1,
        };
        let settler = KafkaSettler {
            shared: self.shared.clone(),
            tracker: self.tracker.clone(),
            redeliver: self.redeliver.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            generation,
            attempt,
            message,
        };
        self.sink.delivery(DeliveryParts {
            message: received,
            group: self.group.clone(),
            parent,
            settler: Box::new(settler),
        })
    }
}

struct KafkaSettler {
    shared: Arc<Shared>,
    tracker: Arc<StdMutex<OffsetTracker>>,
    redeliver: mpsc::UnboundedSender<Redelivery>,
    dead_letter_topic: Option<String>,
    generation: u64,
    attempt: u32,
    message: OwnedMessage,
}

impl KafkaSettler {
    fn settle(&self) -> Result<()> {
        self.tracker
            .lock()
            .map(|mut tracker| {
                tracker.settle(
                    self.message.partition(),
                    self.message.offset(),
                    self.generation,
                );
            })
            .map_err(|_| {
                MessagingError::broker(
                    SYSTEM,
                    self.message.topic(),
                    "ack",
                    "offset tracker poisoned",
                )
            })
    }
}

#[async_trait]
impl Settler for KafkaSettler {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.settle()
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        let redelivery = Redelivery {
            message: self.message,
            attempt: self.attempt + 1,
            generation: self.generation,
        };
        let redeliver = self.redeliver;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Fails only when the consumer stopped; the offset was never
            // committed, so the next owner reads the message again.
            let _ = redeliver.send(redelivery);
        });
        Ok(())
    }

    async fn publish_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        if let Some(topic) = &self.dead_letter_topic {
            self.shared
                .produce(
                    topic,
                    letter.key.as_deref(),
                    record_headers(letter.headers.iter(), None),
                    &letter.payload,
                )
                .await?;
        }
        Ok(())
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        self.settle()
    }

    fn taken_back(&self) -> bool {
        self.tracker
            .lock()
            .is_ok_and(|tracker| !tracker.is_current(self.message.partition(), self.generation))
    }

    async fn release(self: Box<Self>) -> Result<()> {
        // Left uncommitted: whoever owns the partition next reads it again.
        Ok(())
    }

    async fn reply(&self, _reply: OutgoingMessage, _trace: Option<Context>) -> Result<()> {
        Err(MessagingError::Unsupported {
            system: SYSTEM,
            operation: "request/reply",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_oldest_unsettled_offset() {
        let mut tracker = OffsetTracker::new("t");
        tracker.assign(0);
        let generation = tracker.track(0, 10);
        for offset in 11..15 {
            tracker.track(0, offset);
        }
        tracker.settle(0, 11, generation);
        tracker.settle(0, 12, generation);
        // 10 is still being processed: nothing past it may be committed.
        assert_eq!(tracker.take_committable(None), vec![(0, 10)]);
        tracker.settle(0, 10, generation);
        assert_eq!(tracker.take_committable(None), vec![(0, 13)]);
        tracker.settle(0, 14, generation);
        tracker.settle(0, 13, generation);
        assert_eq!(tracker.take_committable(None), vec![(0, 15)]);
        assert_eq!(tracker.take_committable(None), vec![]);
    }

    #[test]
    fn settlements_from_an_old_assignment_are_ignored() {
        let mut tracker = OffsetTracker::new("t");
        tracker.assign(0);
        let old = tracker.track(0, 5);
        tracker.partitions.remove(&0);
        tracker.assign(0);
        let new = tracker.track(0, 5);
        assert_ne!(old, new);
        tracker.settle(0, 5, old);
        assert!(!tracker.is_current(0, old));
        assert_eq!(tracker.take_committable(None), vec![(0, 5)]);
        tracker.settle(0, 5, new);
        assert_eq!(tracker.take_committable(None), vec![(0, 6)]);
    }

    /// Checks of a cluster that does not answer fail as unreachable, one
    /// metadata request at a time: three at once take three timeouts one
    /// after the other (side by side, they would take one), and so hold one
    /// blocking thread, not three.
    #[tokio::test]
    async fn checks_of_an_unreachable_cluster_fail_one_at_a_time() {
        let kafka = Kafka::new(KafkaConfig::new("127.0.0.1:1", "check-test")).unwrap();
        let started = std::time::Instant::now();
        let outcomes = futures::future::join_all((0..3).map(|_| kafka.check())).await;
        for outcome in outcomes {
            assert!(
                matches!(outcome, Err(MessagingError::Unreachable { .. })),
                "{outcome:?}"
            );
        }
        assert!(
            started.elapsed() >= METADATA_CHECK_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
    }
}
