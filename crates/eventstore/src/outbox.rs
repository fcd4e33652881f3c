//! Transactional outbox: integration messages leave the service at least
//! once, in order per key, exactly when the state change they announce
//! commits.
//!
//! Publishing to a broker inside a database transaction cannot be atomic
//! (the broker may accept a message whose transaction then rolls back, or
//! the process may die between commit and publish). So a state change
//! writes its messages into the `outbox` table **in its own transaction**
//! ([`enqueue`] takes the caller's connection), and an [`OutboxRelay`]
//! publishes committed rows afterwards through a [`Publisher`], stamping each
//! row `published_at` only after the broker accepted it. A relay that dies
//! in between publishes the row again: delivery is at least once, and
//! consumers deduplicate by message id (see [`crate::inbox`]).
//!
//! # Several relays, one order per key
//!
//! Every replica runs a relay. `FOR UPDATE SKIP LOCKED` on rows would keep
//! two relays off the same row but would still reorder a key: relay A locks
//! message 1 of key K, relay B skips it and publishes message 2 of key K
//! first. Instead each key hashes (FNV-1a, computed here so it never changes
//! with the database version) to one of [`OUTBOX_PARTITIONS`] partitions, and
//! a relay works on a partition only while holding the transaction-scoped
//! advisory lock `pg_try_advisory_xact_lock(class, partition)`. Within the
//! lock it publishes the partition's oldest pending rows, each key's in
//! `sequence` order (see below), and marks them in the same transaction, so:
//!
//! - no row is published by two relays at once, and a key's messages go out
//!   in the order they were written;
//! - relays share the partitions (each pass starts at a random partition and
//!   skips locked ones), so more replicas publish more partitions in
//!   parallel;
//! - the lock is the lease and its own fence: if the relay dies or its
//!   connection drops, Postgres releases the lock and rolls back the marks
//!   together, and another relay republishes the batch.
//!
//! "In the order they were written" means commit order for writers that are
//! serialised per key — which the event store's optimistic concurrency does
//! for an aggregate's messages. Two transactions writing the same key
//! concurrently, without any lock between them, have no order to keep.
//!
//! The order kept is per destination and key: two destinations (a Kafka
//! topic and a RabbitMQ exchange, say) have no order between them that any
//! consumer could see. So a destination whose broker is down
//! ([`PublishError::Unavailable`]) holds back its own messages only: the
//! message that failed and every later one for that destination wait, the
//! destination is left out of the relay's passes for a backoff that doubles
//! with each failure (from `initial_backoff` up to `max_backoff`), and the
//! other destinations' messages keep flowing. A Kafka outage then delays
//! integration events, not the saga commands written behind them. A message
//! the broker refuses for good ([`PublishError::Rejected`], e.g. too large)
//! is parked with its error for an operator instead of blocking its
//! destination forever; that is the one case where a key's later messages
//! overtake an earlier one.
//!
//! # Many keys in flight, one message per key
//!
//! Waiting for each broker confirmation before sending the next message
//! would cap a relay at one message per round trip — and Kafka's producer
//! holds a message up to `linger.ms` before it even sends it. So a batch
//! is split into one chain per destination and key: a chain publishes its
//! messages one after another, each only once the broker confirmed the one
//! before, while up to [`RelayConfig::max_in_flight`] chains publish at
//! once. The order kept is the one above, per destination and key; between
//! two keys there was none to keep. A destination that fails in a batch
//! stops every chain of it at its next message, and is held back only once
//! the whole batch is over, whatever the other keys' publishes did in the
//! meantime.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metric_names as names;

/// Number of partitions keys are spread over; fixed for the table's life
/// (rows store their partition, so changing it only affects new rows).
pub const OUTBOX_PARTITIONS: i16 = 16;

/// Advisory-lock class (first key) of the partition locks: `"ob"` in ASCII.
const PARTITION_LOCK_CLASS: i32 = 0x6f62;

