//! The append-only event log: appends with optimistic concurrency, reads per
//! stream and in global order.
//!
//! # Appends
//!
//! An append is **one SQL statement**: it reads the stream's head, checks the
//! expected version and inserts every event, so it either writes all events
//! or none, and through the pool it costs a single round trip (the statement
//! is its own transaction). [`EventStore::append_in`] runs the same statement
//! on a caller's connection so a service can append events and write outbox
//! rows in one transaction.
//!
//! Writers of one stream are serialised by a transaction-scoped advisory
//! lock on the stream (hash collisions only cost a little waiting), taken
//! before the head is read:
//!
//! - [`append_in`](EventStore::append_in) takes it in a statement of its own,
//!   so under READ COMMITTED its append reads the head *after* every earlier
//!   writer of the stream has committed and never collides with one.
//! - The single-statement pool path takes it inside the statement, whose
//!   snapshot is older than the lock. Holding the lock still makes later
//!   `append_in` writers wait for it; and if it collides with an append that
//!   committed in between, `UNIQUE (stream_id, version)` refuses the insert.
//!   The collision is reported as [`EventStoreError::ConcurrencyConflict`]
//!   with the actual version re-read, or, for [`ExpectedVersion::Any`],
//!   retried as a transaction on the first path.
//!
//! Either way nothing is written unless the stream was at the expected
//! version, and the versions of a stream have no gaps.
//!
//! # Global order
//!
//! See the crate documentation for why the global order is
//! `(transaction_id, position)` rather than `position` alone. One consequence
//! shows up here: an append whose transaction took its id *before* the
//! stream's latest append did (a long transaction that wrote something else
//! first) would sort before the events it follows, so it is refused with
//! [`EventStoreError::TransactionTooOld`]; retrying in a new transaction
//! succeeds.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::metric_names as names;

/// The fault point reached before every append.
pub const APPEND_FAULT_POINT: &str = "eventstore.append";

/// Advisory-lock class (first key) for per-stream append locks: `"es"` in ASCII.
const STREAM_LOCK_CLASS: i32 = 0x6573;

/// How often an [`ExpectedVersion::Any`] append through the pool retries
/// under the stream lock after losing a race to a concurrent writer (only a
/// writer in a REPEATABLE READ transaction can make the locked path lose).
const ANY_VERSION_RETRIES: u32 = 5;

/// What the writer believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream's latest event must have exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    /// The version the stream must be at, if any.
    pub fn required(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::NoStream => Some(0),
            Self::Exact(version) => Some(version),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// A point in the global order: the writing transaction's id, then the
/// event's position within the table.
///
/// Ordered lexicographically, which is the order [`EventStore::read_all`]
/// returns events in. It doubles as the consistency token for
/// read-your-writes: a write returns the position of its last event, and a
/// query waits until a projection's checkpoint reaches it. Its text form is
/// `"<transaction_id>.<position>"`, safe to carry in a header or a URL.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct GlobalPosition {
    /// `pg_current_xact_id()` of the transaction that appended the event.
    pub transaction_id: u64,
    /// The event's identity column, unique across the table.
    pub position: i64,
}

impl GlobalPosition {
    /// Before every event.
    pub const START: Self = Self {
        transaction_id: 0,
        position: 0,
    };
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.position)
    }
}

/// A global position's text form was not `"<u64>.<i64>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a global position (expected \"<transaction_id>.<position>\")")]
pub struct ParsePositionError(String);

impl FromStr for GlobalPosition {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParsePositionError(text.to_owned());
        let (transaction_id, position) = text.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            transaction_id: transaction_id.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        })
    }
}

/// Who caused an append and in which trace; stored with every event of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Ties together everything done for one business request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message or command that caused these events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The authenticated user on whose behalf the events were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// W3C `traceparent` of the writing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` of the writing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl EventMetadata {
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    pub fn with_causation_id(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Records the current tracing span's W3C trace context (through the
    /// globally installed OpenTelemetry propagator), so a projection or relay
    /// can continue the trace. Leaves the fields empty when no propagator or
    /// no sampled span is active.
    pub fn with_current_trace_context(mut self) -> Self {
        use platform::telemetry::SpanTrace;
        let context = tracing::Span::current().trace_context();
        let mut carrier = std::collections::HashMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut carrier);
        });
        self.traceparent = carrier.remove("traceparent");
        self.tracestate = carrier
            .remove("tracestate")
            .filter(|state| !state.is_empty());
        self
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v7 by default), handy for consumers' deduplication.
    pub event_id: Uuid,
    /// Name of the event, e.g. `"OrderPlaced"`.
    pub event_type: String,
    /// Version of the payload's shape, starting at 1; readers upcast older ones.
    pub schema_version: i32,
    /// The event's data.
    pub payload: Value,
}

