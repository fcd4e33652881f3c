//! The engine: starts sagas, records replies, and runs workers that move
//! sagas forward — durably, and shared by any number of replicas.
//!
//! # Durable execution
//!
//! The database row is the saga; the engine is just whoever holds it at the
//! moment. Every move is "read the row, do one operation, commit the
//! outcome" — the new position and data, a step-log row, the outbox message
//! of a command and (at the end) the service's own writes, all in one
//! transaction. A process can die anywhere and the row still tells the next
//! engine exactly where to continue: a step whose outcome was committed
//! never runs again, a step whose outcome was not is simply attempted again
//! (hence: operations must be idempotent by their key). Attempt counts are
//! committed *before* an attempt runs, so a step that crashes its process
//! every time still runs out of attempts instead of looping forever.
//!
//! # Replicas: claims, leases and fencing
//!
//! Every replica runs workers over the same table. A worker claims due
//! sagas with `FOR UPDATE SKIP LOCKED` — replicas claim side by side and
//! never wait on each other — and stamps each with a **lease**: its owner
//! id, an expiry, and a `lease_token` that grows with every claim. While it
//! works on a saga the worker renews the lease (at half its time to live);
//! when it stops (the saga waits for a reply, a long backoff, or ends) it
//! releases it. A replica that crashes stops renewing, and its sagas become
//! claimable again when their leases expire.
//!
//! A lease alone cannot stop a worker that was paused (a long GC, a network
//! partition) past its expiry from writing after another replica took over.
//! So every write is **fenced**: `WHERE version = $read AND lease_token =
//! $mine`. A worker whose lease was taken over writes nothing, drops the
//! saga and leaves it to the new holder. The same fence orders the worker
//! against [`SagaEngine::on_reply`], which bumps `version` when it records a
//! reply: a worker that was about to time the step out sees the change,
//! re-reads, and handles the reply instead.
//!
//! # Waking up
//!
//! Workers poll for due sagas at [`EngineConfig::poll_interval`] at the
//! latest and sleep until the next saga is due when that is sooner (a
//! retry's backoff, a reply's deadline). Once the transaction that started
//! a saga or recorded a reply has committed, [`SagaEngine::announce`] wakes
//! the local worker and sends a Postgres `NOTIFY`, which every replica's
//! worker `LISTEN`s to, so new work starts at once rather than at the next
//! poll. The `NOTIFY` goes in a statement of its own, not in the writing
//! transaction: Postgres makes every notifying commit wait for the one
//! before it to reach the disk, which would serialise the service's busiest
//! writes. A wake-up lost to a crash between the commit and the `NOTIFY`
//! costs one poll interval, nothing more.
//!
//! # Stopping
//!
//! [`SagaEngine::run`] stops claiming when its token is cancelled, lets each
//! saga in hand finish the operation it is running (bounded by the step
//! timeout), commits its outcome, releases the lease, and returns. Sagas
//! waiting in a backoff are released at once. Another replica — or this one
//! after a restart — carries on from the committed state.
//!
//! # Restarts
//!
//! At start-up, [`SagaEngine::run`] makes every saga that awaits a reply due
//! at once ([`SagaEngine::resume_in_flight`]), and its command is sent again
//! under the same idempotency key without using up an attempt: the reply to
//! the first send may have been lost with the process (an exclusive reply
//! queue dies with its connection), and waiting out a full timeout to find
//! that out would only delay the saga. Every replica that starts does this
//! for all of the type's waiting sagas; re-sends are harmless by design.
//!
//! # Retention
//!
//! A finished saga is history: its order's own events say what happened
//! to it. [`SagaEngine::run`] deletes completed and compensated sagas (and
//! their step logs) once they finished longer ago than
//! [`EngineConfig::retention`], a thousand rows per statement, every
//! minute, in a task beside the workers; without that, every order ever placed would stay in the table
//! the workers claim from. FAILED sagas are never deleted: each is an
//! inconsistency an operator has to see.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use eventstore::{OutboxError, OutboxMessage};
use futures::FutureExt;
use platform::faults::{self, InjectedFault};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::command::{Command, Reply, headers};
use crate::definition::{
    BuildCommandFn, CallFn, DefinitionError, HandleReplyFn, Operation, SagaData, SagaDefinition,
    Step, StepContext, StepError, StepResult,
};
use crate::hooks::{FinishedSaga, HookError, SagaHooks};
use crate::metric_names as names;
use crate::status::{Phase, SagaStatus, StepOutcome};
use crate::store::{self, CorruptRow, Fence, InstanceRow, NewInstance};
use crate::telemetry::{self, StepSpanFields, StepWork, TraceContext};
use crate::transition::{self, Move, Progress, SagaOutcome, StepMove, Transition};

/// Shortest pause between two claim rounds, so a saga that is due but held
/// by a concurrent claim does not make a worker spin.
const MIN_POLL_PAUSE: Duration = Duration::from_millis(10);

/// How often [`SagaEngine::run`] deletes finished sagas past the retention.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Sagas deleted per statement, so no purge holds many row locks for long.
const PURGE_BATCH: i64 = 1000;