/// An integration message: what is written to the outbox and what a
/// [`Publisher`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Unique message id (UUID v7): consumers deduplicate by it.
    pub id: Uuid,
    /// Topic, exchange or subject, e.g. `"ferrishop.order.events"`.
    pub destination: String,
    /// Ordering and partitioning key, normally the aggregate id.
    pub key: String,
    /// Broker headers: CloudEvents attributes, `traceparent`, content type…
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl OutboxMessage {
    /// A message with a fresh v7 id and no headers.
    pub fn new(destination: impl Into<String>, key: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: Uuid::now_v7(),
            destination: destination.into(),
            key: key.into(),
            headers: BTreeMap::new(),
            payload,
            created_at: Utc::now(),
        }
    }

    /// A message whose payload is `body` as JSON, with
    /// `content-type: application/json`.
    pub fn json<T: Serialize>(
        destination: impl Into<String>,
        key: impl Into<String>,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(destination, key, serde_json::to_vec(body)?)
            .with_header("content-type", "application/json"))
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The partition this message's key belongs to.
    pub fn partition(&self) -> i16 {
        partition_of(&self.key)
    }
}

/// FNV-1a of the key, reduced to a partition. Stable across processes,
/// platforms and releases, unlike `std`'s hasher or Postgres' `hashtext`.
pub fn partition_of(key: &str) -> i16 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    // OUTBOX_PARTITIONS is small and positive, so the remainder fits.
    i16::try_from(hash % OUTBOX_PARTITIONS.unsigned_abs() as u64).unwrap_or(0)
}

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot encode message headers: {0}")]
    Headers(#[source] serde_json::Error),
    #[error("corrupt outbox row {sequence}: {reason}")]
    Corrupt { sequence: i64, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Writes `message` on the caller's connection: run it in the transaction
/// of the state change it announces.
pub async fn enqueue(
    connection: &mut PgConnection,
    message: &OutboxMessage,
) -> Result<(), OutboxError> {
    enqueue_all(connection, std::slice::from_ref(message)).await
}

/// Writes `messages` on the caller's connection in one statement, in their
/// order (a key's messages are published in it): run it in the transaction
/// of the state change they announce.
pub async fn enqueue_all(
    connection: &mut PgConnection,
    messages: &[OutboxMessage],
) -> Result<(), OutboxError> {
    if messages.is_empty() {
        return Ok(());
    }
    let headers = messages
        .iter()
        .map(|message| serde_json::to_value(&message.headers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(OutboxError::Headers)?;
    // ORDER BY the position in the arrays: the rows take their `sequence`
    // in that order.
    sqlx::query(
        "INSERT INTO outbox (message_id, partition, destination, message_key, headers, payload, created_at) \
         SELECT message_id, partition, destination, message_key, headers, payload, created_at \
           FROM unnest($1::uuid[], $2::int2[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[], $7::timestamptz[]) \
                WITH ORDINALITY AS message(message_id, partition, destination, message_key, headers, payload, created_at, position) \
          ORDER BY position",
    )
    .bind(messages.iter().map(|message| message.id).collect::<Vec<_>>())
    .bind(messages.iter().map(OutboxMessage::partition).collect::<Vec<_>>())
    .bind(messages.iter().map(|message| message.destination.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|message| message.key.as_str()).collect::<Vec<_>>())
    .bind(&headers)
    .bind(messages.iter().map(|message| message.payload.as_slice()).collect::<Vec<_>>())
    .bind(messages.iter().map(|message| message.created_at).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// Rows not yet published (parked rows excluded).
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// A broker's failure to take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker could not be reached or did not confirm: retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused this message for good: retrying cannot help.
    #[error("message rejected: {0}")]
    Rejected(String),
}

/// Sends an outbox message to its broker. Implemented by the messaging
/// layer; `Ok` must mean the broker has durably accepted the message
/// (publisher confirm, `acks=all`, JetStream ack).
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError>;
}

/// How a relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows taken from one partition per transaction.
    pub batch_size: usize,
    /// Publishes awaiting their broker's confirmation at once, each for a
    /// different destination and key (a key's messages go one at a time).
    /// 1 publishes the batch strictly one message after another.
    pub max_in_flight: usize,
    /// Pause between passes when nothing was pending.
    pub idle_interval: Duration,
    /// First pause after a broker error; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A publish that takes longer counts as [`PublishError::Unavailable`].
    pub publish_timeout: Duration,
    /// How often `ferrishop_outbox_pending` is refreshed.
    pub gauge_interval: Duration,
    /// Published rows older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// Parked rows (messages no broker would take) parked longer ago than
    /// this are deleted; `None` keeps them. They are the outbox's dead
    /// letters, kept long enough for an operator to look at (a week by
    /// default), not for ever: a broker outage can park many.
    pub parked_retention: Option<Duration>,
    /// Inbox records ([`crate::inbox`]) older than this are deleted; `None`
    /// keeps them. The default, 14 days, is twice Kafka's default topic and
    /// committed-offset retention: a consumer group that lost its offsets
    /// reads its topic again from the earliest message kept, and its inbox
    /// still remembers every one of those. (Saga replies and commands past
    /// it are still recognised, by the saga's state and by the command's
    /// own record.)
    pub inbox_retention: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            max_in_flight: 32,
            idle_interval: Duration::from_millis(200),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(30),
            gauge_interval: Duration::from_secs(5),
            retention: Some(Duration::from_secs(24 * 3600)),
            parked_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            inbox_retention: Some(Duration::from_secs(14 * 24 * 3600)),
        }
    }
}

/// Why a relay pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("publishing outbox row {sequence} failed: {source}")]
    Publish {
        sequence: i64,
        #[source]
        source: PublishError,
    },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What one relay pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayPass {
    pub published: usize,
    pub parked: usize,
    /// Partitions with pending rows that another relay held.
    pub busy_partitions: usize,
}

/// Publishes committed outbox rows through a [`Publisher`]. Clones share
/// what they know of unavailable destinations.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    publisher: Arc<dyn Publisher>,
    config: RelayConfig,
    held: Arc<Mutex<HashMap<String, Hold>>>,
}

