//! RabbitMQ-only behaviour: publisher confirms surface routing failures (a
//! missing exchange; a command no queue would receive), a
//! connection closed by the server is replaced without a restart (and the
//! messages held or waiting on it are let go), and a broker slow to answer gets connected
//! even when every caller gives up sooner.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use messaging::{MessagingError, Nack, OutgoingMessage, RabbitMq, RabbitMqConfig};
use support::{maybe_next, next};
use testkit::net::delaying_proxy;
use tokio_util::sync::CancellationToken;

/// Publishing to an exchange that does not exist is an error, not silence,
/// and does not break publishing to exchanges that do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_exchange_fails() {
    let harness = support::rabbitmq().await;
    let missing = testkit::brokers::unique_name("never-declared");
    let result = harness
        .broker
        .publish(OutgoingMessage::new(&missing, "lost?"))
        .await;
    match result {
        Err(error @ MessagingError::NotFound { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("RabbitMQ") && text.contains(&missing),
                "{text}"
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let existing = harness.destination("exists", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&existing, "after-failure"))
        .await;
    harness
        .broker
        .publish(OutgoingMessage::new(&existing, "still works"))
        .await
        .unwrap_or_else(|e| panic!("publish after a failed one: {e}"));
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload.as_ref(), b"still works");
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;
}

/// A command no queue would receive is refused, not confirmed and dropped;
/// an announcement to the same exchange is fine (no one listens); once a
/// queue is bound, the command goes through and arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_no_queue_would_receive_is_refused() {
    let harness = support::rabbitmq().await;
    let exchange = harness.destination("commands", 1).await;
    let command = || OutgoingMessage::new(&exchange, "charge").must_be_routed();

    match harness.broker.publish(command()).await {
        Err(error @ MessagingError::NotConfirmed { .. }) => {
            assert!(error.to_string().contains("unroutable"), "{error}");
        }
        other => panic!("expected NotConfirmed, got {other:?}"),
    }
    harness
        .broker
        .publish(OutgoingMessage::new(&exchange, "announced"))
        .await
        .unwrap_or_else(|e| panic!("an announcement nobody hears: {e}"));

    let mut stream = harness
        .subscribe(&harness.subscription(&exchange, "payments"))
        .await;
    harness
        .broker
        .publish(command())
        .await
        .unwrap_or_else(|e| panic!("a command with a queue bound: {e}"));
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload.as_ref(), b"charge");
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;
}

/// A message whose dead letter cannot be published (its dead-letter queue
/// was deleted) is not lost: it comes back, and is dead-lettered once the
/// queue is there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_dead_letter_failed_comes_back() {
    let harness = support::rabbitmq().await;
    let destination = harness.destination("undeliverable", 1).await;
    let subscription = harness
        .subscription(&destination, "rejecter")
        .with_max_attempts(1);
    let mut stream = harness.subscribe(&subscription).await;
    let dead_letter_queue = queues_of(&destination)
        .into_iter()
        .find(|queue| queue.ends_with(".dlq"))
        .unwrap_or_else(|| panic!("no dead-letter queue of {destination}"));
    rabbitmqctl(&["delete_queue", &dead_letter_queue]);
    let sent = harness
        .publish(OutgoingMessage::new(&destination, "refused"))
        .await;

    let first = next(&mut stream).await;
    assert!(
        first.nack(Nack::reject("refused")).await.is_err(),
        "no dead-letter queue"
    );
    // It comes back, its attempts spent, and is dead-lettered as it
    // arrives, again and again until the dead-letter queue is there.
    let mut dead = harness
        .broker
        .dead_letters(&subscription)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e}"));
    let letter = next(&mut dead).await;
    assert_eq!(letter.message_id(), Some(sent.as_str()));
    letter.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    assert!(
        maybe_next(&mut stream, Duration::from_millis(800))
            .await
            .is_none(),
        "handed to the handler only once"
    );
    stream.drain().await;
    dead.drain().await;
}

/// A subscription whose retry delay changed still consumes: its retry
/// queue keeps the delay it was declared with (queue arguments cannot
/// change), instead of the consumer failing at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_retry_delay_does_not_stop_the_consumer() {
    let harness = support::rabbitmq().await;
    let destination = harness.destination("redelayed", 1).await;
    let before = harness.subscription(&destination, "patient");
    harness.subscribe(&before).await.drain().await;

    let after = before.clone().with_retry_delay(Duration::from_millis(700));
    let mut stream = harness.subscribe(&after).await;
    let sent = harness
        .publish(OutgoingMessage::new(&destination, "still consumed"))
        .await;
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.message_id(), Some(sent.as_str()));
    delivery
        .nack(Nack::requeue("once more"))
        .await
        .unwrap_or_else(|e| panic!("retry: {e}"));
    let retried = next(&mut stream).await;
    assert_eq!(retried.message_id(), Some(sent.as_str()));
    assert_eq!(retried.attempt, 2);
    retried.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;
}

