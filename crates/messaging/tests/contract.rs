//! The messaging contract, run unchanged against RabbitMQ, Kafka and NATS.
//!
//! Each scenario is one generic async function taking a broker harness; the
//! `contract_suite!` macro instantiates every scenario once per broker, so a
//! behaviour either holds on all three or the failing broker is named in the
//! test path (`kafka::per_key_ordering`, ...). Every test creates its own
//! destinations and groups, so the suite runs in parallel on shared brokers.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use messaging::envelope::{self, FAILURE_ATTEMPTS, FAILURE_REASON};
use messaging::{
    CloudEvent, Headers, MAX_MESSAGE_BYTES, MessagingError, MessagingSystem, Nack, OutgoingMessage,
};
use support::{Harness, maybe_next, next};
use tokio_util::sync::CancellationToken;

/// Payload bytes and every header — CloudEvents attributes, traceparent, the
/// service's own — arrive exactly as sent.
async fn round_trip(harness: Harness) {
    let destination = harness.destination("round-trip", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&destination, "readers"))
        .await;

    let payload: Vec<u8> = (0..=255u8)
        .chain(b"{\"json\":true}".iter().copied())
        .collect();
    let event =
        CloudEvent::new("ferrishop.test.happened", "/ferrishop/tests").with_subject("thing-1");
    let message = OutgoingMessage::new(&destination, payload.clone())
        .with_key("key-1")
        .with_event(&event)
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("tracestate", "vendor=value")
        .with_header("x-tenant", "acme");
    let mut expected = message.headers.clone();
    expected.insert(envelope::PARTITION_KEY, "key-1");
    let id = harness.publish(message).await;
    assert_eq!(id, event.id);

    let delivery = next(&mut stream).await;
    assert_eq!(delivery.payload, Bytes::from(payload));
    assert_eq!(delivery.headers, expected);
    assert_eq!(delivery.headers.cloud_event(), Some(event));
    assert_eq!(delivery.key.as_deref(), Some("key-1"));
    assert_eq!(delivery.destination, destination);
    assert_eq!(delivery.attempt, 1);
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));

    // Defaults are filled in for a bare message.
    harness
        .publish(OutgoingMessage::new(&destination, "bare"))
        .await;
    let delivery = next(&mut stream).await;
    let event = delivery.headers.cloud_event();
    assert!(event.is_some(), "{:?}", delivery.headers);
    assert_eq!(delivery.headers.get(envelope::SPEC_VERSION), Some("1.0"));
    assert_eq!(
        delivery.headers.get(envelope::SOURCE),
        Some(support::SOURCE)
    );
    assert_eq!(
        delivery.headers.get(envelope::TYPE),
        Some(destination.as_str())
    );
    delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    stream.drain().await;
}