/// A destination whose broker failed: left out until `until`; `backoff` is
/// the pause that ended there, doubled at the next failure.
#[derive(Debug, Clone, Copy)]
struct Hold {
    until: Instant,
    backoff: Duration,
}

/// What one partition's batch did.
#[derive(Debug, Default)]
struct BatchOutcome {
    published: usize,
    parked: usize,
    /// The first row a broker could not take, and why.
    failure: Option<(i64, PublishError)>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    pub fn new(pool: PgPool, publisher: Arc<dyn Publisher>, config: RelayConfig) -> Self {
        Self {
            pool,
            publisher,
            config,
            held: Arc::default(),
        }
    }

    /// Destinations left out of passes for now.
    fn held_destinations(&self) -> Vec<String> {
        let now = Instant::now();
        let held = lock(&self.held);
        held.iter()
            .filter(|(_, hold)| hold.until > now)
            .map(|(destination, _)| destination.clone())
            .collect()
    }

    /// Leaves `destination` out for a backoff twice the previous one.
    fn hold(&self, destination: &str) {
        let mut held = lock(&self.held);
        let backoff = held
            .get(destination)
            .map_or(self.config.initial_backoff, |hold| {
                (hold.backoff * 2).min(self.config.max_backoff)
            });
        let until = Instant::now() + jittered(backoff);
        held.insert(destination.to_owned(), Hold { until, backoff });
    }

    /// `destination` took a message: its backoff starts over.
    fn release(&self, destination: &str) {
        let mut held = lock(&self.held);
        held.remove(destination);
    }

