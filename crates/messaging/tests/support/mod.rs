//! Per-broker harnesses for the integration tests: a broker handle on the
//! real broker with its own connection names, unique destination names, and
//! subscription timings short enough for CI.
#![allow(dead_code)]

use std::ops::Range;
use std::time::{Duration, Instant};

use futures::StreamExt;
use messaging::{
    Broker, Delivery, DeliveryStream, DestinationSpec, Kafka, KafkaConfig, MessagingSystem, Nats,
    NatsConfig, OutgoingMessage, RabbitMq, RabbitMqConfig, Subscription,
};

pub const SOURCE: &str = "/ferrishop/messaging-tests";

/// How long a test waits for one expected delivery.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub broker: Broker,
    /// Identifies this harness's connections on the broker.
    pub connection_name: String,
}

impl Harness {
    pub fn system(&self) -> MessagingSystem {
        self.broker.system()
    }

    /// A destination no other test uses, created with `partitions`.
    pub async fn destination(&self, prefix: &str, partitions: u32) -> String {
        let name = testkit::brokers::unique_name(prefix);
        self.create(&DestinationSpec::new(&name).with_partitions(partitions))
            .await;
        name
    }

    /// A destination for requests or notifications, no other test uses.
    pub async fn transient_destination(&self, prefix: &str) -> String {
        let name = testkit::brokers::unique_name(prefix);
        self.create(&DestinationSpec::new(&name).transient()).await;
        name
    }

    async fn create(&self, spec: &DestinationSpec) {
        self.broker
            .ensure_destination(spec)
            .await
            .unwrap_or_else(|error| panic!("creating {}: {error}", spec.name));
    }

    /// A subscription with CI-friendly timings, in a group of this
    /// harness's own: a Kafka group spans topics, so two runs of a test
    /// sharing a group name would rebalance each other.
    pub fn subscription(&self, destination: &str, group: &str) -> Subscription {
        Subscription::new(destination, self.group(group))
            .with_retry_delay(Duration::from_millis(200))
            .with_ack_wait(Duration::from_secs(2))
            .with_max_attempts(3)
    }

    /// The name `group` has in this harness's subscriptions.
    pub fn group(&self, group: &str) -> String {
        format!("{group}-{}", self.connection_name)
    }

    /// Publishes `message`, failing the test if the broker refuses it;
    /// returns its message id.
    pub async fn publish(&self, message: OutgoingMessage) -> String {
        self.broker
            .publish(message)
            .await
            .unwrap_or_else(|error| panic!("publish: {error}"))
            .message_id
    }

    /// Publishes `m<n>` to `destination` for each `n`, in order; returns
    /// their message ids.
    pub async fn publish_numbered(&self, destination: &str, numbers: Range<usize>) -> Vec<String> {
        let mut ids = Vec::new();
        for n in numbers {
            ids.push(
                self.publish(OutgoingMessage::new(destination, format!("m{n}")))
                    .await,
            );
        }
        ids
    }

    pub async fn subscribe(&self, subscription: &Subscription) -> DeliveryStream {
        self.broker
            .subscribe(subscription)
            .await
            .unwrap_or_else(|error| panic!("subscribing: {error}"))
    }

    /// Fails if a new consumer of `subscription`'s group gets anything
    /// within a second: what was handled stays handled.
    pub async fn assert_handled_for_good(&self, subscription: &Subscription) {
        let mut after = self.subscribe(subscription).await;
        assert!(
            maybe_next(&mut after, Duration::from_secs(1))
                .await
                .is_none(),
            "the handled message came back"
        );
        after.drain().await;
    }
}

/// Checks `broker` with a 500 ms deadline, again and again, until a check
/// passes (panics after 10 s), then publishes through it. Meant for a broker
/// behind a proxy that delays each connection by more than the deadline:
/// giving up must not cancel the connection under way, or no check passes.
pub async fn gets_connected_despite_impatient_checks(broker: &Broker) {
    let started = Instant::now();
    let mut checks = 0;
    loop {
        checks += 1;
        match tokio::time::timeout(Duration::from_millis(500), broker.check()).await {
            Ok(Ok(())) => break,
            Ok(Err(error)) => panic!("check {checks} failed: {error}"),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "not connected after {checks} checks of 500 ms"
            ),
        }
    }
    assert!(
        checks >= 3,
        "connected after {checks} checks: the proxy did not delay"
    );
    let destination = testkit::brokers::unique_name("slow-broker");
    broker
        .ensure_destination(&DestinationSpec::new(&destination))
        .await
        .unwrap_or_else(|e| panic!("creating {destination}: {e}"));
    broker
        .publish(OutgoingMessage::new(&destination, "through the slow proxy"))
        .await
        .unwrap_or_else(|e| panic!("publish once connected: {e}"));
}

pub async fn rabbitmq() -> Harness {
    let url = testkit::brokers::rabbitmq().await;
    let connection_name = testkit::brokers::unique_name("messaging-test");
    let broker = RabbitMq::new(RabbitMqConfig::new(url, &connection_name)).into_broker(SOURCE);
    Harness {
        broker,
        connection_name,
    }
}

pub async fn kafka() -> Harness {
    kafka_with(|_| {}).await
}

/// A Kafka harness whose client settings `adjust` changes.
pub async fn kafka_with(adjust: impl FnOnce(&mut KafkaConfig)) -> Harness {
    let brokers = testkit::brokers::kafka().await;
    let connection_name = testkit::brokers::unique_name("messaging-test");
    let mut config = KafkaConfig::new(brokers, &connection_name);
    config.session_timeout = Duration::from_secs(6);
    adjust(&mut config);
    let broker = Kafka::new(config)
        .unwrap_or_else(|error| panic!("Kafka client: {error}"))
        .into_broker(SOURCE);
    Harness {
        broker,
        connection_name,
    }
}

pub async fn nats() -> Harness {
    let url = testkit::brokers::nats().await;
    let connection_name = testkit::brokers::unique_name("messaging-test");
    let broker = Nats::new(NatsConfig::new(url, &connection_name)).into_broker(SOURCE);
    Harness {
        broker,
        connection_name,
    }
}

/// The next delivery, failing the test after [`RECEIVE_TIMEOUT`].
pub async fn next(stream: &mut DeliveryStream) -> Delivery {
    match tokio::time::timeout(RECEIVE_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!("delivery failed: {error}"),
        Ok(None) => panic!("the delivery stream ended"),
        Err(_) => panic!("no delivery within {RECEIVE_TIMEOUT:?}"),
    }
}

/// The next delivery within `wait`, if any.
pub async fn maybe_next(stream: &mut DeliveryStream, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(Ok(delivery))) => Some(delivery),
        Ok(Some(Err(error))) => panic!("delivery failed: {error}"),
        Ok(None) | Err(_) => None,
    }
}