/// How an engine paces and identifies itself.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Prefix of this engine's lease-owner id (e.g. the pod name); a unique
    /// suffix is added per engine.
    pub name: String,
    /// Sagas driven at once by [`SagaEngine::run`] (and claimed per
    /// [`SagaEngine::process_due`]).
    pub max_concurrent: usize,
    /// Longest pause between two looks for due sagas.
    pub poll_interval: Duration,
    /// How long a claim lasts unless renewed; renewed at half of it. A
    /// crashed replica's sagas wait this long before another takes them.
    pub lease_ttl: Duration,
    /// `LISTEN` for sagas made due elsewhere (started or replied to on
    /// another replica). Holds one pool connection while running.
    pub listen: bool,
    /// Re-send the commands of waiting sagas when [`SagaEngine::run`]
    /// starts (see the module docs).
    pub resume_in_flight_on_start: bool,
    /// Pause before trying a saga again after an engine-side error (the
    /// database, a finishing hook, undecodable data).
    pub error_retry_delay: Duration,
    /// How long completed and compensated sagas are kept after they
    /// finished (for the admin listing and for tracing a late reply);
    /// `None` keeps them for ever. FAILED sagas are always kept.
    pub retention: Option<Duration>,
}

impl Default for EngineConfig {
    /// 16 at once, polling every second, 30 s leases, finished sagas kept
    /// for 7 days.
    fn default() -> Self {
        Self {
            name: "saga-engine".to_owned(),
            max_concurrent: 16,
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
            listen: true,
            resume_in_flight_on_start: true,
            error_retry_delay: Duration::from_secs(1),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

impl EngineConfig {
    /// Why this configuration cannot be used, if it cannot.
    fn problem(&self) -> Option<&'static str> {
        if self.max_concurrent == 0 {
            Some("max_concurrent must be at least 1")
        } else if self.poll_interval.is_zero() {
            Some("poll_interval must be positive")
        } else if self.lease_ttl < Duration::from_millis(10) {
            Some("lease_ttl must be at least 10 ms")
        } else {
            None
        }
    }
}

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("invalid engine configuration: {0}")]
    Config(&'static str),
}

/// A saga to start.
#[derive(Debug, Clone)]
pub struct NewSaga<D> {
    pub id: Option<Uuid>,
    pub data: D,
}

impl<D> NewSaga<D> {
    /// A saga with a fresh v7 id.
    pub fn new(data: D) -> Self {
        Self { id: None, data }
    }

    /// Uses `id` (e.g. the order's id) as the saga's id, so the start is
    /// idempotent: a second start with the same id is refused.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("a saga with id {id} exists already")]
    AlreadyStarted { id: Uuid },
    #[error("saga data does not serialise: {0}")]
    Data(#[source] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a reply was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredReply {
    /// No saga has this id.
    UnknownSaga,
    /// The saga has ended; the reply is late or a duplicate.
    Finished { status: SagaStatus },
    /// The saga is not waiting for this step's reply (it is elsewhere, or
    /// has handled this reply already).
    NotAwaited {
        status: SagaStatus,
        current_step: Option<String>,
        awaiting_reply: bool,
    },
    /// A reply for this step is recorded already and not yet handled.
    AlreadyRecorded,
}

/// What [`SagaEngine::on_reply`] did with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Recorded; a worker will handle it.
    Recorded,
    /// Not awaited (late, duplicate, or unknown): dropped. Ack the message.
    Ignored(IgnoredReply),
}

/// Runs the sagas of one [`SagaDefinition`]. Cheap to clone.
pub struct SagaEngine<D: SagaData> {
    inner: Arc<Inner<D>>,
}

impl<D: SagaData> Clone for SagaEngine<D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: SagaData> fmt::Debug for SagaEngine<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaEngine")
            .field("saga_type", &self.inner.definition.saga_type())
            .field("owner", &self.inner.owner)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`SagaEngine`].
pub struct SagaEngineBuilder<D: SagaData> {
    pool: PgPool,
    definition: SagaDefinition<D>,
    config: EngineConfig,
    hooks: Option<Arc<dyn SagaHooks<D>>>,
}

