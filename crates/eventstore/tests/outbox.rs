//! Outbox relay: at least once, never lost, never two relays on one row,
//! per-key order, backoff on broker errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{migrated_database, pool_with};
use eventstore::outbox::{OutboxRelay, RelayConfig, partition_of, pending_count};
use eventstore::{OutboxMessage, PublishError, Publisher, enqueue, enqueue_all};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 20,
        max_in_flight: 8,
        idle_interval: Duration::from_millis(10),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(80),
        publish_timeout: Duration::from_secs(5),
        gauge_interval: Duration::from_millis(100),
        retention: None,
        parked_retention: None,
        inbox_retention: None,
    }
}

/// Writes `count` messages for `keys` keys (round robin), each in its own
/// transaction; the payload is the message's index within its key.
async fn write_messages(pool: &PgPool, count: usize, keys: usize) -> Vec<OutboxMessage> {
    let keys: Vec<String> = (0..keys).map(|key| format!("key-{key}")).collect();
    write_messages_for(pool, "ferrishop.test.events", &keys, count).await
}

/// Writes `count` messages to `destination` for `keys` (round robin), each
/// in its own transaction; the payload is the message's index within its key.
async fn write_messages_for(
    pool: &PgPool,
    destination: &str,
    keys: &[String],
    count: usize,
) -> Vec<OutboxMessage> {
    let mut written = Vec::new();
    let mut per_key: HashMap<String, u32> = HashMap::new();
    for index in 0..count {
        let key = keys[index % keys.len()].clone();
        let ordinal = per_key.entry(key.clone()).or_default();
        let message = OutboxMessage::new(destination, key, ordinal.to_string().into_bytes())
            .with_header("ce_type", "test.happened");
        *ordinal += 1;
        let mut transaction = pool.begin().await.unwrap();
        enqueue(&mut transaction, &message).await.unwrap();
        transaction.commit().await.unwrap();
        written.push(message);
    }
    written
}

/// `count` keys that share one partition, so one batch holds them all.
fn keys_in_one_partition(count: usize) -> Vec<String> {
    let partition = partition_of("key-0");
    (0..)
        .map(|index| format!("key-{index}"))
        .filter(|key| partition_of(key) == partition)
        .take(count)
        .collect()
}

/// Records what was published, and by whom; flags concurrent publication
/// of one message, and of one key, and keeps the most publishes it saw in
/// flight at once.
#[derive(Default)]
struct RecordingPublisher {
    published: Mutex<Vec<(String, OutboxMessage)>>,
    in_flight: Mutex<HashSet<Uuid>>,
    overlaps: Mutex<u32>,
    keys_in_flight: Mutex<HashSet<String>>,
    key_overlaps: Mutex<u32>,
    most_in_flight: Mutex<usize>,
    delay: Duration,
}

impl RecordingPublisher {
    fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    fn record(&self, relay: &str, message: &OutboxMessage) {
        self.published
            .lock()
            .unwrap()
            .push((relay.to_owned(), message.clone()));
    }

    async fn publish_as(&self, relay: &str, message: &OutboxMessage) -> Result<(), PublishError> {
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            if !in_flight.insert(message.id) {
                *self.overlaps.lock().unwrap() += 1;
            }
            let mut most = self.most_in_flight.lock().unwrap();
            *most = (*most).max(in_flight.len());
        }
        if !self
            .keys_in_flight
            .lock()
            .unwrap()
            .insert(message.key.clone())
        {
            *self.key_overlaps.lock().unwrap() += 1;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.record(relay, message);
        self.keys_in_flight.lock().unwrap().remove(&message.key);
        self.in_flight.lock().unwrap().remove(&message.id);
        Ok(())
    }

    fn published_ids(&self) -> Vec<Uuid> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|(_, message)| message.id)
            .collect()
    }
}

/// A relay's identity in front of a shared recorder.
struct NamedPublisher {
    name: &'static str,
    inner: Arc<RecordingPublisher>,
}

#[async_trait::async_trait]
impl Publisher for NamedPublisher {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        self.inner.publish_as(self.name, message).await
    }
}