    /// Relays until `cancel` fires: passes back to back while there is
    /// work, `idle_interval` apart when there is none, with exponential
    /// backoff after failures.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut backoff = self.config.initial_backoff;
        let mut last_gauge: Option<Instant> = None;
        let mut last_purge: Option<Instant> = None;
        while !cancel.is_cancelled() {
            if last_gauge.is_none_or(|at| at.elapsed() >= self.config.gauge_interval) {
                match pending_count(&self.pool).await {
                    Ok(pending) => metrics::gauge!(names::OUTBOX_PENDING).set(pending as f64),
                    Err(error) => tracing::warn!(%error, "cannot count pending outbox rows"),
                }
                last_gauge = Some(Instant::now());
            }
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_INTERVAL) {
                self.purge().await;
                last_purge = Some(Instant::now());
            }
            let pause = match self.relay_once().await {
                Ok(pass) => {
                    backoff = self.config.initial_backoff;
                    if pass.published + pass.parked > 0 {
                        continue;
                    }
                    self.config.idle_interval
                }
                Err(error) => {
                    let pause = jittered(backoff);
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "outbox relay backing off");
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    pause
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Housekeeping: deletes published and parked rows and inbox records
    /// past their retention.
    async fn purge(&self) {
        if let Some(retention) = self.config.retention
            && let Err(error) = purge_published(&self.pool, retention).await
        {
            tracing::warn!(%error, "cannot purge published outbox rows");
        }
        if let Some(retention) = self.config.parked_retention
            && let Err(error) = purge_parked(&self.pool, retention).await
        {
            tracing::warn!(%error, "cannot purge parked outbox rows");
        }
        if let Some(retention) = self.config.inbox_retention
            && let Err(error) = crate::inbox::purge_processed(&self.pool, retention).await
        {
            tracing::warn!(%error, "cannot purge inbox records");
        }
    }

    /// One pass: one batch from every partition that has pending rows (for
    /// destinations not held back) and that no other relay holds. Fails
    /// only when a broker failed and nothing could be published at all.
    pub async fn relay_once(&self) -> Result<RelayPass, RelayError> {
        let held = self.held_destinations();
        let mut partitions: Vec<i16> = sqlx::query_scalar(
            "SELECT p::int2 FROM generate_series(0, $1 - 1) AS p \
              WHERE EXISTS (SELECT 1 FROM outbox \
                             WHERE partition = p AND published_at IS NULL AND parked_at IS NULL \
                               AND NOT (destination = ANY($2)))",
        )
        .bind(i32::from(OUTBOX_PARTITIONS))
        .bind(&held)
        .fetch_all(&self.pool)
        .await?;
        if !partitions.is_empty() {
            let start = rand::random_range(0..partitions.len());
            partitions.rotate_left(start);
        }
        let mut pass = RelayPass::default();
        let mut failure = None;
        for partition in partitions {
            match self.relay_partition(partition).await? {
                None => pass.busy_partitions += 1,
                Some(batch) => {
                    pass.published += batch.published;
                    pass.parked += batch.parked;
                    failure = failure.or(batch.failure);
                }
            }
        }
        match failure {
            Some((sequence, source)) if pass.published + pass.parked == 0 => {
                Err(RelayError::Publish { sequence, source })
            }
            _ => Ok(pass),
        }
    }

    /// Publishes one batch of `partition` under its lock, leaving out held
    /// destinations. `None` when another relay holds the partition.
    async fn relay_partition(&self, partition: i16) -> Result<Option<BatchOutcome>, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(PARTITION_LOCK_CLASS)
            .bind(i32::from(partition))
            .fetch_one(&mut *transaction)
            .await?;
        if !locked {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT sequence, message_id, destination, message_key, headers, payload, created_at \
               FROM outbox \
              WHERE partition = $1 AND published_at IS NULL AND parked_at IS NULL \
                AND NOT (destination = ANY($3)) \
              ORDER BY sequence \
              LIMIT $2",
        )
        .bind(partition)
        .bind(i64::try_from(self.config.batch_size).unwrap_or(i64::MAX))
        .bind(self.held_destinations())
        .fetch_all(&mut *transaction)
        .await?;

        let messages = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
        let failed_destinations = Mutex::new(HashSet::new());
        // The chains' futures are built before they go into the stream: a
        // closure inside it would keep the relay's future from being `Send`.
        let chains: Vec<_> = chains_by_destination_and_key(&messages)
            .into_iter()
            .map(|chain| self.publish_chain(chain, &failed_destinations))
            .collect();
        let chains: Vec<Vec<_>> = stream::iter(chains)
            .buffer_unordered(self.config.max_in_flight.max(1))
            .collect()
            .await;
        let mut attempts: Vec<(i64, &OutboxMessage, Result<(), PublishError>)> =
            chains.into_iter().flatten().collect();
        attempts.sort_unstable_by_key(|(sequence, _, _)| *sequence);

        let mut outcome = BatchOutcome::default();
        let mut sequences: Vec<i64> = Vec::with_capacity(attempts.len());
        let mut results: Vec<&str> = Vec::with_capacity(attempts.len());
        let mut reasons: Vec<Option<String>> = Vec::with_capacity(attempts.len());
        let mut confirmed_destinations: HashSet<&str> = HashSet::new();
        for (sequence, message, result) in attempts {
            sequences.push(sequence);
            match result {
                Ok(()) => {
                    confirmed_destinations.insert(&message.destination);
                    outcome.published += 1;
                    results.push("published");
                    reasons.push(None);
                }
                Err(error @ PublishError::Rejected(_)) => {
                    outcome.parked += 1;
                    results.push("parked");
                    reasons.push(Some(error.to_string()));
                }
                Err(error @ PublishError::Unavailable(_)) => {
                    results.push("failed");
                    reasons.push(Some(error.to_string()));
                    outcome.failure.get_or_insert((sequence, error));
                }
            }
        }
        let failed_destinations = failed_destinations
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        for destination in &failed_destinations {
            self.hold(destination);
        }
        for destination in confirmed_destinations.difference(&failed_destinations) {
            self.release(destination);
        }

        sqlx::query(
            "UPDATE outbox \
                SET published_at = CASE WHEN tried.result = 'published' THEN now() END, \
                    parked_at = CASE WHEN tried.result = 'parked' THEN now() END, \
                    attempts = attempts + 1, \
                    last_error = tried.reason \
               FROM unnest($1::int8[], $2::text[], $3::text[]) AS tried(sequence, result, reason) \
              WHERE outbox.sequence = tried.sequence",
        )
        .bind(&sequences)
        .bind(&results)
        .bind(&reasons)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(outcome))
    }

    /// Publishes one destination and key's messages of a batch in order,
    /// each after the broker confirmed the one before. Stops at the first
    /// message its destination could not take, or at the next one once
    /// another chain found the destination down: later messages must not
    /// overtake it. Returns what each message it tried came to.
    async fn publish_chain<'m>(
        &self,
        chain: Vec<&'m (i64, OutboxMessage)>,
        failed_destinations: &Mutex<HashSet<&'m str>>,
    ) -> Vec<(i64, &'m OutboxMessage, Result<(), PublishError>)> {
        let mut attempts = Vec::with_capacity(chain.len());
        for (sequence, message) in chain {
            let destination = message.destination.as_str();
            if lock(failed_destinations).contains(destination) {
                break;
            }
            let result = self.publish_one(message).await;
            let unavailable = matches!(result, Err(PublishError::Unavailable(_)));
            attempts.push((*sequence, message, result));
            if unavailable {
                lock(failed_destinations).insert(destination);
                break;
            }
        }
        attempts
    }

    /// Publishes `message` within the publish timeout; records how long it
    /// took and, once confirmed, how long it waited in the outbox.
    async fn publish_one(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.config.publish_timeout,
            self.publisher.publish(message),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(PublishError::Unavailable(format!(
                "no confirmation within {:?}",
                self.config.publish_timeout
            ))),
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(PublishError::Rejected(_)) => "rejected",
            Err(PublishError::Unavailable(_)) => "unavailable",
        };
        metrics::histogram!(names::OUTBOX_PUBLISH_DURATION, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                let delay = (Utc::now() - message.created_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!(names::OUTBOX_DELIVERY_DELAY).record(delay.as_secs_f64());
            }
            Err(error @ PublishError::Rejected(_)) => tracing::error!(
                message_id = %message.id,
                destination = %message.destination,
                key = %message.key,
                %error,
                "broker rejected outbox message; parked"
            ),
            Err(error @ PublishError::Unavailable(_)) => tracing::warn!(
                destination = %message.destination,
                %error,
                "broker unavailable; holding the destination's messages back"
            ),
        }
        result
    }
}