impl<D: SagaData> SagaEngineBuilder<D> {
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs `hooks` in the transactions that end sagas.
    pub fn hooks(mut self, hooks: Arc<dyn SagaHooks<D>>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Validates the definition and the configuration, and builds the engine.
    pub fn build(self) -> Result<SagaEngine<D>, BuildError> {
        self.definition.validate()?;
        if let Some(problem) = self.config.problem() {
            return Err(BuildError::Config(problem));
        }
        let owner = format!("{}/{}", self.config.name, Uuid::now_v7());
        Ok(SagaEngine {
            inner: Arc::new(Inner {
                pool: self.pool,
                definition: self.definition,
                hooks: self.hooks,
                config: self.config,
                owner,
                wake: Notify::new(),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl<D: SagaData> fmt::Debug for SagaEngineBuilder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaEngineBuilder")
            .field("definition", &self.definition)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<D: SagaData> SagaEngine<D> {
    /// An engine for `definition` on `pool` (which must hold the event
    /// store's and this crate's tables).
    pub fn builder(pool: PgPool, definition: SagaDefinition<D>) -> SagaEngineBuilder<D> {
        SagaEngineBuilder {
            pool,
            definition,
            config: EngineConfig::default(),
            hooks: None,
        }
    }

    pub fn definition(&self) -> &SagaDefinition<D> {
        &self.inner.definition
    }

    /// This engine's lease-owner id, as recorded in `lease_owner` and in the
    /// step log's `executed_by`.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Starts a saga in its own transaction, then [`announce`s](Self::announce) it.
    pub async fn start(&self, saga: NewSaga<D>) -> Result<Uuid, SagaError> {
        let mut transaction = self.inner.pool.begin().await?;
        let id = self.start_in(&mut transaction, saga).await?;
        transaction.commit().await?;
        self.announce().await;
        Ok(id)
    }

    /// Starts a saga on the caller's connection — normally inside the
    /// transaction that creates the aggregate the saga is for, so both exist
    /// or neither does. Call [`announce`](Self::announce) once that
    /// transaction has committed; without it, a worker finds the saga at its
    /// next poll. Records the current span's trace context as the saga's.
    pub async fn start_in(
        &self,
        connection: &mut PgConnection,
        saga: NewSaga<D>,
    ) -> Result<Uuid, SagaError> {
        let id = saga.id.unwrap_or_else(Uuid::now_v7);
        let data = serde_json::to_value(&saga.data).map_err(SagaError::Data)?;
        let trace = TraceContext::current();
        let definition = &self.inner.definition;
        let first_step = definition.steps().first().map_or("", Step::name);
        let inserted = store::insert(
            connection,
            NewInstance {
                id,
                saga_type: definition.saga_type(),
                data,
                first_step,
                traceparent: trace.traceparent,
                tracestate: trace.tracestate,
            },
        )
        .await?;
        if !inserted {
            return Err(SagaError::AlreadyStarted { id });
        }
        tracing::debug!(saga.id = %id, "saga.type" = definition.saga_type(), "saga started");
        Ok(id)
    }

    /// Records a participant's reply in its own transaction, then
    /// [`announce`s](Self::announce) it when it was recorded. Any engine on
    /// the database can record any saga's reply.
    pub async fn on_reply(&self, reply: &Reply) -> Result<ReplyOutcome, SagaError> {
        let mut transaction = self.inner.pool.begin().await?;
        let outcome = self.on_reply_in(&mut transaction, reply).await?;
        transaction.commit().await?;
        if outcome == ReplyOutcome::Recorded {
            self.announce().await;
        }
        Ok(outcome)
    }

    /// Tells the workers that a saga of this type became due in a
    /// transaction that has just committed ([`start_in`](Self::start_in),
    /// [`on_reply_in`](Self::on_reply_in)): wakes this replica's worker and
    /// sends a `NOTIFY` for the other replicas' (see the module docs). The
    /// saga's state is committed already, so a failure here is logged, not
    /// returned: the workers' next poll finds the saga either way.
    pub async fn announce(&self) {
        self.inner.wake.notify_one();
        let saga_type = self.inner.definition.saga_type();
        if let Err(error) = store::announce(&self.inner.pool, saga_type).await {
            tracing::warn!(%error, "saga.type" = saga_type, "cannot announce a due saga; workers poll for it");
        }
    }

    /// Records a reply on the caller's connection (e.g. with the consumer's
    /// inbox record, so a redelivered reply is dropped by the inbox); call
    /// [`announce`](Self::announce) once it has committed. A reply
    /// is recorded only if its saga waits for exactly that step and phase
    /// and holds no reply yet; anything else — late, duplicate, or for a
    /// finished saga — is ignored, which is safe because replies to every
    /// send of a step are interchangeable.
    pub async fn on_reply_in(
        &self,
        connection: &mut PgConnection,
        reply: &Reply,
    ) -> Result<ReplyOutcome, SagaError> {
        match store::record_reply(connection, reply).await? {
            Ok(_) => Ok(ReplyOutcome::Recorded),
            Err(ignored) => {
                tracing::debug!(correlation = %reply.correlation, reason = ?ignored, "reply ignored");
                Ok(ReplyOutcome::Ignored(ignored))
            }
        }
    }

    /// Makes every saga of this type that awaits a reply due now, so its
    /// command is sent again with the same key. Returns how many.
    pub async fn resume_in_flight(&self) -> Result<u64, SagaError> {
        let resumed =
            store::resume_awaiting(&self.inner.pool, self.inner.definition.saga_type()).await?;
        if resumed > 0 {
            self.inner.wake.notify_one();
        }
        Ok(resumed)
    }

    /// Deletes this type's completed and compensated sagas that finished
    /// longer ago than [`EngineConfig::retention`] (nothing when it is
    /// `None`); returns how many. [`SagaEngine::run`] has it done every
    /// minute.
    pub async fn purge_finished(&self) -> Result<u64, SagaError> {
        let inner = &self.inner;
        let Some(retention) = inner.config.retention else {
            return Ok(0);
        };
        let mut purged = 0;
        loop {
            let batch = store::purge_finished(
                &inner.pool,
                inner.definition.saga_type(),
                retention,
                PURGE_BATCH,
            )
            .await?;
            purged += batch;
            if batch < PURGE_BATCH.unsigned_abs() {
                return Ok(purged);
            }
        }
    }

    /// Claims the sagas due now (up to `max_concurrent`) and drives each as
    /// far as it goes without waiting long: to its end, to a reply it must
    /// await, or to a backoff longer than half the lease. Returns how many
    /// were claimed. [`SagaEngine::run`] is this in a loop; tests and tools
    /// can call it directly.
    pub async fn process_due(&self) -> Result<usize, SagaError> {
        let inner = &self.inner;
        let claimed = store::claim(
            &inner.pool,
            inner.definition.saga_type(),
            &inner.owner,
            inner.config.max_concurrent,
            inner.config.lease_ttl,
        )
        .await?;
        let count = claimed.len();
        let never = CancellationToken::new();
        let drives =
            futures::future::join_all(claimed.into_iter().map(|row| inner.drive(row, &never)));
        inner.while_renewing_leases(drives).await;
        Ok(count)
    }

    /// Works until `cancel` fires, then stops gracefully (see the module
    /// docs). Run one per saga type per replica.
    pub async fn run(&self, cancel: CancellationToken) {
        let inner = &self.inner;
        let saga_type = inner.definition.saga_type();
        tracing::info!("saga.type" = saga_type, owner = %inner.owner, "saga engine started");
        let listener = inner
            .config
            .listen
            .then(|| tokio::spawn(Arc::clone(inner).listen(cancel.clone())));
        if inner.config.resume_in_flight_on_start {
            match self.resume_in_flight().await {
                Ok(0) => {}
                Ok(resumed) => {
                    tracing::info!(
                        "saga.type" = saga_type,
                        resumed,
                        "re-sending in-flight commands"
                    )
                }
                Err(error) => {
                    tracing::warn!("saga.type" = saga_type, %error, "cannot resume in-flight sagas")
                }
            }
        }

        let mut drives = JoinSet::new();
        let mut renewal = tokio::time::interval(inner.config.lease_ttl / 2);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A task of its own: a first purge of a long history must not hold
        // up the claims.
        let purger = inner
            .config
            .retention
            .map(|_| tokio::spawn(self.clone().purge_every_minute(cancel.clone())));
        while !cancel.is_cancelled() {
            while let Some(joined) = drives.try_join_next() {
                report_panic(joined);
            }
            let free = inner.config.max_concurrent.saturating_sub(drives.len());
            let mut pause = inner.config.poll_interval;
            if free > 0 {
                match inner.claim(free).await {
                    Ok(claimed) => {
                        let claimed_all_it_could = claimed.len() == free;
                        for row in claimed {
                            let inner = Arc::clone(inner);
                            let cancel = cancel.clone();
                            drives.spawn(async move { inner.drive(row, &cancel).await });
                        }
                        if !claimed_all_it_could {
                            pause = inner.pause_until_next_due().await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!("saga.type" = saga_type, %error, "cannot claim due sagas")
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(pause) => {}
                () = inner.wake.notified() => {}
                Some(joined) = drives.join_next(), if !drives.is_empty() => report_panic(joined),
                _ = renewal.tick() => inner.renew_leases().await,
            }
        }

        // Let the sagas in hand finish their current operation, keeping
        // their leases alive meanwhile.
        while !drives.is_empty() {
            tokio::select! {
                Some(joined) = drives.join_next() => report_panic(joined),
                _ = renewal.tick() => inner.renew_leases().await,
            }
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        if let Some(purger) = purger
            && let Err(error) = purger.await
        {
            tracing::error!("saga.type" = saga_type, %error, "the finished-saga purge failed");
        }
        tracing::info!("saga.type" = saga_type, owner = %inner.owner, "saga engine stopped");
    }

    /// [`SagaEngine::purge_finished`] at once and then every minute, until
    /// `cancel` fires (a purge under way finishes its statement first).
    async fn purge_every_minute(self, cancel: CancellationToken) {
        let saga_type = self.inner.definition.saga_type();
        while !cancel.is_cancelled() {
            match self.purge_finished().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(
                    "saga.type" = saga_type,
                    purged,
                    "finished sagas past their retention deleted"
                ),
                Err(error) => {
                    tracing::warn!("saga.type" = saga_type, %error, "cannot delete finished sagas")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(PURGE_INTERVAL) => {}
            }
        }
    }
}

/// Marks `span` failed when the attempt's outcome could not be committed
/// (a fenced write is not a failure: another writer moved the saga on).
fn record_commit_failure(span: &tracing::Span, committed: &Result<Advanced, DriveError>) {
    if let Err(error) = committed
        && !matches!(error, DriveError::Fenced)
    {
        telemetry::record_outcome(span, "error", Some(&error.to_string()));
    }
}

fn report_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!(%error, "a saga worker task panicked; its lease will expire");
    }
}

struct Inner<D: SagaData> {
    pool: PgPool,
    definition: SagaDefinition<D>,
    hooks: Option<Arc<dyn SagaHooks<D>>>,
    config: EngineConfig,
    owner: String,
    wake: Notify,
    /// Leases this engine is working under: `id → lease_token`.
    held: Mutex<HashMap<Uuid, i64>>,
}

/// A saga as a worker holds it between two commits.
struct Instance<D> {
    id: Uuid,
    data: D,
    progress: Progress,
    reply: Option<Reply>,
    reply_overdue: bool,
    fence: Fence,
    started_by: TraceContext,
}

impl<D: SagaData> Instance<D> {
    fn from_row(row: InstanceRow) -> Result<Self, DriveError> {
        Ok(Self {
            id: row.id,
            data: serde_json::from_value(row.data.clone()).map_err(DriveError::Data)?,
            progress: row.progress()?,
            reply: row.reply()?,
            reply_overdue: row.reply_overdue,
            fence: Fence {
                id: row.id,
                version: row.version,
                lease_token: row.lease_token,
            },
            started_by: TraceContext {
                traceparent: row.traceparent,
                tracestate: row.tracestate,
            },
        })
    }
}

/// Where a worker stands after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Advanced {
    /// Due again at once: keep going.
    Continue,
    /// Due again after a backoff.
    DueIn(Duration),
    /// Awaiting a reply: let go until it comes (or its deadline passes).
    AwaitingReply,
    /// Ended.
    Finished,
}

/// Why a worker could not move a saga.
#[derive(Debug, thiserror::Error)]
enum DriveError {
    /// The fenced write matched no row: a reply was recorded meanwhile, or
    /// the lease was taken over. Re-read to tell which.
    #[error("the saga changed since it was read")]
    Fenced,
    #[error("saga data does not (de)serialise: {0}")]
    Data(#[source] serde_json::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    #[error("the finishing hook failed: {0}")]
    Hook(#[source] HookError),
    #[error(transparent)]
    Fault(#[from] InjectedFault),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Registers a lease for renewal while a worker drives its saga; removes
/// it on every way out, panics included.
struct HeldLease<'a> {
    held: &'a Mutex<HashMap<Uuid, i64>>,
    id: Uuid,
}

impl<'a> HeldLease<'a> {
    fn register(held: &'a Mutex<HashMap<Uuid, i64>>, id: Uuid, lease_token: i64) -> Self {
        if let Ok(mut held) = held.lock() {
            held.insert(id, lease_token);
        }
        Self { held, id }
    }
}

impl Drop for HeldLease<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&self.id);
        }
    }
}

impl<D: SagaData> Inner<D> {
    async fn claim(&self, limit: usize) -> Result<Vec<InstanceRow>, sqlx::Error> {
        store::claim(
            &self.pool,
            self.definition.saga_type(),
            &self.owner,
            limit,
            self.config.lease_ttl,
        )
        .await
    }

    /// Until the next saga can be claimed, within `MIN_POLL_PAUSE..=poll_interval`.
    async fn pause_until_next_due(&self) -> Duration {
        match store::next_due_in(&self.pool, self.definition.saga_type()).await {
            Ok(Some(due_in)) => due_in.clamp(MIN_POLL_PAUSE, self.config.poll_interval),
            Ok(None) => self.config.poll_interval,
            Err(error) => {
                tracing::debug!(%error, "cannot compute the next due time");
                self.config.poll_interval
            }
        }
    }

    /// Turns `NOTIFY`s for this saga type into wake-ups until cancelled.
    async fn listen(self: Arc<Self>, cancel: CancellationToken) {
        let saga_type = self.definition.saga_type();
        let mut listener = loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(store::NOTIFY_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match connected.await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for due sagas; polling meanwhile");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                notification = listener.recv() => match notification {
                    Ok(notification) if notification.payload() == saga_type => self.wake.notify_one(),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "saga notification listener failed; polling meanwhile");
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(self.config.poll_interval) => {}
                        }
                    }
                },
            }
        }
    }

    async fn renew_leases(&self) {
        let held: Vec<(Uuid, i64)> = match self.held.lock() {
            Ok(held) => held.iter().map(|(id, token)| (*id, *token)).collect(),
            Err(_) => return,
        };
        match store::renew_leases(&self.pool, &self.owner, &held, self.config.lease_ttl).await {
            // A lease released since the snapshot is not renewed (and must
            // not be); one taken over stops its worker at its next write.
            Ok(renewed) if renewed < held.len() as u64 => tracing::debug!(
                held = held.len(),
                renewed,
                "some saga leases were released or taken over meanwhile"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot renew saga leases"),
        }
    }

    /// Runs `work` while renewing this engine's leases.
    async fn while_renewing_leases<T>(&self, work: impl Future<Output = T>) -> T {
        let mut renewal = tokio::time::interval(self.config.lease_ttl / 2);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renewal.tick().await;
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                _ = renewal.tick() => self.renew_leases().await,
            }
        }
    }

    /// Moves one claimed saga as far as it goes, then lets go of it.
    async fn drive(&self, row: InstanceRow, cancel: &CancellationToken) {
        let (id, lease_token) = (row.id, row.lease_token);
        let _held = HeldLease::register(&self.held, id, lease_token);
        let mut instance = match Instance::from_row(row) {
            Ok(instance) => instance,
            Err(error) => {
                self.note_error(id, lease_token, &error).await;
                self.release(id, lease_token).await;
                return;
            }
        };
        while !cancel.is_cancelled() {
            match self.advance(&mut instance).await {
                Ok(Advanced::Continue) => {}
                Ok(Advanced::DueIn(delay)) if delay <= self.config.lease_ttl / 2 => {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Ok(Advanced::DueIn(_) | Advanced::AwaitingReply | Advanced::Finished) => break,
                Err(DriveError::Fenced) => match self.reload(id, lease_token).await {
                    Ok(Some(fresh)) => instance = fresh,
                    Ok(None) => {
                        tracing::warn!(saga.id = %id, "saga lease was taken over; dropping it");
                        return;
                    }
                    Err(error) => {
                        self.note_error(id, lease_token, &error).await;
                        break;
                    }
                },
                Err(error) => {
                    self.note_error(id, lease_token, &error).await;
                    break;
                }
            }
        }
        self.release(id, lease_token).await;
    }

    /// The saga as stored now, if this engine still holds its lease.
    async fn reload(&self, id: Uuid, lease_token: i64) -> Result<Option<Instance<D>>, DriveError> {
        match store::load(&self.pool, id).await? {
            Some(row) if row.lease_token == lease_token => Ok(Some(Instance::from_row(row)?)),
            _ => Ok(None),
        }
    }

    async fn release(&self, id: Uuid, lease_token: i64) {
        if let Err(error) = store::release(&self.pool, id, lease_token).await {
            tracing::warn!(saga.id = %id, %error, "cannot release saga lease; it will expire");
        }
    }

    async fn note_error(&self, id: Uuid, lease_token: i64, error: &DriveError) {
        tracing::warn!(
            saga.id = %id,
            "saga.type" = self.definition.saga_type(),
            %error,
            retry_in_ms = self.config.error_retry_delay.as_millis() as u64,
            "cannot move saga; will retry"
        );
        let recorded = store::record_engine_error(
            &self.pool,
            id,
            lease_token,
            &error.to_string(),
            self.config.error_retry_delay,
        )
        .await;
        if let Err(error) = recorded {
            tracing::warn!(saga.id = %id, %error, "cannot record saga error");
        }
    }

    /// Decides and makes one move.
    async fn advance(&self, instance: &mut Instance<D>) -> Result<Advanced, DriveError> {
        let next = transition::next_move(
            &self.definition,
            &instance.progress,
            instance.reply.is_some(),
            instance.reply_overdue,
        );
        match next {
            Move::Idle => Ok(Advanced::Finished),
            Move::Finish(outcome) => {
                // The final transaction (the hook's writes, their outbox
                // messages) belongs to the trace that started the saga.
                let span = telemetry::finish_span(
                    instance.id,
                    self.definition.saga_type(),
                    outcome,
                    &instance.started_by,
                );
                async {
                    faults::inject(&self.fault_point_before_finish(outcome)).await?;
                    let finish = transition::finish(&instance.progress, outcome);
                    let committed = self.commit(instance, finish, None, None).await;
                    record_commit_failure(&span, &committed);
                    committed
                }
                .instrument(span.clone())
                .await
            }
            Move::Skip { step } => {
                let skip = transition::skip(&self.definition, &instance.progress, step);
                self.commit(instance, skip, None, None).await
            }
            Move::Step { step, phase, next } => {
                let Some(operation) = self.definition.steps()[step].operation(phase) else {
                    let skip = transition::skip(&self.definition, &instance.progress, step);
                    return self.commit(instance, skip, None, None).await;
                };
                match (operation, next) {
                    (Operation::Command { build, .. }, StepMove::Attempt) => {
                        self.send_command(instance, step, build.as_ref(), false)
                            .await
                    }
                    (Operation::Command { build, .. }, StepMove::Resend) => {
                        self.send_command(instance, step, build.as_ref(), true)
                            .await
                    }
                    (Operation::Command { on_reply, .. }, StepMove::HandleReply) => {
                        self.handle_reply(instance, step, on_reply.as_ref()).await
                    }
                    (Operation::Command { .. }, StepMove::ReplyOverdue) => {
                        self.reply_overdue(instance, step).await
                    }
                    // Also what becomes of a saga that awaited a reply when
                    // a newer definition turned the command into a call.
                    (Operation::Call(call), _) => {
                        self.attempt_call(instance, step, call.as_ref()).await
                    }
                }
            }
        }
    }

    /// One attempt of a call: the attempt count is committed first, then the
    /// call runs under the step's timeout, then its outcome is committed.
    async fn attempt_call(
        &self,
        instance: &mut Instance<D>,
        step_index: usize,
        call: &CallFn<D>,
    ) -> Result<Advanced, DriveError> {
        let step = &self.definition.steps()[step_index];
        let phase = instance.progress.phase();
        let attempt = instance.progress.attempt + 1;
        let span = self.step_span(instance, step, phase, attempt, StepWork::Call);
        async {
            let result = match faults::inject(&self.fault_point_before(step, phase)).await {
                Err(fault) => Err(StepError::transient(fault)),
                Ok(()) => {
                    let begin = transition::begin_attempt(&instance.progress, attempt);
                    self.commit(instance, begin, None, None).await?;
                    let context = self.context(instance, step, phase, attempt);
                    let data = instance.data.clone();
                    run_call(call, context, data, step.timeout).await
                }
            };
            self.commit_attempt(instance, step_index, attempt, result, &span)
                .await
        }
        .instrument(span.clone())
        .await
    }

    /// Writes a command to the outbox, or writes it again (same attempt and
    /// key) when resuming a saga whose reply is outstanding.
    async fn send_command(
        &self,
        instance: &mut Instance<D>,
        step_index: usize,
        build: &BuildCommandFn<D>,
        resend: bool,
    ) -> Result<Advanced, DriveError> {
        let step = &self.definition.steps()[step_index];
        let phase = instance.progress.phase();
        let attempt = if resend {
            instance.progress.attempt.max(1)
        } else {
            instance.progress.attempt + 1
        };
        let span = self.step_span(instance, step, phase, attempt, StepWork::Send);
        async {
            if let Err(fault) = faults::inject(&self.fault_point_before(step, phase)).await {
                return self
                    .commit_attempt(
                        instance,
                        step_index,
                        attempt,
                        Err(StepError::transient(fault)),
                        &span,
                    )
                    .await;
            }
            let context = self.context(instance, step, phase, attempt);
            let built =
                std::panic::catch_unwind(AssertUnwindSafe(|| build(&context, &instance.data)))
                    .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
            let command = match built {
                Ok(command) => command,
                Err(error) => {
                    return self
                        .commit_attempt(instance, step_index, attempt, Err(error), &span)
                        .await;
                }
            };
            let message = self.outbox_message(instance, &context, command, &span);
            let sent = transition::command_sent(
                &self.definition,
                &instance.progress,
                step_index,
                attempt,
                resend,
                step.timeout,
            );
            let outcome = if resend {
                StepOutcome::Resent
            } else {
                StepOutcome::Sent
            };
            let committed = self.commit(instance, sent, None, Some(message)).await;
            if committed.is_ok() {
                telemetry::record_outcome(&span, outcome.as_str(), None);
            }
            record_commit_failure(&span, &committed);
            committed
        }
        .instrument(span.clone())
        .await
    }

    /// Interprets the recorded reply.
    async fn handle_reply(
        &self,
        instance: &mut Instance<D>,
        step_index: usize,
        on_reply: &HandleReplyFn<D>,
    ) -> Result<Advanced, DriveError> {
        let step = &self.definition.steps()[step_index];
        let phase = instance.progress.phase();
        let attempt = instance.progress.attempt.max(1);
        let span = self.step_span(instance, step, phase, attempt, StepWork::Reply);
        let context = self.context(instance, step, phase, attempt);
        let result = span.in_scope(|| match &instance.reply {
            Some(reply) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                on_reply(&context, instance.data.clone(), reply)
            }))
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref()))),
            None => Err(StepError::transient("the recorded reply vanished")),
        });
        self.commit_attempt(instance, step_index, attempt, result, &span)
            .instrument(span.clone())
            .await
    }

    /// The awaited reply did not come in time: the attempt failed.
    async fn reply_overdue(
        &self,
        instance: &mut Instance<D>,
        step_index: usize,
    ) -> Result<Advanced, DriveError> {
        let step = &self.definition.steps()[step_index];
        let phase = instance.progress.phase();
        let attempt = instance.progress.attempt.max(1);
        let span = self.step_span(instance, step, phase, attempt, StepWork::Reply);
        let error = StepError::transient(format!("no reply within {:?}", step.timeout));
        self.commit_attempt(instance, step_index, attempt, Err(error), &span)
            .instrument(span.clone())
            .await
    }

    /// Commits an attempt's result and records it on the span and in the logs.
    async fn commit_attempt(
        &self,
        instance: &mut Instance<D>,
        step_index: usize,
        attempt: u32,
        result: StepResult<D>,
        span: &tracing::Span,
    ) -> Result<Advanced, DriveError> {
        let transition = transition::attempt_finished(
            &self.definition,
            &instance.progress,
            step_index,
            attempt,
            result.as_ref().map(|_| ()),
        );
        if let Some(log) = &transition.log {
            let error = log.error.as_deref();
            telemetry::record_outcome(span, log.outcome.as_str(), error);
            let error = error.unwrap_or_default();
            match log.outcome {
                StepOutcome::Retrying => tracing::warn!(error, "saga step failed; retrying"),
                StepOutcome::Exhausted => tracing::error!(error, "saga step gave up"),
                StepOutcome::Rejected => {
                    tracing::info!(
                        error,
                        code = log.error_code.as_deref(),
                        "saga step rejected"
                    )
                }
                _ => tracing::debug!("saga step succeeded"),
            }
        }
        let committed = self.commit(instance, transition, result.ok(), None).await;
        record_commit_failure(span, &committed);
        committed
    }

    /// Commits `transition` — new state, step-log row, outbox message, and
    /// at the end the hook — in one fenced transaction, then applies it to
    /// the worker's copy.
    async fn commit(
        &self,
        instance: &mut Instance<D>,
        transition: Transition,
        new_data: Option<D>,
        message: Option<OutboxMessage>,
    ) -> Result<Advanced, DriveError> {
        let data = new_data.unwrap_or_else(|| instance.data.clone());
        let data_json = serde_json::to_value(&data).map_err(DriveError::Data)?;
        let current_step = transition
            .progress
            .step()
            .filter(|_| transition.finished.is_none())
            .and_then(|step| self.definition.steps().get(step))
            .map(|step| step.name());

        let mut transaction = self.pool.begin().await?;
        let written = store::write_state(
            &mut transaction,
            instance.fence,
            &transition,
            current_step,
            &data_json,
        )
        .await?
        .ok_or(DriveError::Fenced)?;
        if let Some(entry) = &transition.log {
            store::append_log(&mut transaction, instance.id, entry, &self.owner).await?;
        }
        if let Some(message) = &message {
            eventstore::enqueue(&mut transaction, message).await?;
        }
        if let (Some(outcome), Some(hooks)) = (transition.finished, &self.hooks) {
            let finished = FinishedSaga {
                id: instance.id,
                saga_type: self.definition.saga_type().to_owned(),
                outcome,
                data: data.clone(),
                failure: transition.progress.failure.clone(),
            };
            match AssertUnwindSafe(hooks.on_finished(&mut transaction, &finished))
                .catch_unwind()
                .await
            {
                Ok(hooked) => hooked.map_err(DriveError::Hook)?,
                Err(panic) => return Err(DriveError::Hook(panicked(panic.as_ref()).into())),
            }
        }
        transaction.commit().await?;

        instance.data = data;
        instance.progress = transition.progress;
        instance.fence.version = written.version;
        instance.reply = None;
        instance.reply_overdue = false;
        if let Some(outcome) = transition.finished {
            self.record_finish(instance, outcome, written.age);
            return Ok(Advanced::Finished);
        }
        Ok(match transition.due_in {
            _ if instance.progress.awaiting_reply => Advanced::AwaitingReply,
            None => Advanced::Finished,
            Some(delay) if delay.is_zero() => Advanced::Continue,
            Some(delay) => Advanced::DueIn(delay),
        })
    }

    fn record_finish(&self, instance: &Instance<D>, outcome: SagaOutcome, age: Duration) {
        let saga_type = self.definition.saga_type().to_owned();
        metrics::counter!(names::SAGA_TOTAL, "saga" => saga_type.clone(), "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!(names::SAGA_DURATION, "saga" => saga_type).record(age.as_secs_f64());
        let failure = instance.progress.failure.as_ref();
        let failed_step = failure.map(|failure| failure.step.as_str());
        let reason = failure.map(|failure| failure.message.as_str());
        match outcome {
            SagaOutcome::Completed => tracing::info!(
                saga.id = %instance.id, "saga.type" = self.definition.saga_type(),
                duration_ms = age.as_millis() as u64, "saga completed"
            ),
            SagaOutcome::Compensated => tracing::info!(
                saga.id = %instance.id, "saga.type" = self.definition.saga_type(),
                failed_step, reason, "saga compensated"
            ),
            SagaOutcome::Failed => tracing::error!(
                saga.id = %instance.id, "saga.type" = self.definition.saga_type(),
                failed_step, reason,
                compensation_failures = instance.progress.compensation_failures,
                "saga failed: a compensation gave up; needs attention"
            ),
        }
    }

    fn context(
        &self,
        instance: &Instance<D>,
        step: &Step<D>,
        phase: Phase,
        attempt: u32,
    ) -> StepContext {
        StepContext {
            saga_id: instance.id,
            saga_type: self.definition.saga_type().to_owned(),
            step: step.name().to_owned(),
            phase,
            attempt,
        }
    }

    fn step_span(
        &self,
        instance: &Instance<D>,
        step: &Step<D>,
        phase: Phase,
        attempt: u32,
        work: StepWork,
    ) -> tracing::Span {
        telemetry::step_span(StepSpanFields {
            saga_id: instance.id,
            saga_type: self.definition.saga_type(),
            step: step.name(),
            phase,
            attempt,
            work,
            started_by: &instance.started_by,
        })
    }

    /// The outbox message of one send: the command plus correlation and
    /// trace headers, a fresh message id, keyed by saga (so a saga's
    /// commands stay in order).
    fn outbox_message(
        &self,
        instance: &Instance<D>,
        context: &StepContext,
        command: Command,
        span: &tracing::Span,
    ) -> OutboxMessage {
        let mut message_headers = command.headers;
        for (name, value) in [
            (headers::IDEMPOTENCY_KEY, context.idempotency_key()),
            (headers::SAGA_ID, instance.id.to_string()),
            (headers::SAGA_TYPE, context.saga_type.clone()),
            (headers::SAGA_STEP, context.step.clone()),
            (headers::SAGA_PHASE, context.phase.as_str().to_owned()),
            (headers::SAGA_ATTEMPT, context.attempt.to_string()),
        ] {
            message_headers.insert(name.to_owned(), value);
        }
        let trace = TraceContext::of(span);
        if trace.traceparent.is_some() {
            trace.write_to(&mut message_headers);
        } else {
            instance.started_by.write_to(&mut message_headers);
        }
        OutboxMessage {
            id: Uuid::now_v7(),
            destination: command.destination,
            key: instance.id.to_string(),
            headers: message_headers,
            payload: command.payload,
            created_at: Utc::now(),
        }
    }

    /// `saga.<type>.before_<step>` / `saga.<type>.before_compensate_<step>`.
    fn fault_point_before(&self, step: &Step<D>, phase: Phase) -> String {
        let saga_type = self.definition.saga_type();
        match phase {
            Phase::Action => format!("saga.{saga_type}.before_{}", step.name()),
            Phase::Compensation => format!("saga.{saga_type}.before_compensate_{}", step.name()),
        }
    }

    /// `saga.<type>.before_complete` / `saga.<type>.before_compensated`
    /// (the latter also before FAILED).
    fn fault_point_before_finish(&self, outcome: SagaOutcome) -> String {
        let saga_type = self.definition.saga_type();
        match outcome {
            SagaOutcome::Completed => format!("saga.{saga_type}.before_complete"),
            SagaOutcome::Compensated | SagaOutcome::Failed => {
                format!("saga.{saga_type}.before_compensated")
            }
        }
    }
}

/// Runs a call under `timeout`, turning a timeout or a panic into a
/// transient failure.
async fn run_call<D: SagaData>(
    call: &CallFn<D>,
    context: StepContext,
    data: D,
    timeout: Duration,
) -> StepResult<D> {
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| call(context, data))) {
        Ok(future) => future,
        Err(panic) => return Err(panicked(panic.as_ref())),
    };
    match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
        Err(_) => Err(StepError::transient(format!("timed out after {timeout:?}"))),
        Ok(Err(panic)) => Err(panicked(panic.as_ref())),
        Ok(Ok(result)) => result,
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> StepError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    StepError::transient(format!("the operation panicked: {message}"))
}
