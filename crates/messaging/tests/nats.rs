//! NATS-only behaviour: JetStream de-duplication by `Nats-Msg-Id`, transient
//! notifications over core queue groups, fault flags driven by a KV bucket,
//! a server slow to answer that gets connected even when every caller
//! gives up sooner, and a subscription that pulls again after its
//! connection was lost.

mod support;

use std::time::{Duration, Instant};

use messaging::{CloudEvent, DestinationSpec, Nats, NatsConfig, OutgoingMessage, watch_faults};
use platform::faults;
use support::{Harness, maybe_next, next};
use testkit::net::delaying_proxy;
use tokio_util::sync::CancellationToken;

/// A publisher retry with the same `ce_id` is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_message_id_is_stored_once() {
    let harness = support::nats().await;
    let destination = harness.destination("dedup", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&destination, "once"))
        .await;
    let event = CloudEvent::new("ferrishop.test.retried", "/ferrishop/tests");
    for _ in 0..3 {
        harness
            .broker
            .publish(OutgoingMessage::new(&destination, "same").with_event(&event))
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.message_id(), Some(event.id.as_str()));
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    assert!(
        maybe_next(&mut stream, Duration::from_secs(1))
            .await
            .is_none()
    );
    stream.drain().await;
}

/// Transient notifications: each queue group gets every message once,
/// shared among its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_fan_out_to_groups_and_share_within_one() {
    let harness = support::nats().await;
    let subject = format!("{}.status", testkit::brokers::unique_name("orders"));
    let subscription = |group: &str| harness.subscription(&subject, group).transient();
    let mut gateway_a = harness.subscribe(&subscription("gateway")).await;
    let mut gateway_b = harness.subscribe(&subscription("gateway")).await;
    let mut audit = harness.subscribe(&subscription("audit")).await;

    for n in 0..20 {
        harness
            .broker
            .publish(OutgoingMessage::new(&subject, format!("{n}")).transient())
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let mut audited = 0;
    while maybe_next(&mut audit, Duration::from_millis(500))
        .await
        .is_some()
    {
        audited += 1;
    }
    let mut shared = 0;
    for stream in [&mut gateway_a, &mut gateway_b] {
        while maybe_next(stream, Duration::from_millis(300))
            .await
            .is_some()
        {
            shared += 1;
        }
    }
    assert_eq!(audited, 20);
    assert_eq!(shared, 20);
}

/// A KV entry arms a fault point within moments; deleting it disarms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_flags_follow_the_kv_bucket() {
    let url = testkit::brokers::nats().await;
    let nats = Nats::new(NatsConfig::new(
        url,
        testkit::brokers::unique_name("faults"),
    ));
    // A bucket of its own: the shared `ferrishop-faults` may be in use.
    let bucket = nats
        .key_value(&testkit::brokers::unique_name("faults"))
        .await
        .unwrap_or_else(|e| panic!("bucket: {e}"));
    let armed_before = format!("tests.{}", testkit::brokers::unique_name("early"));
    bucket
        .put(&armed_before, "error(1)")
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));

    let cancel = CancellationToken::new();
    let watcher = tokio::spawn({
        let bucket = bucket.clone();
        let cancel = cancel.clone();
        async move { watch_faults(&bucket, cancel).await }
    });

    // A point armed before the watcher started is picked up too.
    wait_until(&armed_before, true).await;

    let point = format!("tests.{}", testkit::brokers::unique_name("point"));
    assert!(faults::inject(&point).await.is_ok());
    bucket
        .put(&point, "error(1.0)")
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    wait_until(&point, true).await;
    bucket
        .delete(&point)
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    wait_until(&point, false).await;

    cancel.cancel();
    watcher.await.unwrap_or_else(|e| panic!("watcher: {e}"));
}

async fn wait_until(point: &str, failing: bool) {
    let started = Instant::now();
    while faults::inject(point).await.is_err() != failing {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{point} did not become {}",
            if failing { "armed" } else { "disarmed" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that answers later than each caller waits (a readiness check
/// with a 500 ms deadline, asked again and again) still gets connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_each_check_still_gets_connected() {
    let url = testkit::brokers::nats().await;
    let (_slow, slow_url) = delaying_proxy(&url, Duration::from_millis(1500)).await;
    let name = testkit::brokers::unique_name("messaging-test");
    let broker = Nats::new(NatsConfig::new(slow_url, &name)).into_broker(support::SOURCE);
    support::gets_connected_despite_impatient_checks(&broker).await;
}

/// A JetStream subscription whose connection drops pulls again once the
/// client has reconnected: a message published meanwhile arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_pulls_again_after_its_connection_was_lost() {
    let url = testkit::brokers::nats().await;
    let (link, through) = delaying_proxy(&url, Duration::ZERO).await;
    let connection_name = testkit::brokers::unique_name("messaging-test");
    let consumer = Harness {
        broker: Nats::new(NatsConfig::new(through, &connection_name)).into_broker(support::SOURCE),
        connection_name,
    };
    let publisher = support::nats().await;
    let destination = publisher.destination("reconnecting", 1).await;
    let mut stream = consumer
        .subscribe(&consumer.subscription(&destination, "survivors"))
        .await;
    for (payload, cut) in [("before", false), ("after", true)] {
        if cut {
            link.cut();
            tokio::time::sleep(Duration::from_secs(1)).await;
            link.restore();
        }
        publisher
            .publish(OutgoingMessage::new(&destination, payload))
            .await;
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.payload.as_ref(), payload.as_bytes());
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    stream.drain().await;
}

/// A destination announcing states keeps the latest message of each subject,
/// for as long as it says: the stream is created with those limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_per_subject_destination_keeps_one_message_per_subject() {
    let harness = support::nats().await;
    let prefix = testkit::brokers::unique_name("statuses");
    harness
        .broker
        .ensure_destination(
            &DestinationSpec::new(&prefix)
                .latest_per_subject()
                .with_max_age(Duration::from_secs(3600)),
        )
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    for (order, status) in [("a", "PENDING"), ("a", "CONFIRMED"), ("b", "PENDING")] {
        harness
            .broker
            .publish(OutgoingMessage::new(
                format!("{prefix}.{order}.status"),
                status,
            ))
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }

    let client = async_nats::connect(testkit::brokers::nats().await)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let jetstream = async_nats::jetstream::new(client);
    let first = format!("{prefix}.a.status");
    let name = jetstream
        .stream_by_subject(first.as_str())
        .await
        .unwrap_or_else(|e| panic!("stream: {e}"));
    let mut stream = jetstream
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream: {e}"));
    let info = stream.info().await.unwrap_or_else(|e| panic!("info: {e}"));
    assert_eq!(info.config.max_messages_per_subject, 1);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.state.messages, 2);
    let last = stream
        .get_last_raw_message_by_subject(&first)
        .await
        .unwrap_or_else(|e| panic!("last: {e}"));
    assert_eq!(&last.payload[..], b"CONFIRMED");
}