async fn wait_until_drained(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pending_count(pool).await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "outbox did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `relay` until the outbox is empty, then stops it.
async fn run_until_drained(relay: &OutboxRelay, pool: &PgPool) {
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        let relay = relay.clone();
        async move { relay.run(cancel).await }
    });
    wait_until_drained(pool).await;
    cancel.cancel();
    running.await.unwrap();
}

/// For every key, the payloads (per-key ordinals) in first-publication order.
fn first_publications_per_key(published: &[(String, OutboxMessage)]) -> HashMap<String, Vec<u32>> {
    let mut seen = HashSet::new();
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for (_, message) in published {
        if seen.insert(message.id) {
            let ordinal: u32 = String::from_utf8(message.payload.clone())
                .unwrap()
                .parse()
                .unwrap();
            per_key
                .entry(message.key.clone())
                .or_default()
                .push(ordinal);
        }
    }
    per_key
}

#[tokio::test]
async fn messages_of_a_rolled_back_change_are_never_published() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let mut transaction = pool.begin().await.unwrap();
    enqueue(
        &mut transaction,
        &OutboxMessage::new("t", "k", b"ghost".to_vec()),
    )
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    let kept = OutboxMessage::json("t", "k", &serde_json::json!({"n": 1})).unwrap();
    let mut transaction = pool.begin().await.unwrap();
    enqueue(&mut transaction, &kept).await.unwrap();
    transaction.commit().await.unwrap();

    let recorder = Arc::new(RecordingPublisher::default());
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "a",
            inner: recorder.clone(),
        }),
        fast_config(),
    );
    let pass = relay.relay_once().await.unwrap();
    assert_eq!(pass.published, 1);
    let published = recorder.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    let message = &published[0].1;
    assert_eq!(message.id, kept.id);
    assert_eq!(message.payload, br#"{"n":1}"#);
    assert_eq!(message.headers, kept.headers);
    assert_eq!(message.destination, "t");
    assert_eq!(
        message.created_at.timestamp_micros(),
        kept.created_at.timestamp_micros()
    );
    assert_eq!(pending_count(&pool).await.unwrap(), 0);
    // Nothing is published twice by a healthy relay.
    assert_eq!(relay.relay_once().await.unwrap().published, 0);
}

/// A publisher that records a message as sent by the broker and then hangs,
/// so the relay can be killed after the publish and before the mark.
struct HangingPublisher {
    recorder: Arc<RecordingPublisher>,
    hang_on: Uuid,
    reached: Arc<Notify>,
}

#[async_trait::async_trait]
impl Publisher for HangingPublisher {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        self.recorder.record("doomed", message);
        if message.id == self.hang_on {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Killing the relay between the broker's acceptance and the mark-as-sent
/// loses nothing: the next relay publishes those messages again.
#[tokio::test]
async fn a_relay_killed_between_publish_and_mark_republishes() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    // One key, so every message is in one partition and one batch.
    let written = write_messages(&pool, 10, 1).await;
    let recorder = Arc::new(RecordingPublisher::default());
    let reached = Arc::new(Notify::new());
    let doomed = OutboxRelay::new(
        pool.clone(),
        Arc::new(HangingPublisher {
            recorder: recorder.clone(),
            hang_on: written[4].id,
            reached: reached.clone(),
        }),
        fast_config(),
    );
    let task = tokio::spawn(async move { doomed.run(CancellationToken::new()).await });
    tokio::time::timeout(Duration::from_secs(10), reached.notified())
        .await
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        recorder.published_ids(),
        written[..5].iter().map(|m| m.id).collect::<Vec<_>>(),
        "five messages reached the broker before the kill"
    );
    // None of them was marked: the kill rolled the marks back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pending_count(&pool).await.unwrap(), 10);

    let survivor = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "survivor",
            inner: recorder.clone(),
        }),
        fast_config(),
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { survivor.run(cancel).await }
    });
    wait_until_drained(&pool).await;
    cancel.cancel();
    running.await.unwrap();

    let published = recorder.published.lock().unwrap().clone();
    let by_survivor: Vec<Uuid> = published
        .iter()
        .filter(|(relay, _)| relay == "survivor")
        .map(|(_, message)| message.id)
        .collect();
    assert_eq!(
        by_survivor,
        written.iter().map(|m| m.id).collect::<Vec<_>>(),
        "every message published, in order, including the five already sent"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM outbox ORDER BY sequence")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(attempts.iter().all(|&attempts| attempts == 1));
}

