//! Event sourcing and CQRS on the service's own Postgres database.
//!
//! Orders and wallets are event-sourced, every service announces its changes
//! through Kafka, every consumer must be idempotent, and queries are served
//! from read models. Each of those needs the same few mechanisms, and each
//! is easy to get subtly wrong (a skipped event, a message published for a
//! rolled-back change, a projection applied twice), so they live here once:
//!
//! - [`EventStore`] ([`store`]): an append-only log with optimistic
//!   concurrency ([`ExpectedVersion`]), read per stream and in a global
//!   order that never skips an event.
//! - [`Aggregate`] and [`Repository`] ([`aggregate`]): load (snapshot + tail)
//!   → handle a command → save, with [`Upcasters`] ([`upcast`]) so old event
//!   shapes still load.
//! - [`outbox`]: integration messages written in the state change's own
//!   transaction and relayed at least once, in order per key, through a
//!   [`Publisher`] that the messaging layer implements.
//! - [`Inbox`] ([`inbox`]): consumer-side deduplication in the handler's
//!   transaction.
//! - [`ProjectionRunner`] ([`projection`]): read models updated with their
//!   checkpoint in one transaction, one replica at a time (lease + fencing
//!   token), with [`projection::wait_for`] for read-your-writes.
//!
//! # The global order, and why it is keyed by transaction id
//!
//! Subscribers (projections) read the log in one global order and remember
//! how far they got. The obvious key, a `bigserial` position, is wrong under
//! concurrency: positions are handed out when a transaction *inserts*, but
//! rows become visible when it *commits*. If transaction A takes position 5
//! and B takes 6 and B commits first, a reader sees 6, moves its checkpoint
//! past it, and never goes back for 5 once A commits. That event is lost
//! to the projection for good.
//!
//! Two fixes are common:
//!
//! 1. **Serialise position assignment** (a lock or a counter row held until
//!    commit), so positions become visible strictly in order. Simple to
//!    read, but every append in the database queues behind the one before
//!    it *including its commit's WAL flush*, which defeats Postgres' group
//!    commit: throughput collapses to one commit at a time across all
//!    streams.
//! 2. **Key the order by the writing transaction** and read only what no
//!    running transaction can still add to. This crate does that. Each event
//!    stores `transaction_id xid8 DEFAULT pg_current_xact_id()`; the global
//!    order is `(transaction_id, position)`; and [`EventStore::read_all`]
//!    returns only rows with `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`,
//!    i.e. from transactions older than every transaction still in
//!    progress. Every such transaction has finished, and any transaction
//!    that writes later gets a larger id, so nothing can ever appear before
//!    a position a reader has passed. A rolled-back transaction leaves a
//!    hole in `position`, which is harmless: readers never wait on
//!    positions, only on transactions.
//!
//! The cost of (2) falls on readers, not writers: appends to different
//! streams share no lock and keep group commit (an append costs about what
//! a plain `INSERT` does; see the README's benchmark), but an event becomes visible to subscribers only once every
//! transaction that started writing before it has finished. One long
//! transaction with an assigned id anywhere on the Postgres server — the
//! snapshot horizon is cluster-wide — delays all projections by its
//! duration (never breaks them); a runner that finds committed events held
//! back this way re-checks at a short interval rather than its idle one.
//! Keep write transactions short; a transaction that only reads takes no
//! id and delays nothing. The global
//! position is therefore a pair ([`GlobalPosition`]), and it orders events
//! by the start of their transactions' first write rather than by commit.
//!
//! Each stream's events stay in version order within the global order: an
//! append is refused ([`EventStoreError::TransactionTooOld`]) if its
//! transaction took its id before the stream's latest append did, which can
//! only happen to a transaction that wrote something else before appending.
//! Across streams, the order is consistent with commit order only for
//! transactions that did not overlap; a projection that joins streams must
//! not rely on causality between events written by overlapping transactions.
//!
//! # Installing the schema
//!
//! The crate ships its tables as its own sqlx migration set, [`MIGRATOR`],
//! recorded in its own history table `_eventstore_migrations` so it never
//! clashes with the service's `_sqlx_migrations` (see [`schema`]). It runs
//! before the service's own migrations — with the platform's bootstrap:
//!
//! ```ignore
//! // `config.database_url` is DATABASE_URL parsed by `platform::db::parse_url`.
//! let database = platform::db::Database::new(
//!     config.database_url.clone(),
//!     &MIGRATOR_OF_THE_SERVICE,
//!     config.database_max_connections,
//! )
//! .with_library_schema(&eventstore::MIGRATOR);
//! ```
//!
//! or by hand: `eventstore::migrate(&pool).await?` first, then the service's
//! migrator.
//!
//! Tables: `es_events`, `es_snapshots`, `outbox`, `inbox`,
//! `projection_checkpoints`.
//!
//! # Observability
//!
//! Each append runs in an `eventstore.append` span and records
//! `ferrishop_eventstore_append_duration_seconds`; the relay maintains
//! `ferrishop_outbox_pending` and publish latency histograms; every runner
//! maintains `ferrishop_projection_lag_events{projection}` (names in
//! [`metric_names`]). The fault point `eventstore.append` is reached before every
//! append and `eventstore.projection.before_checkpoint` between a batch's
//! read-model writes and its checkpoint.

pub mod aggregate;
pub mod inbox;
pub mod metric_names;
pub mod outbox;
pub mod projection;
pub mod schema;
pub mod store;
pub mod upcast;

pub use aggregate::{
    Aggregate, CommandError, DomainEvent, EventDecodeError, LoadedAggregate, Repository,
    RepositoryError, SnapshotPolicy,
};
pub use inbox::{Inbox, InboxError, InboxOutcome};
pub use outbox::{
    OutboxError, OutboxMessage, OutboxRelay, PublishError, Publisher, RelayConfig, enqueue,
    enqueue_all,
};
pub use projection::{
    ApplyError, Projection, ProjectionConfig, ProjectionError, ProjectionRunner, WaitError,
    wait_for,
};
pub use schema::{MIGRATOR, migrate};
pub use store::{
    Appended, EventMetadata, EventStore, EventStoreError, ExpectedVersion, GlobalPosition,
    NewEvent, RecordedEvent,
};
pub use upcast::{UpcastError, Upcasters};
