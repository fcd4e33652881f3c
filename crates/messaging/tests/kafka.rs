//! Kafka's own failure modes, beyond the contract every broker meets.

mod support;

use std::time::Duration;

use messaging::OutgoingMessage;
use support::{maybe_next, next};

/// A handler that takes no delivery for longer than `max.poll.interval.ms`
/// (as while it waits out a database outage) does not cost the consumer its
/// place in the group: afterwards every message arrives once, in order, on
/// its first attempt. A consumer that stopped polling would have left the
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
    let mut sent = Vec::new();
    for n in 0..5 {
        let receipt = harness
            .broker
            .publish(OutgoingMessage::new(&destination, format!("m{n}")))
            .await
            .unwrap_or_else(|error| panic!("publish: {error}"));
        sent.push(receipt.message_id);
    }

    let first = next(&mut stream).await;
    // The stream stays full for two and a half poll intervals.
    tokio::time::sleep(POLL_INTERVAL * 5 / 2).await;
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