impl NewEvent {
    /// An event with a fresh v7 id and schema version 1.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
        }
    }

    pub fn with_schema_version(mut self, schema_version: i32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    /// Position within its stream, starting at 1.
    pub version: i64,
    /// Position in the global order.
    pub position: GlobalPosition,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

/// What a successful append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's new version (the last appended event's version).
    pub version: i64,
    /// Global position of the last appended event: the consistency token to
    /// hand to [`crate::projection::wait_for`].
    pub position: GlobalPosition,
}

/// Why an event-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error(
        "concurrency conflict on stream {stream_id}: expected version {expected}, actual {actual}"
    )]
    ConcurrencyConflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// The transaction took its id before the stream's latest append did, so
    /// its events would sort before the ones they follow; nothing was
    /// written. Retry in a new transaction.
    #[error(
        "transaction is older than the latest append to stream {stream_id}; retry in a new transaction"
    )]
    TransactionTooOld { stream_id: String },
    /// An append needs at least one event.
    #[error("nothing to append to stream {stream_id}")]
    NoEvents { stream_id: String },
    /// The `eventstore.append` fault point fired.
    #[error(transparent)]
    Fault(#[from] platform::faults::InjectedFault),
    /// Metadata could not be encoded.
    #[error("cannot encode event metadata: {0}")]
    Metadata(#[source] serde_json::Error),
    /// A stored row did not decode.
    #[error("corrupt event row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl EventStoreError {
    /// Whether re-reading the stream and retrying the command can succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::ConcurrencyConflict { .. } | Self::TransactionTooOld { .. }
        )
    }
}

/// Handle to the event log in the service's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
    notify_channel: Option<String>,
}

/// Postgres `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// The append statement. `$2` is the required version (NULL for any).
/// The head row is read once; `in_order` is false when this transaction is
/// older than the stream's latest append (see the module docs).
const APPEND_SQL: &str = r#"
WITH stream_lock AS (
    SELECT pg_advisory_xact_lock($8, hashtext($1))
), last_event AS (
    SELECT version, transaction_id
      FROM es_events, stream_lock
     WHERE stream_id = $1
     ORDER BY version DESC
     LIMIT 1
), head AS (
    SELECT coalesce((SELECT version FROM last_event), 0) AS version,
           coalesce((SELECT transaction_id FROM last_event) <= pg_current_xact_id(), true) AS in_order
), inserted AS (
    INSERT INTO es_events (stream_id, version, event_id, event_type, schema_version, payload, metadata)
    SELECT $1, head.version + e.ordinal, e.event_id, e.event_type, e.schema_version, e.payload, $7
      FROM head,
           UNNEST($3::uuid[], $4::text[], $5::int4[], $6::jsonb[])
               WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, ordinal)
     WHERE head.in_order AND ($2::int8 IS NULL OR head.version = $2)
     ORDER BY e.ordinal
    RETURNING version, position, transaction_id
)
SELECT (SELECT version FROM head) AS head_version,
       (SELECT in_order FROM head) AS in_order,
       (SELECT max(version) FROM inserted) AS new_version,
       (SELECT max(position) FROM inserted) AS last_position,
       (SELECT transaction_id FROM inserted LIMIT 1)::text AS transaction_id_text
"#;

const EVENT_COLUMNS: &str = "position, transaction_id::text AS transaction_id_text, stream_id, version, event_id, \
     event_type, schema_version, payload, metadata, recorded_at";