/// Two relays on one table, with writers still adding messages: no row is
/// ever published by both at once, none twice, none lost, and each key's
/// messages go out in the order they were written.
#[tokio::test]
async fn two_relays_never_share_a_row_and_keep_per_key_order() {
    let database = migrated_database().await;
    let pool = pool_with(&database, 12).await;
    let first_half = write_messages(&pool, 150, 12).await;
    let recorder = Arc::new(RecordingPublisher::with_delay(Duration::from_millis(1)));
    let cancel = CancellationToken::new();
    let mut relays = Vec::new();
    for name in ["left", "right"] {
        let relay = OutboxRelay::new(
            pool.clone(),
            Arc::new(NamedPublisher {
                name,
                inner: recorder.clone(),
            }),
            RelayConfig {
                batch_size: 5,
                ..fast_config()
            },
        );
        let cancel = cancel.clone();
        relays.push(tokio::spawn(async move { relay.run(cancel).await }));
    }
    // Keep writing while the relays run; reuse the key ordinals' continuation.
    let mut second_half = Vec::new();
    let mut ordinals: HashMap<String, u32> = HashMap::new();
    for message in &first_half {
        *ordinals.entry(message.key.clone()).or_default() += 1;
    }
    for index in 0..150 {
        let key = format!("key-{}", index % 12);
        let ordinal = ordinals.entry(key.clone()).or_default();
        let message = OutboxMessage::new(
            "ferrishop.test.events",
            key,
            ordinal.to_string().into_bytes(),
        );
        *ordinal += 1;
        let mut transaction = pool.begin().await.unwrap();
        enqueue(&mut transaction, &message).await.unwrap();
        transaction.commit().await.unwrap();
        second_half.push(message);
    }
    wait_until_drained(&pool).await;
    cancel.cancel();
    for relay in relays {
        relay.await.unwrap();
    }

    assert_eq!(
        *recorder.overlaps.lock().unwrap(),
        0,
        "a row was published concurrently"
    );
    let published = recorder.published.lock().unwrap().clone();
    let ids: Vec<Uuid> = published.iter().map(|(_, m)| m.id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 300, "no message published twice");
    assert_eq!(unique.len(), 300, "no message lost");
    for (key, ordinals) in first_publications_per_key(&published) {
        let sorted = {
            let mut sorted = ordinals.clone();
            sorted.sort_unstable();
            sorted
        };
        assert_eq!(ordinals, sorted, "key {key} was reordered");
    }
    let relays_used: HashSet<&str> = published.iter().map(|(relay, _)| relay.as_str()).collect();
    println!("relays that published: {relays_used:?}");
}

/// A broker that fails for a while: the relay backs off, retries the same
/// message first (no later message of its key overtakes it), and records
/// the attempts and last error meanwhile.
struct FlakyBroker {
    failures_left: Mutex<u32>,
    recorder: Arc<RecordingPublisher>,
}

#[async_trait::async_trait]
impl Publisher for FlakyBroker {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        {
            let mut failures = self.failures_left.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(PublishError::Unavailable("connection refused".into()));
            }
        }
        self.recorder.record("flaky", message);
        Ok(())
    }
}

#[tokio::test]
async fn broker_errors_back_off_and_keep_the_order() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let written = write_messages(&pool, 6, 1).await;
    let recorder = Arc::new(RecordingPublisher::default());
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(FlakyBroker {
            failures_left: Mutex::new(3),
            recorder: recorder.clone(),
        }),
        fast_config(),
    );

    // A single pass reports the failure and publishes nothing.
    let error = relay.relay_once().await.unwrap_err();
    assert!(
        matches!(
            error,
            eventstore::outbox::RelayError::Publish {
                source: PublishError::Unavailable(_),
                ..
            }
        ),
        "{error:?}"
    );
    let (attempts, last_error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM outbox ORDER BY sequence LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(last_error.unwrap().contains("connection refused"));

    let started = std::time::Instant::now();
    run_until_drained(&relay, &pool).await;
    // Two more failures: backoffs of ~10 ms and ~20 ms before success.
    assert!(started.elapsed() >= Duration::from_millis(25));
    assert_eq!(
        recorder.published_ids(),
        written.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM outbox ORDER BY sequence LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 4, "three failures and the success");
}

