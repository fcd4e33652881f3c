//! Orchestrated sagas on Postgres.
//!
//! Placing an order touches three services — reserve stock, charge the
//! wallet, commit the reservation — and no transaction spans them. A saga
//! makes the whole either happen or be undone: each step has a
//! compensation, and when a step fails for good the completed steps are
//! compensated in reverse order. The hard part is not the happy path but
//! everything around it: a participant that is down for a minute, a reply
//! that never comes, a process killed between two steps, two replicas
//! looking at the same saga. This crate is that part, once, for every saga
//! of the platform; the order service only *defines* its sagas.
//!
//! # Defining a saga
//!
//! A [`SagaDefinition`] is a saga type's name and its [`Step`]s. Each step
//! has an action, an optional compensation, a timeout and a
//! [`RetryPolicy`]; an operation is either a **call** the engine awaits (a
//! gRPC request) or a **command** sent through the outbox and completed by
//! a reply (a RabbitMQ command). Steps share a typed, serde-serialisable
//! [`SagaData`] value, persisted with the instance; each operation returns
//! it with its output merged in.
//!
//! ```ignore
//! let place_order = SagaDefinition::new("place_order")
//!     .step(
//!         Step::call("reserve_stock", reserve_stock)        // async fn(StepContext, Data) -> StepResult<Data>
//!             .compensate(Operation::call(release_stock)),
//!     )
//!     .step(
//!         Step::command("charge_payment", charge_command, charge_reply)
//!             .compensate(Operation::command(refund_command, refund_reply))
//!             .timeout(Duration::from_secs(10)),
//!     )
//!     .step(Step::call("commit_reservation", commit_reservation));
//! let engine = SagaEngine::builder(pool, place_order)
//!     .hooks(Arc::new(OrderOutcome::new(event_store)))   // runs in the saga's final transaction
//!     .build()?;
//! ```
//!
//! # Running it
//!
//! - [`SagaEngine::start_in`] writes a new instance on the caller's
//!   transaction (next to the order it is for), and
//!   [`SagaEngine::announce`] wakes the workers once that has committed;
//!   [`SagaEngine::start`] does both with a transaction of its own.
//! - [`SagaEngine::run`] is the worker loop: one per saga type per replica,
//!   until its cancellation token fires.
//! - [`SagaEngine::on_reply`] (or [`SagaEngine::on_reply_in`] in the
//!   consumer's transaction, then `announce`) feeds a participant's
//!   [`Reply`] in; the [`Correlation`] comes from the idempotency key the
//!   participant echoes.
//! - [`SagaHooks::on_finished`] runs the service's own writes in the same
//!   transaction that records the saga's end.
//! - [`query`] lists instances by status, with failures and errors, for the
//!   admin API.
//!
//! How the engine stays correct across crashes and replicas — durable
//! state, leases with fencing tokens, at-least-once operations — is
//! explained in [`engine`]; what counts as failure and what gets
//! compensated, in [`definition`]; the command/reply correlation, in
//! [`command`].
//!
//! # Installing the schema
//!
//! The crate ships `saga_instances` and `saga_step_log` as its own
//! migration set, [`MIGRATOR`], recorded in `_saga_migrations` (see
//! [`schema`]). It needs the event store's outbox, so run
//! [`eventstore::migrate`] first, then [`migrate`], then the service's own.
//!
//! # Observability
//!
//! - `ferrishop_saga_total{saga,outcome}` and
//!   `ferrishop_saga_duration_seconds{saga}` ([`metric_names`]).
//! - A `saga.step` span per attempt (saga id, type, step, phase, attempt;
//!   error status on failure), parented to the trace that started the
//!   saga, whose `traceparent` is stored with the instance.
//! - Fault points at every step boundary, for crash tests:
//!   `saga.<type>.before_<step>`, `saga.<type>.before_compensate_<step>`,
//!   `saga.<type>.before_complete` and `saga.<type>.before_compensated`.
//!   An `error` action there counts as a transient failure of the attempt;
//!   `abort` kills the process between two committed states.
//!
//! # Benchmark
//!
//! `cargo bench -p saga --bench starts`: sixteen writers start sagas, one
//! committed transaction each, against the same number of single-row
//! `INSERT`s (2 cores, PostgreSQL 15 on the same host, medians of five
//! rounds). With the wake-up `NOTIFY` inside the starting transaction,
//! 3 325 starts/s against 10 550 inserts/s (0.32×): Postgres lets one
//! notifying transaction commit at a time, each waiting for the one before
//! it to reach the disk. With the `NOTIFY` sent after the commit
//! ([`SagaEngine::announce`]), 4 826 and 5 474 starts/s in two runs (0.40×
//! and 0.43× the inserts of the same runs); what is left is a start's four
//! round trips (begin, insert, commit, notify) against an insert's one.

pub mod command;
pub mod definition;
pub mod engine;
pub mod hooks;
pub mod metric_names;
pub mod query;
pub mod retry;
pub mod schema;
pub mod status;
mod store;
mod telemetry;
mod transition;

pub use command::{Command, Correlation, CorrelationError, Reply};
pub use definition::{
    DefinitionError, Operation, SagaData, SagaDefinition, Step, StepContext, StepError, StepResult,
};
pub use engine::{
    BuildError, EngineConfig, IgnoredReply, NewSaga, ReplyOutcome, SagaEngine, SagaEngineBuilder,
    SagaError,
};
pub use hooks::{FinishedSaga, HookError, SagaHooks};
pub use retry::RetryPolicy;
pub use schema::{MIGRATOR, migrate};
pub use status::{FailureKind, Phase, SagaStatus, StepOutcome};
pub use store::NOTIFY_CHANNEL;
pub use transition::{SagaOutcome, StepFailure};
