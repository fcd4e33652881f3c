//! Event-sourced aggregates: a small trait for the domain, and a repository
//! that loads (snapshot + tail) and saves with optimistic concurrency.
//!
//! The domain side stays free of I/O: an [`Aggregate`] only folds events
//! into its state and turns a command into new events (or a domain error).
//! Everything about storage — stream naming, expected versions, upcasting,
//! snapshots — lives in [`Repository`], so a command handler reads as
//! `load → handle → save`.
//!
//! **Snapshots** are a cache, never the truth: one is written in the same
//! transaction as the append that crosses a multiple of the configured
//! interval (so a snapshot can never be ahead of the events), and a load
//! ignores any snapshot it cannot use — one taken with a different
//! [`Aggregate::SNAPSHOT_SCHEMA_VERSION`] or that no longer deserialises —
//! and replays the whole stream instead. Changing the state's shape is
//! therefore safe: bump the snapshot schema version.

use std::marker::PhantomData;
use std::num::NonZeroU64;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::store::{
    Appended, EventMetadata, EventStore, EventStoreError, ExpectedVersion, NewEvent, read_stream_on,
};
use crate::upcast::{UpcastError, Upcasters};

/// A domain event that knows how it is stored.
pub trait DomainEvent: Sized + Send + Sync {
    /// The stored `event_type`, e.g. `"OrderPlaced"`.
    fn event_type(&self) -> &'static str;

    /// The schema version of the shape [`to_payload`](Self::to_payload)
    /// writes now.
    fn schema_version(&self) -> i32 {
        1
    }

    /// The payload to store.
    fn to_payload(&self) -> Result<Value, serde_json::Error>;

    /// Rebuilds an event from its stored type and payload, already upcast to
    /// the newest schema version the registered upcasters know.
    fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: Value,
    ) -> Result<Self, EventDecodeError>;
}

/// Why a stored event could not become a domain event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event type {event_type:?} has no decoder for schema version {schema_version}")]
    UnsupportedSchemaVersion {
        event_type: String,
        schema_version: i32,
    },
    #[error("payload does not match the event's shape: {0}")]
    Payload(#[from] serde_json::Error),
}

/// The write model of one consistency boundary.
pub trait Aggregate:
    Default + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Stream category: an aggregate with id `42` lives in stream
    /// `"{CATEGORY}-42"`.
    const CATEGORY: &'static str;

    /// Version of the serialised state's shape; snapshots written with
    /// another version are ignored.
    const SNAPSHOT_SCHEMA_VERSION: i32 = 1;

    type Event: DomainEvent;
    type Command: Send;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state. Must not fail: the event happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides what happens: the events to record, or why not.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// When the repository writes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// Always replay the whole stream.
    #[default]
    Never,
    /// Snapshot whenever the stream's version crosses a multiple of this.
    Every(NonZeroU64),
}

/// An aggregate's state and the version it was loaded at.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedAggregate<A> {
    /// The aggregate's id (the stream id without the category).
    pub id: String,
    pub state: A,
    /// Version of the last event folded into `state`; 0 for a new aggregate.
    pub version: i64,
}