/// A message the broker refuses for good is parked with its reason, and
/// the rest of the partition still flows.
struct PickyBroker {
    refuse: Uuid,
    recorder: Arc<RecordingPublisher>,
}

#[async_trait::async_trait]
impl Publisher for PickyBroker {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        if message.id == self.refuse {
            return Err(PublishError::Rejected("message too large".into()));
        }
        self.recorder.record("picky", message);
        Ok(())
    }
}

#[tokio::test]
async fn a_rejected_message_is_parked_and_does_not_block_its_partition() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let written = write_messages(&pool, 4, 1).await;
    let recorder = Arc::new(RecordingPublisher::default());
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(PickyBroker {
            refuse: written[1].id,
            recorder: recorder.clone(),
        }),
        fast_config(),
    );
    let pass = relay.relay_once().await.unwrap();
    assert_eq!((pass.published, pass.parked), (3, 1));
    assert_eq!(
        recorder.published_ids(),
        vec![written[0].id, written[2].id, written[3].id]
    );
    let (parked, reason): (bool, Option<String>) = sqlx::query_as(
        "SELECT parked_at IS NOT NULL, last_error FROM outbox WHERE message_id = $1",
    )
    .bind(written[1].id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(parked);
    assert_eq!(
        reason.as_deref(),
        Some("message rejected: message too large")
    );
    assert_eq!(pending_count(&pool).await.unwrap(), 0);
    assert_eq!(relay.relay_once().await.unwrap().published, 0);
}

/// Published rows older than the retention are purged; pending ones never.
#[tokio::test]
async fn purge_removes_only_old_published_rows() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    write_messages(&pool, 3, 3).await;
    let recorder = Arc::new(RecordingPublisher::default());
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "a",
            inner: recorder,
        }),
        fast_config(),
    );
    relay.relay_once().await.unwrap();
    write_messages(&pool, 1, 1).await;
    sqlx::query("UPDATE outbox SET published_at = now() - interval '2 hours' WHERE published_at IS NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    let purged = eventstore::outbox::purge_published(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    assert_eq!(pending_count(&pool).await.unwrap(), 1);

    // Parked rows go after their own retention, counted from when they
    // were parked; the pending row stays.
    write_messages(&pool, 2, 2).await;
    sqlx::query(
        "UPDATE outbox SET parked_at = now() - interval '2 hours' \
          WHERE sequence = (SELECT max(sequence) FROM outbox)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE outbox SET parked_at = now() \
          WHERE sequence = (SELECT max(sequence) - 1 FROM outbox)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let purged = eventstore::outbox::purge_parked(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(parked, 1);
    assert_eq!(pending_count(&pool).await.unwrap(), 1);
}

/// A broker that cannot take one destination's messages while `down`.
struct PartlyDownBroker {
    down_destination: &'static str,
    down: Mutex<bool>,
    recorder: Arc<RecordingPublisher>,
}

#[async_trait::async_trait]
impl Publisher for PartlyDownBroker {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        if message.destination == self.down_destination && *self.down.lock().unwrap() {
            return Err(PublishError::Unavailable("connection refused".into()));
        }
        self.recorder.record("partly-down", message);
        Ok(())
    }
}