/// `rabbitmqctl close_connection` on this client's connections: publishing
/// works again within 10 s and the subscription resumes, same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_closes_the_connection() {
    let harness = support::rabbitmq().await;
    let destination = harness.destination("reconnect", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&destination, "survivors"))
        .await;
    harness
        .broker
        .publish(OutgoingMessage::new(&destination, "before"))
        .await
        .unwrap_or_else(|e| panic!("publish before: {e}"));
    next(&mut stream)
        .await
        .ack()
        .await
        .unwrap_or_else(|e| panic!("ack: {e}"));

    let closed = close_connections_named(&harness.connection_name);
    assert_eq!(closed, 2, "expected a publish and a consume connection");

    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < Duration::from_secs(10) {
        match harness
            .broker
            .publish(OutgoingMessage::new(&destination, "after"))
            .await
        {
            Ok(_) => {
                last_error = None;
                break;
            }
            Err(error) => {
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        last_error.is_none(),
        "still failing after 10s: {last_error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload.as_ref(), b"after");
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;
}

/// A message held through an outage whose channel then closes (as when the
/// broker's consumer timeout expires) is let go: RabbitMQ requeued it, so
/// the held copy is tried no more, and the copy handed out again on the new
/// channel is the one handled, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_whose_channel_closed_is_let_go() {
    let harness = support::rabbitmq().await;
    let destination = harness.destination("taken-back", 1).await;
    let subscription = harness.subscription(&destination, "patient");
    let stream = harness.subscribe(&subscription).await;
    harness
        .publish(OutgoingMessage::new(&destination, "held"))
        .await;

    // Each try: whether it was of the copy handed out again.
    let tries: Arc<Mutex<Vec<bool>>> = Arc::default();
    let database_up = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let consumer = {
        let (tries, database_up) = (tries.clone(), database_up.clone());
        tokio::spawn(stream.consume(1, cancel.clone(), move |message| {
            if let Ok(mut tries) = tries.lock() {
                tries.push(message.redelivered);
            }
            let up = database_up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err(Nack::unavailable("database unreachable"))
                }
            }
        }))
    };
    let tried = |copy_again: bool, at_least: usize| {
        let tries = tries.clone();
        async move {
            let started = Instant::now();
            loop {
                let count = tries
                    .lock()
                    .map(|t| t.iter().filter(|again| **again == copy_again).count())
                    .unwrap_or_default();
                if count >= at_least {
                    return count;
                }
                assert!(
                    started.elapsed() < support::RECEIVE_TIMEOUT,
                    "fewer than {at_least} tries (redelivered: {copy_again})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tried(false, 2).await;

    assert_eq!(close_connections_named(&harness.connection_name), 2);
    // With one handler at a time, the copy handed out again is tried only
    // once the held one has been let go.
    tried(true, 1).await;
    let held_tries = tried(false, 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tried(false, 0).await,
        held_tries,
        "the held copy was tried again"
    );

    database_up.store(true, Ordering::SeqCst);
    let handled = tried(true, 0).await + 1;
    tried(true, handled).await;
    cancel.cancel();
    consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));

    harness.assert_handled_for_good(&subscription).await;
}

/// Deliveries still waiting in the stream when their channel closes are
/// skipped: RabbitMQ requeued them, and each message is handled once, from
/// the copy the new channel gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_when_the_channel_closed_are_skipped() {
    let harness = support::rabbitmq().await;
    let destination = harness.destination("requeued", 1).await;
    let mut stream = harness
        .subscribe(
            &harness
                .subscription(&destination, "survivors")
                .with_prefetch(3),
        )
        .await;
    let sent = harness.publish_numbered(&destination, 0..3).await;
    // Fetched into the stream (delivered, unacknowledged), not taken from it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while unacknowledged_in_queues_of(&destination) < 3 {
        assert!(
            Instant::now() < deadline,
            "the three never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(close_connections_named(&harness.connection_name), 2);

    let mut received = Vec::new();
    while let Some(delivery) = maybe_next(&mut stream, Duration::from_secs(5)).await {
        assert!(delivery.redelivered, "a copy from the closed channel");
        received.push(delivery.message_id().unwrap_or_default().to_owned());
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    stream.drain().await;
    assert_eq!(received, sent, "each message once, in order");
}

/// A broker that answers the handshake later than each caller waits (a
/// readiness check with a 500 ms deadline, asked again and again) still gets
/// connected: giving up does not cancel the connection under way, so the next
/// check finds it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slower_than_each_check_still_gets_connected() {
    let url = testkit::brokers::rabbitmq().await;
    let (_slow, slow_url) = delaying_proxy(&url, Duration::from_millis(1500)).await;
    let connection_name = testkit::brokers::unique_name("messaging-test");
    let broker =
        RabbitMq::new(RabbitMqConfig::new(slow_url, &connection_name)).into_broker(support::SOURCE);

    support::gets_connected_despite_impatient_checks(&broker).await;
}

/// What `rabbitmqctl` prints for `args`, failing the test if it fails.
fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl: {e}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The queues whose names contain `destination` (unique to the test).
fn queues_of(destination: &str) -> Vec<String> {
    rabbitmqctl(&["list_queues", "name", "--no-table-headers", "-q"])
        .lines()
        .map(str::trim)
        .filter(|name| name.contains(destination))
        .map(str::to_owned)
        .collect()
}

/// Messages delivered and not yet acknowledged, summed over the queues
/// whose names contain `destination`.
fn unacknowledged_in_queues_of(destination: &str) -> u64 {
    rabbitmqctl(&[
        "list_queues",
        "name",
        "messages_unacknowledged",
        "--no-table-headers",
        "-q",
    ])
    .lines()
    .filter(|line| line.contains(destination))
    .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
    .sum()
}

/// Closes every connection whose `connection_name` starts with `name`;
/// returns how many. Only this test's connections: others share the broker.
fn close_connections_named(name: &str) -> usize {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl: {e}"));
    let listing = String::from_utf8_lossy(&output.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by the reconnect test"])
            .output()
            .unwrap_or_else(|e| panic!("rabbitmqctl close_connection: {e}"));
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    pids.len()
}