/// Why loading or saving an aggregate failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(transparent)]
    Store(#[from] EventStoreError),
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    #[error("event {version} of stream {stream_id} does not decode: {source}")]
    Decode {
        stream_id: String,
        version: i64,
        #[source]
        source: EventDecodeError,
    },
    #[error("cannot encode {event_type} event: {source}")]
    Encode {
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the snapshot: {0}")]
    Snapshot(#[source] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl RepositoryError {
    /// Whether another writer got there first: reload and retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(error) if error.is_conflict())
    }
}

/// Why a command did not produce stored events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command; nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Loads and saves aggregates of type `A` from an [`EventStore`].
pub struct Repository<A> {
    store: EventStore,
    upcasters: Upcasters,
    snapshots: SnapshotPolicy,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            upcasters: self.upcasters.clone(),
            snapshots: self.snapshots,
            aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("upcasters", &self.upcasters)
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository without upcasters or snapshots.
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            upcasters: Upcasters::new(),
            snapshots: SnapshotPolicy::Never,
            aggregate: PhantomData,
        }
    }

    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// The stream holding aggregate `id`.
    pub fn stream_id(id: &str) -> String {
        format!("{}-{id}", A::CATEGORY)
    }

    /// The aggregate's current state: the latest usable snapshot plus the
    /// events after it. A new aggregate loads as `A::default()` at version 0.
    pub async fn load(&self, id: &str) -> Result<LoadedAggregate<A>, RepositoryError> {
        let mut connection = self.store.pool().acquire().await?;
        self.load_on(&mut connection, id).await
    }

    /// [`load`](Self::load) on the caller's connection (e.g. inside the
    /// transaction that will save).
    pub async fn load_on(
        &self,
        connection: &mut PgConnection,
        id: &str,
    ) -> Result<LoadedAggregate<A>, RepositoryError> {
        let stream_id = Self::stream_id(id);
        let (mut state, mut version) = match self.snapshots {
            SnapshotPolicy::Never => (A::default(), 0),
            SnapshotPolicy::Every(_) => self
                .read_snapshot(connection, &stream_id)
                .await?
                .unwrap_or_default(),
        };
        for recorded in read_stream_on(connection, &stream_id, version + 1).await? {
            let recorded = self.upcasters.upcast_event(recorded)?;
            let event = A::Event::from_payload(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload,
            )
            .map_err(|source| RepositoryError::Decode {
                stream_id: stream_id.clone(),
                version: recorded.version,
                source,
            })?;
            state.apply(&event);
            version = recorded.version;
        }
        Ok(LoadedAggregate {
            id: id.to_owned(),
            state,
            version,
        })
    }

    async fn read_snapshot(
        &self,
        connection: &mut PgConnection,
        stream_id: &str,
    ) -> Result<Option<(A, i64)>, RepositoryError> {
        let row = sqlx::query(
            "SELECT version, schema_version, state FROM es_snapshots WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_optional(connection)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let schema_version: i32 = row.try_get("schema_version")?;
        if schema_version != A::SNAPSHOT_SCHEMA_VERSION {
            tracing::debug!(
                stream_id,
                schema_version,
                "snapshot has an old shape, replaying"
            );
            return Ok(None);
        }
        let version: i64 = row.try_get("version")?;
        let state: Value = row.try_get("state")?;
        match serde_json::from_value(state) {
            Ok(state) => Ok(Some((state, version))),
            Err(error) => {
                tracing::warn!(stream_id, %error, "snapshot does not deserialise, replaying");
                Ok(None)
            }
        }
    }

    /// Appends `events` expecting the aggregate's loaded version, then folds
    /// them into `aggregate`. Writes a snapshot in the same transaction when
    /// one is due. A stale `aggregate` fails with a conflict
    /// ([`RepositoryError::is_conflict`]) and writes nothing.
    pub async fn save(
        &self,
        aggregate: &mut LoadedAggregate<A>,
        events: Vec<A::Event>,
        metadata: &EventMetadata,
    ) -> Result<Appended, RepositoryError> {
        let new_events = encode(&events)?;
        if new_events.is_empty() {
            return Err(EventStoreError::NoEvents {
                stream_id: Self::stream_id(&aggregate.id),
            }
            .into());
        }
        let next_version = aggregate.version + new_events.len() as i64;
        let appended = if self.snapshot_due(aggregate.version, next_version) {
            let mut transaction = self.store.pool().begin().await?;
            let appended = self
                .append_and_snapshot(&mut transaction, aggregate, &events, &new_events, metadata)
                .await?;
            transaction.commit().await?;
            appended
        } else {
            self.store
                .append(
                    &Self::stream_id(&aggregate.id),
                    expected(aggregate.version),
                    &new_events,
                    metadata,
                )
                .await?
        };
        fold(aggregate, &events, appended.version);
        Ok(appended)
    }

    /// [`save`](Self::save) on the caller's transaction, so outbox messages
    /// or other rows commit atomically with the events. `aggregate` is
    /// advanced at once; if the caller then rolls back, reload it.
    pub async fn save_in(
        &self,
        connection: &mut PgConnection,
        aggregate: &mut LoadedAggregate<A>,
        events: Vec<A::Event>,
        metadata: &EventMetadata,
    ) -> Result<Appended, RepositoryError> {
        let new_events = encode(&events)?;
        let appended = self
            .append_and_snapshot(connection, aggregate, &events, &new_events, metadata)
            .await?;
        fold(aggregate, &events, appended.version);
        Ok(appended)
    }

    async fn append_and_snapshot(
        &self,
        connection: &mut PgConnection,
        aggregate: &LoadedAggregate<A>,
        events: &[A::Event],
        new_events: &[NewEvent],
        metadata: &EventMetadata,
    ) -> Result<Appended, RepositoryError> {
        let stream_id = Self::stream_id(&aggregate.id);
        let appended = self
            .store
            .append_in(
                connection,
                &stream_id,
                expected(aggregate.version),
                new_events,
                metadata,
            )
            .await?;
        if self.snapshot_due(aggregate.version, appended.version) {
            // Fold on a copy of the state: the caller's aggregate advances
            // only once the save has succeeded.
            let mut next = aggregate.state.clone();
            for event in events {
                next.apply(event);
            }
            let state = serde_json::to_value(&next).map_err(RepositoryError::Snapshot)?;
            sqlx::query(
                "INSERT INTO es_snapshots (stream_id, version, schema_version, state) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (stream_id) DO UPDATE \
                    SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version, \
                        state = EXCLUDED.state, taken_at = now() \
                  WHERE es_snapshots.version < EXCLUDED.version \
                     OR es_snapshots.schema_version <> EXCLUDED.schema_version",
            )
            .bind(&stream_id)
            .bind(appended.version)
            .bind(A::SNAPSHOT_SCHEMA_VERSION)
            .bind(&state)
            .execute(&mut *connection)
            .await?;
        }
        Ok(appended)
    }

    fn snapshot_due(&self, from_version: i64, to_version: i64) -> bool {
        match self.snapshots {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::Every(interval) => {
                let interval = i64::try_from(interval.get()).unwrap_or(i64::MAX);
                from_version / interval != to_version / interval
            }
        }
    }

    /// Load, handle, save: the whole command path with optimistic
    /// concurrency. A command that yields no events writes nothing and
    /// returns `None`.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(LoadedAggregate<A>, Option<Appended>), CommandError<A::Error>> {
        let mut aggregate = self.load(id).await?;
        let events = aggregate
            .state
            .handle(command)
            .map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok((aggregate, None));
        }
        let appended = self.save(&mut aggregate, events, metadata).await?;
        Ok((aggregate, Some(appended)))
    }
}

fn expected(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

fn encode<E: DomainEvent>(events: &[E]) -> Result<Vec<NewEvent>, RepositoryError> {
    events
        .iter()
        .map(|event| {
            let payload = event
                .to_payload()
                .map_err(|source| RepositoryError::Encode {
                    event_type: event.event_type(),
                    source,
                })?;
            Ok(NewEvent::new(event.event_type(), payload)
                .with_schema_version(event.schema_version()))
        })
        .collect()
}

fn fold<A: Aggregate>(aggregate: &mut LoadedAggregate<A>, events: &[A::Event], version: i64) {
    for event in events {
        aggregate.state.apply(event);
    }
    aggregate.version = version;
}