#[tokio::test]
async fn a_destination_that_is_down_holds_back_only_its_own_messages() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    // One key, as a saga writes it: an event (Kafka), a command (RabbitMQ)
    // behind it, another event.
    let mut written = Vec::new();
    for (destination, payload) in [("events", "0"), ("commands", "0"), ("events", "1")] {
        let message = OutboxMessage::new(destination, "order-1", payload.as_bytes().to_vec());
        let mut transaction = pool.begin().await.unwrap();
        enqueue(&mut transaction, &message).await.unwrap();
        transaction.commit().await.unwrap();
        written.push(message);
    }
    let recorder = Arc::new(RecordingPublisher::default());
    let broker = Arc::new(PartlyDownBroker {
        down_destination: "events",
        down: Mutex::new(true),
        recorder: recorder.clone(),
    });
    // A hold long enough to outlast the second pass below.
    let config = RelayConfig {
        initial_backoff: Duration::from_secs(1),
        ..fast_config()
    };
    let relay = OutboxRelay::new(pool.clone(), broker.clone(), config);

    // The command goes out; the events wait, the first one tried once.
    let pass = relay.relay_once().await.unwrap();
    assert_eq!(pass.published, 1);
    assert_eq!(recorder.published_ids(), [written[1].id]);
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT attempts FROM outbox WHERE published_at IS NULL ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [1, 0],
        "the later event is not tried before the first"
    );

    // While the destination is held back, a pass leaves it alone.
    let pass = relay.relay_once().await.unwrap();
    assert_eq!(pass.published, 0);

    // The broker is back: the events go out, in their order.
    *broker.down.lock().unwrap() = false;
    run_until_drained(&relay, &pool).await;
    assert_eq!(
        recorder.published_ids(),
        [written[1].id, written[0].id, written[2].id]
    );
}

/// One batch holding several keys: up to `max_in_flight` of them are
/// published at once, never two messages of one key, and every key's
/// messages go out in the order they were written.
#[tokio::test]
async fn a_batch_publishes_its_keys_side_by_side_and_each_key_in_order() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let keys = keys_in_one_partition(8);
    let written = write_messages_for(&pool, "ferrishop.test.events", &keys, 40).await;
    let recorder = Arc::new(RecordingPublisher::with_delay(Duration::from_millis(20)));
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "pipelined",
            inner: recorder.clone(),
        }),
        RelayConfig {
            batch_size: 100,
            max_in_flight: 3,
            ..fast_config()
        },
    );

    let pass = relay.relay_once().await.unwrap();
    assert_eq!(pass.published, 40, "one pass, one batch, every message");
    assert_eq!(*recorder.most_in_flight.lock().unwrap(), 3);
    assert_eq!(
        *recorder.key_overlaps.lock().unwrap(),
        0,
        "one key at a time"
    );
    let published = recorder.published.lock().unwrap().clone();
    let per_key = first_publications_per_key(&published);
    assert_eq!(per_key.len(), 8);
    for (key, ordinals) in &per_key {
        assert_eq!(ordinals, &(0..5).collect::<Vec<u32>>(), "order of {key}");
    }
    let mut ids = recorder.published_ids();
    ids.sort();
    let mut expected: Vec<Uuid> = written.iter().map(|message| message.id).collect();
    expected.sort();
    assert_eq!(ids, expected, "each message exactly once");
    assert_eq!(pending_count(&pool).await.unwrap(), 0);
}

/// `max_in_flight: 1` publishes a batch one message at a time: a key's
/// messages in their order, then the next key's.
#[tokio::test]
async fn one_in_flight_publishes_one_message_at_a_time() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let keys = keys_in_one_partition(4);
    let written = write_messages_for(&pool, "ferrishop.test.events", &keys, 12).await;
    let recorder = Arc::new(RecordingPublisher::with_delay(Duration::from_millis(2)));
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "sequential",
            inner: recorder.clone(),
        }),
        RelayConfig {
            max_in_flight: 1,
            ..fast_config()
        },
    );
    assert_eq!(relay.relay_once().await.unwrap().published, 12);
    assert_eq!(*recorder.most_in_flight.lock().unwrap(), 1);
    let mut by_key: Vec<Uuid> = Vec::new();
    for key in &keys {
        by_key.extend(written.iter().filter(|m| &m.key == key).map(|m| m.id));
    }
    assert_eq!(recorder.published_ids(), by_key);
}

/// While `down`, a broker that refuses one key's messages as unavailable
/// (after 30 ms, so that the other keys' publishes are under way) and
/// confirms every other key's message only once it has refused one.
struct OneKeyDownBroker {
    down_key: String,
    down: Mutex<bool>,
    refused: Notify,
    recorder: Arc<RecordingPublisher>,
}