/// 1,000 messages over 10 keys arrive in publication order per key.
async fn per_key_ordering(harness: Harness) {
    const KEYS: usize = 10;
    const PER_KEY: usize = 100;
    let destination = harness.destination("ordering", 3).await;
    let mut stream = harness
        .subscribe(
            &harness
                .subscription(&destination, "ordered")
                .with_prefetch(50),
        )
        .await;

    let harness = Arc::new(harness);
    let publishers: Vec<_> = (0..KEYS)
        .map(|key| {
            let harness = harness.clone();
            let destination = destination.clone();
            tokio::spawn(async move {
                for sequence in 0..PER_KEY {
                    let message = OutgoingMessage::new(&destination, sequence.to_string())
                        .with_key(format!("key-{key}"));
                    harness.publish(message).await;
                }
            })
        })
        .collect();

    let mut last_seen: HashMap<String, i64> = HashMap::new();
    for _ in 0..KEYS * PER_KEY {
        let delivery = next(&mut stream).await;
        let key = delivery.key.clone().unwrap_or_default();
        let sequence: i64 = std::str::from_utf8(&delivery.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        let previous = last_seen.insert(key.clone(), sequence).unwrap_or(-1);
        assert_eq!(sequence, previous + 1, "out of order for {key}");
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    for publisher in publishers {
        publisher.await.unwrap_or_else(|e| panic!("publisher: {e}"));
    }
    assert_eq!(last_seen.len(), KEYS);
    assert!(last_seen.values().all(|last| *last == PER_KEY as i64 - 1));
    stream.drain().await;
}

/// A consumer that stops without acking: the next consumer of the group gets
/// the messages.
async fn unacked_messages_go_to_the_next_consumer(harness: Harness) {
    let destination = harness.destination("unacked", 2).await;
    let subscription = harness.subscription(&destination, "workers");
    let mut first = harness.subscribe(&subscription).await;
    let mut sent = HashSet::new();
    for n in 0..5 {
        sent.insert(
            harness
                .publish(
                    OutgoingMessage::new(&destination, format!("m{n}")).with_key(format!("k{n}")),
                )
                .await,
        );
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut first).await);
    }
    // Crash-like: drop everything unsettled, then stop.
    drop(held);
    first.drain().await;

    let mut second = harness.subscribe(&subscription).await;
    let mut received = HashSet::new();
    while received.len() < sent.len() {
        let delivery = next(&mut second).await;
        received.insert(delivery.message_id().unwrap_or_default().to_owned());
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    assert_eq!(received, sent);
    second.drain().await;
}

/// `nack { requeue }` brings the message back, counted as a second attempt.
async fn nack_requeue_redelivers(harness: Harness) {
    let destination = harness.destination("requeue", 1).await;
    let mut stream = harness
        .subscribe(&harness.subscription(&destination, "retriers"))
        .await;
    let id = harness
        .publish(OutgoingMessage::new(&destination, "again"))
        .await;

    let first = next(&mut stream).await;
    assert_eq!(first.message_id(), Some(id.as_str()));
    assert_eq!(first.attempt, 1);
    first
        .nack(Nack::requeue("database unavailable"))
        .await
        .unwrap_or_else(|e| panic!("nack: {e}"));

    let second = next(&mut stream).await;
    assert_eq!(second.message_id(), Some(id.as_str()));
    assert_eq!(second.attempt, 2);
    assert!(second.redelivered);
    assert_eq!(second.payload, Bytes::from_static(b"again"));
    second.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    assert!(
        maybe_next(&mut stream, Duration::from_millis(800))
            .await
            .is_none()
    );
    stream.drain().await;
}

/// After `max_attempts` (or on reject) the message is in the dead-letter
/// destination with the failure reason.
async fn dead_letter_after_max_attempts(harness: Harness) {
    let destination = harness.destination("poison", 1).await;
    let subscription = harness.subscription(&destination, "strict");
    let mut stream = harness.subscribe(&subscription).await;
    let poison = harness
        .publish(OutgoingMessage::new(&destination, "poison").with_header("x-tenant", "acme"))
        .await;
    for attempt in 1..=3 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.message_id(), Some(poison.as_str()));
        assert_eq!(delivery.attempt, attempt);
        delivery
            .nack(Nack::requeue("handler exploded"))
            .await
            .unwrap_or_else(|e| panic!("nack: {e}"));
    }
    let malformed = harness
        .publish(OutgoingMessage::new(&destination, "not json"))
        .await;
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.message_id(), Some(malformed.as_str()));
    delivery
        .nack(Nack::reject("malformed payload"))
        .await
        .unwrap_or_else(|e| panic!("reject: {e}"));
    assert!(
        maybe_next(&mut stream, Duration::from_millis(800))
            .await
            .is_none()
    );
    stream.drain().await;

    let mut dead = harness
        .broker
        .dead_letters(&subscription)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e}"));
    let mut letters = BTreeMap::new();
    for _ in 0..2 {
        let letter = next(&mut dead).await;
        letters.insert(
            letter.message_id().unwrap_or_default().to_owned(),
            letter.message().clone(),
        );
        letter.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    let poisoned = &letters[&poison];
    assert_eq!(poisoned.payload, Bytes::from_static(b"poison"));
    assert_eq!(poisoned.headers.get("x-tenant"), Some("acme"));
    assert_eq!(
        poisoned.headers.get(FAILURE_REASON),
        Some("handler exploded (gave up after 3 attempts)")
    );
    assert_eq!(poisoned.headers.get(FAILURE_ATTEMPTS), Some("3"));
    assert_eq!(
        poisoned.headers.get(envelope::ORIGINAL_DESTINATION),
        Some(destination.as_str())
    );
    let rejected = &letters[&malformed];
    assert_eq!(
        rejected.headers.get(FAILURE_REASON),
        Some("malformed payload")
    );
    assert_eq!(rejected.headers.get(FAILURE_ATTEMPTS), Some("1"));
    dead.drain().await;
}

