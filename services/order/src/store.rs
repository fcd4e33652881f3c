//! The write side in Postgres: order streams in the event store, the
//! announcements they cause in the outbox, and PlaceOrder's idempotency
//! records.
//!
//! Every change to an order goes through [`Store::record_in`]: load the
//! aggregate on the caller's transaction, decide the command, append the
//! events with the expected version, and enqueue the messages announcing
//! them — all or nothing, so an event is announced if and only if it was
//! recorded. Callers choose the transaction: a use case's own (with the
//! idempotency record and the saga's start), a saga step's, or the saga
//! engine's final one (through its hooks).
//!
//! Concurrent writers to one order (the customer cancelling while a saga
//! records) are serialised by the stream's expected version: the loser gets
//! [`OrderError::Conflict`] and [`Store::record`] simply decides again on
//! the fresh state.

use eventstore::{Aggregate, Appended, EventMetadata, EventStore, GlobalPosition, Repository};
use sqlx::{PgConnection, PgPool};

use crate::domain::events::OrderEvent;
use crate::domain::ids::{CustomerId, OrderId};
use crate::domain::order::{Order, OrderCommand, PlacedOrder};
use crate::domain::request::{IdempotencyKey, RequestFingerprint};
use crate::error::OrderError;
use crate::messaging::outbox::Announcements;

/// How often a command is decided again after losing a race with another
/// write to the order. Each try reads the fresh state, so it needs no
/// backoff: the race it lost is over.
pub const CONFLICT_ATTEMPTS: u32 = 5;

/// What recording a command did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The order after the command.
    pub order: PlacedOrder,
    /// The new events; empty when the command changed nothing.
    pub events: Vec<OrderEvent>,
    /// Where the last new event sits in the log: the consistency token.
    pub appended: Option<Appended>,
}

/// A PlaceOrder request recorded under its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub order_id: OrderId,
    pub fingerprint: RequestFingerprint,
}

/// Handle to the write side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    repository: Repository<Order>,
    announcements: Announcements,
}

impl Store {
    pub fn new(pool: PgPool, announcements: Announcements) -> Self {
        Self {
            repository: Repository::new(EventStore::new(pool.clone())),
            pool,
            announcements,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The order as its events say now.
    pub async fn load(&self, id: OrderId) -> Result<Option<PlacedOrder>, OrderError> {
        let loaded = self.repository.load(&id.to_string()).await?;
        Ok(loaded.state.placed().cloned())
    }

    /// Decides `command` against the order and records the outcome on
    /// `connection`: events appended at the expected version, their
    /// announcements enqueued. A command that changes nothing writes nothing.
    pub async fn record_in(
        &self,
        connection: &mut PgConnection,
        id: OrderId,
        command: OrderCommand,
        metadata: &EventMetadata,
    ) -> Result<Recorded, OrderError> {
        let mut loaded = self.repository.load_on(connection, &id.to_string()).await?;
        let events = loaded
            .state
            .handle(command)
            .map_err(|rule| OrderError::rule(id, rule))?;
        let appended = if events.is_empty() {
            None
        } else {
            Some(
                self.repository
                    .save_in(connection, &mut loaded, events.clone(), metadata)
                    .await?,
            )
        };
        let order = loaded
            .state
            .placed()
            .cloned()
            .ok_or(OrderError::OrderNotFound(id))?;
        let messages = self.announcements.for_events(&order, &events)?;
        eventstore::enqueue_all(connection, &messages).await?;
        Ok(Recorded {
            order,
            events,
            appended,
        })
    }

    /// [`Store::record_in`] in a transaction of its own, decided again on
    /// the fresh state when a concurrent write got there first.
    pub async fn record(
        &self,
        id: OrderId,
        command: OrderCommand,
        metadata: &EventMetadata,
    ) -> Result<Recorded, OrderError> {
        let mut attempt = 1;
        loop {
            let mut transaction = self.pool.begin().await?;
            match self
                .record_in(&mut transaction, id, command.clone(), metadata)
                .await
            {
                Ok(recorded) => {
                    transaction.commit().await?;
                    return Ok(recorded);
                }
                Err(OrderError::Conflict(_)) if attempt < CONFLICT_ATTEMPTS => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    /// The request recorded under `customer`'s `key`, if any.
    pub async fn request(
        &self,
        customer: CustomerId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredRequest>, OrderError> {
        let row: Option<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT order_id, fingerprint FROM order_requests \
              WHERE customer_id = $1 AND idempotency_key = $2",
        )
        .bind(customer.as_uuid())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(order_id, fingerprint)| StoredRequest {
            order_id: OrderId::from_uuid(order_id),
            fingerprint: RequestFingerprint::from_stored(fingerprint),
        }))
    }

    /// Records `customer`'s `key` for `order_id` on `connection`. `false`
    /// when the key is taken (a concurrent request with the same key
    /// committed first; the insert waits for it): roll back and answer from
    /// [`Store::request`].
    pub async fn claim_request_in(
        &self,
        connection: &mut PgConnection,
        customer: CustomerId,
        key: &IdempotencyKey,
        order_id: OrderId,
        fingerprint: &RequestFingerprint,
    ) -> Result<bool, OrderError> {
        let inserted = sqlx::query(
            "INSERT INTO order_requests (customer_id, idempotency_key, order_id, fingerprint) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
        )
        .bind(customer.as_uuid())
        .bind(key.as_str())
        .bind(order_id.as_uuid())
        .bind(fingerprint.as_str())
        .execute(connection)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Where the order's latest event sits in the global order, if the order
    /// exists: what a read model must have reached to show its latest state.
    /// Reads positions only, never payloads.
    pub async fn last_position(&self, id: OrderId) -> Result<Option<GlobalPosition>, OrderError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT transaction_id::text, position FROM es_events \
              WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(Repository::<Order>::stream_id(&id.to_string()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(transaction_id, position)| {
            format!("{transaction_id}.{position}")
                .parse::<GlobalPosition>()
                .map_err(OrderError::internal)
        })
        .transpose()
    }
}

/// Event metadata for a write on behalf of `user` (if any), correlated with
/// the order, in the current trace.
pub fn metadata(order_id: OrderId, user: Option<CustomerId>) -> EventMetadata {
    let metadata = EventMetadata::default()
        .with_correlation_id(order_id.as_uuid())
        .with_current_trace_context();
    match user {
        Some(user) => metadata.with_user_id(user.to_string()),
        None => metadata,
    }
}