#[async_trait::async_trait]
impl Publisher for OneKeyDownBroker {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        let down = *self.down.lock().unwrap();
        if down && message.key == self.down_key {
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.refused.notify_one();
            return Err(PublishError::Unavailable("leader not available".into()));
        }
        if down {
            self.refused.notified().await;
        }
        self.recorder.publish_as("one-key-down", message).await
    }
}

/// One key's publish fails while another key's is in flight to the same
/// destination: the failing key's later messages are not tried, the other
/// key stops after the publish it had under way, and the destination is held
/// back although that publish succeeded after the failure.
#[tokio::test]
async fn a_failure_stops_every_chain_of_its_destination_and_holds_it() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let keys = keys_in_one_partition(2);
    let written = write_messages_for(&pool, "ferrishop.test.events", &keys, 6).await;
    let recorder = Arc::new(RecordingPublisher::default());
    let broker = Arc::new(OneKeyDownBroker {
        down_key: keys[0].clone(),
        down: Mutex::new(true),
        refused: Notify::new(),
        recorder: recorder.clone(),
    });
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.clone(),
        RelayConfig {
            initial_backoff: Duration::from_secs(1),
            ..fast_config()
        },
    );

    let pass = relay.relay_once().await.unwrap();
    assert_eq!(pass.published, 1, "the other key's publish under way");
    assert_eq!(recorder.published_ids(), [written[1].id]);
    let attempts: Vec<(String, i32)> = sqlx::query_as(
        "SELECT message_key, attempts FROM outbox WHERE published_at IS NULL ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let tried: Vec<i32> = attempts.iter().map(|(_, attempts)| *attempts).collect();
    assert_eq!(tried, [1, 0, 0, 0, 0], "only the failed message was tried");

    // Held back, though a publish to it succeeded after the failure.
    assert_eq!(relay.relay_once().await.unwrap().published, 0);

    *broker.down.lock().unwrap() = false;
    run_until_drained(&relay, &pool).await;
    let published = recorder.published.lock().unwrap().clone();
    for (key, ordinals) in first_publications_per_key(&published) {
        assert_eq!(ordinals, [0, 1, 2], "order of {key}");
    }
}

/// Messages enqueued in one statement take their rows in the order given,
/// so a relay publishes each key's in that order; they roll back together,
/// and an empty slice writes nothing.
#[tokio::test]
async fn messages_enqueued_together_keep_their_order_and_share_the_transaction() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    let keys = keys_in_one_partition(2);
    let messages: Vec<OutboxMessage> = (0..6u32)
        .map(|index| {
            let key = &keys[index as usize % 2];
            OutboxMessage::new(
                "ferrishop.test.events",
                key,
                (index / 2).to_string().into_bytes(),
            )
            .with_header("ce_type", "test.happened")
        })
        .collect();

    let mut rolled_back = pool.begin().await.unwrap();
    enqueue_all(&mut rolled_back, &messages).await.unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!(pending_count(&pool).await.unwrap(), 0);

    let mut transaction = pool.begin().await.unwrap();
    enqueue_all(&mut transaction, &[]).await.unwrap();
    enqueue_all(&mut transaction, &messages).await.unwrap();
    transaction.commit().await.unwrap();
    let stored: Vec<(Uuid, String, serde_json::Value)> =
        sqlx::query_as("SELECT message_id, message_key, headers FROM outbox ORDER BY sequence")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        messages
            .iter()
            .map(|message| message.id)
            .collect::<Vec<_>>()
    );
    assert!(
        stored
            .iter()
            .all(|(_, _, headers)| headers["ce_type"] == "test.happened")
    );

    let recorder = Arc::new(RecordingPublisher::with_delay(Duration::from_millis(1)));
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(NamedPublisher {
            name: "batch",
            inner: recorder.clone(),
        }),
        fast_config(),
    );
    assert_eq!(relay.relay_once().await.unwrap().published, 6);
    let published = recorder.published.lock().unwrap().clone();
    for (key, ordinals) in first_publications_per_key(&published) {
        assert_eq!(ordinals, [0, 1, 2], "order of {key}");
    }
}