/// A batch's messages split by destination and key, each chain in the
/// batch's order, the chains in the order of their first message.
fn chains_by_destination_and_key(
    messages: &[(i64, OutboxMessage)],
) -> Vec<Vec<&(i64, OutboxMessage)>> {
    let mut chains: Vec<Vec<&(i64, OutboxMessage)>> = Vec::new();
    let mut chain_of: HashMap<(&str, &str), usize> = HashMap::new();
    for entry @ (_, message) in messages {
        let index = *chain_of
            .entry((&message.destination, &message.key))
            .or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
        chains[index].push(entry);
    }
    chains
}

/// A poisoned lock's data is still whole here: every critical section is a
/// single map or set operation.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<(i64, OutboxMessage), OutboxError> {
    let sequence: i64 = row.try_get("sequence")?;
    let headers: serde_json::Value = row.try_get("headers")?;
    let headers = serde_json::from_value(headers).map_err(|error| OutboxError::Corrupt {
        sequence,
        reason: format!("headers: {error}"),
    })?;
    Ok((
        sequence,
        OutboxMessage {
            id: row.try_get("message_id")?,
            destination: row.try_get("destination")?,
            key: row.try_get("message_key")?,
            headers,
            payload: row.try_get("payload")?,
            created_at: row.try_get("created_at")?,
        },
    ))
}