impl EventStore {
    /// A store on the service's pool. The pool's database must have been
    /// migrated with [`crate::migrate`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            notify_channel: None,
        }
    }

    /// Also sends `NOTIFY <channel>` with every append, so projection runners
    /// configured to listen on it wake up at once instead of at their next
    /// poll. Off by default: Postgres serialises the commits of notifying
    /// transactions, which caps append throughput under concurrency.
    pub fn with_notifications(mut self, channel: impl Into<String>) -> Self {
        self.notify_channel = Some(channel.into());
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` to `stream_id` if it is at the `expected` version, all
    /// or nothing, in a transaction of its own. Returns the new version and
    /// the global position of the last event.
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &EventMetadata,
    ) -> Result<Appended, EventStoreError> {
        let span = append_span(stream_id, expected, events.len());
        async {
            let started = Instant::now();
            let result = self
                .append_with_retry(stream_id, expected, events, metadata)
                .await;
            record_append(started.elapsed(), &result);
            result
        }
        .instrument(span)
        .await
    }

    async fn append_with_retry(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &EventMetadata,
    ) -> Result<Appended, EventStoreError> {
        let mut connection = self.pool.acquire().await?;
        let first = self
            .append_on(&mut connection, stream_id, expected, events, metadata, true)
            .await;
        match first {
            Err(EventStoreError::ConcurrencyConflict { .. })
                if expected == ExpectedVersion::Any => {}
            other => return other,
        }
        // Lost a race to a concurrent writer of the stream: the single
        // statement's snapshot predates that writer's commit. Retry as a
        // transaction that takes the stream lock in a statement of its own,
        // so its append reads the head after every earlier writer committed.
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::debug!(
                stream_id,
                attempt,
                "lost an append race, retrying under the stream lock"
            );
            let mut transaction = self.pool.begin().await?;
            lock_stream(&mut transaction, stream_id).await?;
            let result = self
                .append_on(
                    &mut transaction,
                    stream_id,
                    expected,
                    events,
                    metadata,
                    false,
                )
                .await;
            match result {
                Ok(appended) => {
                    transaction.commit().await?;
                    return Ok(appended);
                }
                Err(EventStoreError::ConcurrencyConflict { .. })
                    if attempt < ANY_VERSION_RETRIES => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Like [`append`](Self::append), on the caller's connection, so the
    /// events commit or roll back with the caller's other writes (outbox
    /// messages, snapshots, plain rows). Run it inside a transaction (pass
    /// `&mut *transaction`). After any error the caller must roll back: a
    /// lost race is detected by a unique violation, which aborts the
    /// Postgres transaction.
    pub async fn append_in(
        &self,
        connection: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &EventMetadata,
    ) -> Result<Appended, EventStoreError> {
        let span = append_span(stream_id, expected, events.len());
        async {
            let started = Instant::now();
            let result = async {
                // Take the stream lock in a statement of its own: under READ
                // COMMITTED the append statement's snapshot is then taken
                // after a concurrent writer of this stream has committed, so
                // it sees that writer's events instead of colliding with them.
                lock_stream(connection, stream_id).await?;
                self.append_on(connection, stream_id, expected, events, metadata, false)
                    .await
            }
            .await;
            record_append(started.elapsed(), &result);
            result
        }
        .instrument(span)
        .await
    }

    /// Runs the append statement. `autocommit` says whether the statement is
    /// its own transaction, in which case the connection is still usable
    /// after a unique violation and the actual version can be read.
    async fn append_on(
        &self,
        connection: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &EventMetadata,
        autocommit: bool,
    ) -> Result<Appended, EventStoreError> {
        if events.is_empty() {
            return Err(EventStoreError::NoEvents {
                stream_id: stream_id.to_owned(),
            });
        }
        platform::faults::inject(APPEND_FAULT_POINT).await?;
        let metadata = serde_json::to_value(metadata).map_err(EventStoreError::Metadata)?;
        let event_ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
        let event_types: Vec<&str> = events
            .iter()
            .map(|event| event.event_type.as_str())
            .collect();
        let schema_versions: Vec<i32> = events.iter().map(|event| event.schema_version).collect();
        let payloads: Vec<Json<&Value>> = events.iter().map(|event| Json(&event.payload)).collect();
        let outcome = sqlx::query(APPEND_SQL)
            .bind(stream_id)
            .bind(expected.required())
            .bind(&event_ids)
            .bind(&event_types)
            .bind(&schema_versions)
            .bind(&payloads)
            .bind(&metadata)
            .bind(STREAM_LOCK_CLASS)
            .fetch_one(&mut *connection)
            .await;
        let row = match outcome {
            Ok(row) => row,
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(UNIQUE_VIOLATION) =>
            {
                // A concurrent append of the same stream committed first.
                let actual = if autocommit {
                    stream_version_on(connection, stream_id).await?
                } else {
                    // The transaction is aborted; the winner wrote at least
                    // the version this append wanted.
                    expected.required().map_or(1, |version| version + 1)
                };
                return Err(EventStoreError::ConcurrencyConflict {
                    stream_id: stream_id.to_owned(),
                    expected,
                    actual,
                });
            }
            Err(error) => return Err(error.into()),
        };
        let head_version: i64 = row.try_get("head_version")?;
        let in_order: bool = row.try_get("in_order")?;
        let new_version: Option<i64> = row.try_get("new_version")?;
        let last_position: Option<i64> = row.try_get("last_position")?;
        let transaction_id: Option<String> = row.try_get("transaction_id_text")?;
        match (new_version, last_position, transaction_id) {
            (Some(version), Some(position), Some(transaction_id)) => {
                let transaction_id = parse_transaction_id(&transaction_id)?;
                if let Some(channel) = &self.notify_channel {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(channel)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(Appended {
                    version,
                    position: GlobalPosition {
                        transaction_id,
                        position,
                    },
                })
            }
            _ if !in_order => Err(EventStoreError::TransactionTooOld {
                stream_id: stream_id.to_owned(),
            }),
            _ => Err(EventStoreError::ConcurrencyConflict {
                stream_id: stream_id.to_owned(),
                expected,
                actual: head_version,
            }),
        }
    }

    /// The stream's current version (0 when it has no events).
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64, EventStoreError> {
        let mut connection = self.pool.acquire().await?;
        stream_version_on(&mut connection, stream_id).await
    }

    /// Events of one stream with `version >= from_version`, in version order.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let mut connection = self.pool.acquire().await?;
        read_stream_on(&mut connection, stream_id, from_version).await
    }

    /// Up to `batch` events after `after` in the global order.
    ///
    /// Only events whose transactions are older than every transaction
    /// still running are returned, so a transaction that commits later can
    /// never add an event before one already returned: a subscriber that
    /// resumes from the last position it saw never skips an event.
    pub async fn read_all(
        &self,
        after: GlobalPosition,
        batch: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let mut connection = self.pool.acquire().await?;
        read_all_on(&mut connection, after, batch).await
    }
}

/// Takes the stream's append lock until the end of the transaction.
async fn lock_stream(connection: &mut PgConnection, stream_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(STREAM_LOCK_CLASS)
        .bind(stream_id)
        .execute(connection)
        .await?;
    Ok(())
}

fn append_span(stream_id: &str, expected: ExpectedVersion, event_count: usize) -> tracing::Span {
    tracing::info_span!(
        "eventstore.append",
        otel.kind = "internal",
        stream_id,
        expected_version = %expected,
        event_count,
    )
}

fn record_append(elapsed: Duration, result: &Result<Appended, EventStoreError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(error) if error.is_conflict() => "conflict",
        Err(_) => "error",
    };
    metrics::histogram!(names::APPEND_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
    if let Err(error) = result {
        if error.is_conflict() {
            tracing::debug!(%error, "append refused");
        } else {
            tracing::warn!(%error, "append failed");
        }
    }
}

pub(crate) async fn stream_version_on(
    connection: &mut PgConnection,
    stream_id: &str,
) -> Result<i64, EventStoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM es_events WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(connection)
            .await?;
    Ok(version.unwrap_or(0))
}

pub(crate) async fn read_stream_on(
    connection: &mut PgConnection,
    stream_id: &str,
    from_version: i64,
) -> Result<Vec<RecordedEvent>, EventStoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM es_events WHERE stream_id = $1 AND version >= $2 ORDER BY version"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream_id)
        .bind(from_version)
        .fetch_all(connection)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

pub(crate) async fn read_all_on(
    connection: &mut PgConnection,
    after: GlobalPosition,
    batch: usize,
) -> Result<Vec<RecordedEvent>, EventStoreError> {
    // The snapshot's xmin is computed once (an InitPlan), not per row.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM es_events \
          WHERE (transaction_id, position) > ($1::text::xid8, $2) \
            AND transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot())) \
          ORDER BY transaction_id, position \
          LIMIT $3"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(i64::try_from(batch).unwrap_or(i64::MAX))
        .fetch_all(connection)
        .await?
        .iter()
        .map(decode_event)
        .collect()
}

pub(crate) fn parse_transaction_id(text: &str) -> Result<u64, EventStoreError> {
    text.parse()
        .map_err(|_| EventStoreError::Corrupt(format!("transaction id {text:?} is not a number")))
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent, EventStoreError> {
    let transaction_id: String = row.try_get("transaction_id_text")?;
    let metadata: Value = row.try_get("metadata")?;
    Ok(RecordedEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        position: GlobalPosition {
            transaction_id: parse_transaction_id(&transaction_id)?,
            position: row.try_get("position")?,
        },
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: row.try_get("payload")?,
        metadata: serde_json::from_value(metadata)
            .map_err(|error| EventStoreError::Corrupt(format!("metadata: {error}")))?,
        recorded_at: row.try_get("recorded_at")?,
    })
}
