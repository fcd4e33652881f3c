//! Kafka's own failure modes, beyond the contract every broker meets.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use messaging::{Nack, OutgoingMessage};
use support::{maybe_next, next};
use tokio_util::sync::CancellationToken;

/// A handler that takes no delivery for longer than `max.poll.interval.ms`
/// (as while it waits out a database outage) does not cost the consumer its
/// place in the group: afterwards every message, those published during the
/// wait too, arrives once, in order, on its first attempt. A consumer that stopped polling would have left the
/// group, and its rejoin would hand the unsettled messages out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handler_keeps_the_partitions() {
    const POLL_INTERVAL: Duration = Duration::from_secs(6);
    let harness = support::kafka_with(|config| {
        config.session_timeout = POLL_INTERVAL;
        config.max_poll_interval = POLL_INTERVAL;
    })
    .await;
    let destination = harness.destination("stalled", 1).await;
    let subscription = harness
        .subscription(&destination, "stalled")
        .with_prefetch(1);
    let mut stream = harness.subscribe(&subscription).await;
    let mut sent = harness.publish_numbered(&destination, 0..5).await;

    let first = next(&mut stream).await;
    // The stream stays full for two and a half poll intervals; what is
    // published meanwhile waits on the paused partition.
    tokio::time::sleep(POLL_INTERVAL).await;
    sent.extend(harness.publish_numbered(&destination, 5..8).await);
    tokio::time::sleep(POLL_INTERVAL * 3 / 2).await;
    let mut received = vec![(
        first.message_id().unwrap_or_default().to_owned(),
        first.attempt,
    )];
    first.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    // Long enough for a consumer that had left the group to rejoin and be
    // handed its unsettled messages again.
    while let Some(delivery) = maybe_next(&mut stream, POLL_INTERVAL).await {
        received.push((
            delivery.message_id().unwrap_or_default().to_owned(),
            delivery.attempt,
        ));
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    stream.drain().await;

    let expected: Vec<(String, u32)> = sent.into_iter().map(|id| (id, 1)).collect();
    assert_eq!(
        received, expected,
        "each message once, in order, first attempt"
    );
}

/// A message held through an outage whose partition is reassigned (another
/// consumer joined the group) is let go: the partition's owner reads it
/// again from the committed offset, and that copy is the only one handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_whose_partition_moved_is_let_go() {
    let harness = support::kafka().await;
    let destination = harness.destination("moved", 1).await;
    let subscription = harness.subscription(&destination, "patient");
    let first = harness.subscribe(&subscription).await;
    harness
        .publish(OutgoingMessage::new(&destination, "held"))
        .await;

    let tries = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let database_up = Arc::new(AtomicBool::new(false));
    let handler = || {
        let (tries, handled, database_up) = (tries.clone(), handled.clone(), database_up.clone());
        move |_message| {
            tries.fetch_add(1, Ordering::SeqCst);
            let outcome = if database_up.load(Ordering::SeqCst) {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            } else {
                Err(Nack::unavailable("database unreachable"))
            };
            async move { outcome }
        }
    };
    let cancel = CancellationToken::new();
    let first = tokio::spawn(first.consume(1, cancel.clone(), handler()));
    let started = Instant::now();
    while tries.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < support::RECEIVE_TIMEOUT, "never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Returns once the group has rebalanced.
    let second = harness.subscribe(&subscription).await;
    let second = tokio::spawn(second.consume(1, cancel.clone(), handler()));
    // Long enough for the held copy to be tried, and let go, after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    database_up.store(true, Ordering::SeqCst);
    let started = Instant::now();
    while handled.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < support::RECEIVE_TIMEOUT,
            "never handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A copy still held would be handled too within its next wait (≤ 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    for consumer in [first, second] {
        consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));
    }
    assert_eq!(handled.load(Ordering::SeqCst), 1, "handled more than once");
}

/// Deliveries still waiting in a consumer's stream when its partition is
/// reassigned are skipped: the partition's owner reads them again from the
/// committed offset, and each message is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_when_the_partition_moved_are_skipped() {
    let harness = support::kafka().await;
    let destination = harness.destination("waiting", 1).await;
    let subscription = harness
        .subscription(&destination, "movers")
        .with_prefetch(3);
    let mut first = harness.subscribe(&subscription).await;
    let mut sent = harness.publish_numbered(&destination, 0..3).await;
    // Read into the first stream, not taken from it.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Returns once the group has rebalanced.
    let mut second = harness.subscribe(&subscription).await;
    let mut received = Vec::new();
    // Until nothing more comes for a while, from either consumer.
    loop {
        let delivery = tokio::select! {
            Some(delivery) = maybe_next(&mut first, support::RECEIVE_TIMEOUT) => delivery,
            Some(delivery) = maybe_next(&mut second, support::RECEIVE_TIMEOUT) => delivery,
            () = tokio::time::sleep(Duration::from_secs(4)) => break,
        };
        received.push(delivery.message_id().unwrap_or_default().to_owned());
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    first.drain().await;
    second.drain().await;

    received.sort();
    sent.sort();
    assert_eq!(received, sent, "each message once");
}