/// How often the relay deletes what is past its retention.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Deletes rows published more than `retention` ago; returns how many.
pub async fn purge_published(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    delete_older_than(
        pool,
        "DELETE FROM outbox WHERE published_at < now() - $1 * interval '1 millisecond'",
        retention,
    )
    .await
}

/// Deletes rows parked more than `retention` ago; returns how many.
pub async fn purge_parked(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    delete_older_than(
        pool,
        "DELETE FROM outbox WHERE parked_at < now() - $1 * interval '1 millisecond'",
        retention,
    )
    .await
}

/// Runs a housekeeping `delete` whose `$1` is `retention` in milliseconds;
/// returns how many rows went.
pub(crate) async fn delete_older_than(
    pool: &PgPool,
    delete: &'static str,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(delete)
        .bind(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// ±15 % jitter, so relays that failed together do not retry in lockstep.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(rand::random_range(0.85..1.15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        // Pinned values: changing the hash would reorder keys with pending rows.
        assert_eq!(partition_of(""), (0xcbf2_9ce4_8422_2325_u64 % 16) as i16);
        assert_eq!(partition_of("order-1"), partition_of("order-1"));
        let mut seen = std::collections::HashSet::new();
        for index in 0..1000 {
            let partition = partition_of(&format!("key-{index}"));
            assert!((0..OUTBOX_PARTITIONS).contains(&partition));
            seen.insert(partition);
        }
        assert_eq!(
            seen.len(),
            OUTBOX_PARTITIONS as usize,
            "keys spread over every partition"
        );
    }

    #[test]
    fn json_messages_carry_their_content_type() -> Result<(), serde_json::Error> {
        let message = OutboxMessage::json("topic", "k", &serde_json::json!({"a": 1}))?;
        assert_eq!(message.payload, br#"{"a":1}"#);
        assert_eq!(
            message.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        Ok(())
    }
}