/// Two consumers of one group share 1,000 messages; each is handled once.
async fn competing_consumers_share_the_work(harness: Harness) {
    const MESSAGES: usize = 1000;
    let destination = harness.destination("competing", 4).await;
    let subscription = harness.subscription(&destination, "pool");
    let streams = [
        harness.subscribe(&subscription).await,
        harness.subscribe(&subscription).await,
    ];
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let per_consumer: Arc<Mutex<[usize; 2]>> = Arc::default();
    let done = CancellationToken::new();
    let consumers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let seen = seen.clone();
            let per_consumer = per_consumer.clone();
            let done = done.clone();
            tokio::spawn(stream.consume(4, done, move |message| {
                let seen = seen.clone();
                let per_consumer = per_consumer.clone();
                async move {
                    if let (Ok(mut seen), Ok(mut counts)) = (seen.lock(), per_consumer.lock()) {
                        *seen
                            .entry(message.message_id().unwrap_or_default().to_owned())
                            .or_default() += 1;
                        counts[index] += 1;
                    }
                    Ok(())
                }
            }))
        })
        .collect();

    let harness = Arc::new(harness);
    let publishers: Vec<_> = (0..20)
        .map(|task| {
            let harness = harness.clone();
            let destination = destination.clone();
            tokio::spawn(async move {
                for n in 0..MESSAGES / 20 {
                    let message = OutgoingMessage::new(&destination, format!("{task}-{n}"))
                        .with_key(format!("key-{task}-{n}"));
                    harness.publish(message).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap_or_else(|e| panic!("publisher: {e}"));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().map(|s| s.len()).unwrap_or(0) < MESSAGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything handled twice would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    done.cancel();
    for consumer in consumers {
        consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let counts = per_consumer.lock().map(|c| *c).unwrap_or_default();
    assert_eq!(seen.len(), MESSAGES, "distinct messages handled");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both consumers worked: {counts:?}"
    );
}

/// Request/reply with a 2 s timeout: answered; a timeout when nobody answers.
async fn request_reply(harness: Harness) {
    let timeout = Duration::from_secs(2);
    let destination = harness.transient_destination("rpc").await;
    if harness.system() == MessagingSystem::Kafka {
        let result = harness
            .broker
            .request(OutgoingMessage::new(&destination, "ping"), timeout)
            .await;
        assert!(
            matches!(&result, Err(error) if error.is_unsupported()),
            "{result:?}"
        );
        if let Err(error) = result {
            assert!(
                error.to_string().contains("does not support request/reply"),
                "{error}"
            );
        }
        return;
    }

    let mut responder = harness
        .subscribe(&harness.subscription(&destination, "responders").transient())
        .await;
    let answering = tokio::spawn(async move {
        while let Some(Ok(request)) = futures::StreamExt::next(&mut responder).await {
            let mut headers = Headers::new();
            headers.insert("x-answered-by", "responder");
            let answer = [b"pong:".as_slice(), &request.payload].concat();
            request
                .reply(headers, answer)
                .await
                .unwrap_or_else(|e| panic!("reply: {e}"));
            request.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
        }
    });
    let reply = harness
        .broker
        .request(OutgoingMessage::new(&destination, "ping"), timeout)
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    assert_eq!(reply.payload, Bytes::from_static(b"pong:ping"));
    assert_eq!(reply.headers.get("x-answered-by"), Some("responder"));
    answering.abort();

    // Someone receives the request but never answers.
    let silent_destination = harness.transient_destination("rpc-silent").await;
    let mut silent = harness
        .subscribe(
            &harness
                .subscription(&silent_destination, "silent")
                .transient(),
        )
        .await;
    let ignoring = tokio::spawn(async move {
        while let Some(Ok(request)) = futures::StreamExt::next(&mut silent).await {
            let _ = request.ack().await;
        }
    });
    let started = Instant::now();
    let result = harness
        .broker
        .request(
            OutgoingMessage::new(&silent_destination, "anyone?"),
            timeout,
        )
        .await;
    let waited = started.elapsed();
    assert!(
        matches!(&result, Err(error) if error.is_timeout()),
        "{result:?}"
    );
    assert!(
        waited >= timeout && waited < timeout * 2,
        "waited {waited:?}"
    );
    ignoring.abort();

    // Nobody is there at all: also a timeout error (possibly sooner).
    let empty = harness.transient_destination("rpc-empty").await;
    let result = harness
        .broker
        .request(OutgoingMessage::new(&empty, "hello?"), timeout)
        .await;
    assert!(
        matches!(&result, Err(error) if error.is_timeout()),
        "{result:?}"
    );
}

/// Over the size limit: a typed error naming broker and destination.
async fn oversized_messages_are_refused(harness: Harness) {
    let destination = harness.destination("large", 1).await;
    let result = harness
        .broker
        .publish(OutgoingMessage::new(
            &destination,
            vec![0u8; MAX_MESSAGE_BYTES],
        ))
        .await;
    match result {
        Err(error @ MessagingError::TooLarge { .. }) => {
            let text = error.to_string();
            assert!(text.contains(&destination), "{text}");
            assert!(text.contains(&harness.system().to_string()), "{text}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Just under the limit is fine.
    let fits = MAX_MESSAGE_BYTES - 4096;
    harness
        .publish(OutgoingMessage::new(&destination, vec![1u8; fits]))
        .await;
}

/// Graceful drain: stop taking deliveries, finish and ack the ones in
/// progress, hand the rest back to the group.
async fn drain_finishes_in_flight_and_hands_back_the_rest(harness: Harness) {
    const MESSAGES: usize = 6;
    let destination = harness.destination("drain", 1).await;
    let subscription = harness.subscription(&destination, "drainers");
    let stream = harness.subscribe(&subscription).await;
    let mut sent = HashSet::new();
    for n in 0..MESSAGES {
        sent.insert(
            harness
                .publish(OutgoingMessage::new(&destination, format!("{n}")))
                .await,
        );
    }

    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Arc::new(tokio::sync::Notify::new());
    let cancel = CancellationToken::new();
    let consumer = {
        let handled = handled.clone();
        let started = started.clone();
        tokio::spawn(stream.consume(2, cancel.clone(), move |message| {
            let handled = handled.clone();
            started.notify_one();
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(mut handled) = handled.lock() {
                    handled.push(message.message_id().unwrap_or_default().to_owned());
                }
                Ok(())
            }
        }))
    };
    // Stop while the first handler is busy.
    tokio::time::timeout(support::RECEIVE_TIMEOUT, started.notified())
        .await
        .unwrap_or_else(|_| panic!("no delivery was handled"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));
    let first: HashSet<String> = handled
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    assert!(
        !first.is_empty() && first.len() <= 2,
        "in-flight finished: {first:?}"
    );

    let mut second = harness.subscribe(&subscription).await;
    let mut rest = HashSet::new();
    while first.len() + rest.len() < MESSAGES {
        let delivery = next(&mut second).await;
        let id = delivery.message_id().unwrap_or_default().to_owned();
        assert!(
            !first.contains(&id),
            "{id} was acked during drain but came back"
        );
        rest.insert(id);
        delivery.ack().await.unwrap_or_else(|e| panic!("ack: {e}"));
    }
    assert!(
        maybe_next(&mut second, Duration::from_secs(1))
            .await
            .is_none()
    );
    let all: HashSet<String> = first.union(&rest).cloned().collect();
    assert_eq!(all, sent);
    second.drain().await;
}

/// A handler whose own dependency is down (`Nack::unavailable`) holds its
/// message: it is handled again after a backoff, for longer than the ack wait
/// and more times than `max_attempts`, without an attempt counted, a
/// redelivery or a dead letter. A consumer stopped during the hold hands the
/// message back to its group.
async fn unavailable_dependencies_hold_the_message_without_spending_attempts(harness: Harness) {
    const OUTAGE_TRIES: usize = 5;
    let destination = harness.destination("outage", 1).await;
    let subscription = harness.subscription(&destination, "patient");
    let stream = harness.subscribe(&subscription).await;
    let id = harness
        .publish(OutgoingMessage::new(&destination, "keep me"))
        .await;

    // A consumer stopped while holding the message.
    let (tried, first_tries) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(Mutex::new(Vec::new())),
    );
    let cancel = CancellationToken::new();
    let consumer = {
        let (tried, first_tries) = (tried.clone(), first_tries.clone());
        tokio::spawn(stream.consume(1, cancel.clone(), move |message| {
            if let Ok(mut tries) = first_tries.lock() {
                tries.push(message.attempt);
            }
            tried.notify_one();
            async { Err(Nack::unavailable("database unreachable")) }
        }))
    };
    tokio::time::timeout(support::RECEIVE_TIMEOUT, tried.notified())
        .await
        .unwrap_or_else(|_| panic!("the message was not handled"));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), consumer)
        .await
        .unwrap_or_else(|_| panic!("a held delivery kept the consumer from stopping"))
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let first_tries = first_tries.lock().map(|t| t.clone()).unwrap_or_default();
    assert_eq!(first_tries, [1], "held, not redelivered");

    // The next consumer gets it, and holds it through an outage of 6.2 s
    // (waits of 0.2, 0.4, 0.8, 1.6 and 3.2 s) against an ack wait of 2 s; a
    // Kafka rebalance meanwhile lets the held copy go, and the waits start
    // again with the copy read anew.
    let tries: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let handled = Arc::new(tokio::sync::Notify::new());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let consumer = {
        let (tries, handled) = (tries.clone(), handled.clone());
        tokio::spawn(harness.subscribe(&subscription).await.consume(
            1,
            cancel.clone(),
            move |message| {
                let (tries, handled) = (tries.clone(), handled.clone());
                async move {
                    let mut tries = tries.lock().unwrap_or_else(|e| e.into_inner());
                    tries.push((
                        message.message_id().unwrap_or_default().to_owned(),
                        message.attempt,
                    ));
                    if tries.len() <= OUTAGE_TRIES {
                        return Err(Nack::unavailable("database unreachable"));
                    }
                    handled.notify_one();
                    Ok(())
                }
            },
        ))
    };
    tokio::time::timeout(support::RECEIVE_TIMEOUT, handled.notified())
        .await
        .unwrap_or_else(|_| panic!("the message was never handled: {tries:?}"));
    assert!(
        started.elapsed() >= Duration::from_millis(200) * OUTAGE_TRIES as u32,
        "no wait between tries"
    );
    // Anything redelivered behind the hold would show up here.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));

    let tries = tries.lock().map(|t| t.clone()).unwrap_or_default();
    assert_eq!(tries.len(), OUTAGE_TRIES + 1, "{tries:?}");
    // The hand-back counts once where the broker counts returns (quorum
    // queues, JetStream); the tries while held do not count.
    let first_attempt = tries[0].1;
    assert!(first_attempt <= 2, "handed back more than once: {tries:?}");
    for (message_id, attempt) in &tries {
        assert_eq!(message_id, &id);
        assert_eq!(
            *attempt, first_attempt,
            "a held try counted an attempt: {tries:?}"
        );
    }

    harness.assert_handled_for_good(&subscription).await;
}

/// Messages fetched behind one held through an outage wait in the consumer
/// for longer than the ack wait without the broker taking them back: once
/// the outage ends, each is handled once, on its first attempt.
async fn messages_waiting_behind_a_held_one_are_not_redelivered(harness: Harness) {
    let destination = harness.destination("queued", 1).await;
    let subscription = harness
        .subscription(&destination, "patient")
        .with_prefetch(3);
    let stream = harness.subscribe(&subscription).await;
    let sent = harness.publish_numbered(&destination, 0..4).await;

    let handled: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let outage_over = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let consumer = {
        let (handled, outage_over) = (handled.clone(), outage_over.clone());
        tokio::spawn(stream.consume(1, cancel.clone(), move |message| {
            let outcome = if outage_over.load(Ordering::SeqCst) {
                if let Ok(mut handled) = handled.lock() {
                    handled.push((
                        message.message_id().unwrap_or_default().to_owned(),
                        message.attempt,
                    ));
                }
                Ok(())
            } else {
                Err(Nack::unavailable("database unreachable"))
            };
            async move { outcome }
        }))
    };
    // Three ack waits (2 s each) with one message held, the rest queued.
    tokio::time::sleep(Duration::from_secs(6)).await;
    outage_over.store(true, Ordering::SeqCst);
    let started = Instant::now();
    while handled.lock().map(|h| h.len()).unwrap_or_default() < sent.len() {
        assert!(
            started.elapsed() < support::RECEIVE_TIMEOUT,
            "not all handled: {handled:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything redelivered behind them would show up here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    consumer.await.unwrap_or_else(|e| panic!("consumer: {e}"));

    let handled = handled.lock().map(|h| h.clone()).unwrap_or_default();
    let first_attempts: Vec<(String, u32)> = sent.into_iter().map(|id| (id, 1)).collect();
    assert_eq!(
        handled, first_attempts,
        "each once, in order, first attempt"
    );
}

macro_rules! contract_suite {
    ($($broker:ident),+ $(,)?) => {$(
        mod $broker {
            use super::*;

            async fn harness() -> Harness {
                support::$broker().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                super::round_trip(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_key_ordering() {
                super::per_key_ordering(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unacked_messages_go_to_the_next_consumer() {
                super::unacked_messages_go_to_the_next_consumer(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack_requeue_redelivers() {
                super::nack_requeue_redelivers(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letter_after_max_attempts() {
                super::dead_letter_after_max_attempts(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn competing_consumers_share_the_work() {
                super::competing_consumers_share_the_work(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn request_reply() {
                super::request_reply(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oversized_messages_are_refused() {
                super::oversized_messages_are_refused(harness().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unavailable_dependencies_hold_the_message_without_spending_attempts() {
                super::unavailable_dependencies_hold_the_message_without_spending_attempts(
                    harness().await,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn messages_waiting_behind_a_held_one_are_not_redelivered() {
                super::messages_waiting_behind_a_held_one_are_not_redelivered(harness().await)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn drain_finishes_in_flight_and_hands_back_the_rest() {
                super::drain_finishes_in_flight_and_hands_back_the_rest(harness().await).await;
            }
        }
    )+};
}

contract_suite!(rabbitmq, kafka, nats);
