//! CQRS projections: read models fed from the global order, effectively
//! once, by one replica at a time.
//!
//! A [`ProjectionRunner`] reads batches of events after the projection's
//! checkpoint ([`crate::EventStore::read_all`], which never skips an event),
//! applies them to the read model and moves the checkpoint **in the same
//! transaction**. A crash anywhere in a batch therefore rolls back the
//! read-model changes and the checkpoint together; the batch is applied
//! again from the old checkpoint, and nothing is applied twice — even by a
//! projection that accumulates (`count = count + 1`) rather than replaces.
//!
//! # One runner per projection
//!
//! Every replica starts the runner; only the holder of the projection's
//! lease applies events, the others stand by and take over when the lease
//! expires. A lease alone is not enough — a runner paused by a long GC or a
//! network partition may wake up after its lease has expired and been taken
//! — so each lease carries a **fencing token** (from one sequence, so tokens
//! grow across all leases) and every batch locks the checkpoint row and
//! re-checks its token before writing. A runner whose token was superseded
//! gets [`ProjectionError::LeaseLost`] and writes nothing.
//!
//! # Read-your-writes
//!
//! An append returns the [`GlobalPosition`] of its last event; a query that
//! must reflect that write calls [`wait_for`] with it, which returns once
//! the projection's checkpoint has reached it (or times out).
//!
//! # Waking up
//!
//! Runners poll when idle. With [`ProjectionConfig::listen_channel`] set to
//! the channel the store notifies on
//! ([`crate::EventStore::with_notifications`]), they also `LISTEN` and wake
//! at once on an append.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metric_names as names;
use crate::store::{
    EventStoreError, GlobalPosition, RecordedEvent, parse_transaction_id, read_all_on,
};
use crate::upcast::{UpcastError, Upcasters};

/// Fault point reached after a batch was applied, before its checkpoint is
/// written: arm it to test crash recovery.
pub const BEFORE_CHECKPOINT_FAULT_POINT: &str = "eventstore.projection.before_checkpoint";

/// The lag gauge counts events exactly up to this many; past it, counting
/// would make each refresh as slow as the backlog is long, so the lag is
/// estimated from the distance in `position` (which also counts the holes
/// rolled-back appends left).
const LAG_COUNT_CAP: i64 = 10_000;

/// How often a rebuild asks again for a lease another runner holds.
const LEASE_RETRY: Duration = Duration::from_millis(500);

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("payload does not decode: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("{0}")]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
    /// Which event of a batch failed.
    #[error("event {position} ({event_type}): {source}")]
    AtEvent {
        position: GlobalPosition,
        event_type: String,
        #[source]
        source: Box<ApplyError>,
    },
}

impl ApplyError {
    /// Attributes this error to `event`.
    pub fn at(self, event: &RecordedEvent) -> Self {
        Self::AtEvent {
            position: event.position,
            event_type: event.event_type.clone(),
            source: Box::new(self),
        }
    }
}

/// A read model fed by events.
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// Unique name: the key of the checkpoint and of the lease, and the
    /// `projection` label of the lag gauge.
    fn name(&self) -> &str;

    /// Applies one event to the read model on the batch's transaction.
    /// Events arrive in global order, each stream's in version order.
    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError>;

    /// Applies a batch of consecutive events on one transaction. The
    /// default applies them one by one; a projection that can write a
    /// whole batch in a few statements (multi-row upserts) overrides it,
    /// which is what makes catching up on a long log fast.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ApplyError> {
        for event in events {
            self.apply(connection, event)
                .await
                .map_err(|error| error.at(event))?;
        }
        Ok(())
    }

    /// Empties the read model; runs in the transaction that resets the
    /// checkpoint, at the start of a [rebuild](ProjectionRunner::rebuild).
    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError>;
}

/// Why a runner stopped or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection {projection} is leased by another runner")]
    LeaseHeld { projection: String },
    #[error("projection {projection} lost its lease: fencing token {token} was superseded")]
    LeaseLost { projection: String, token: i64 },
    #[error("projection {projection} failed: {source}")]
    Apply {
        projection: String,
        #[source]
        source: ApplyError,
    },
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    #[error(transparent)]
    Fault(#[from] platform::faults::InjectedFault),
    #[error(transparent)]
    Store(#[from] EventStoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How a runner paces itself.
#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// Events applied per transaction.
    pub batch_size: usize,
    /// Pause between polls once caught up.
    pub idle_interval: Duration,
    /// Pause between polls while committed events wait for an older
    /// transaction to finish before they may be read.
    pub held_back_interval: Duration,
    /// How long a lease lasts without renewal; renewed at half of it.
    pub lease_ttl: Duration,
    /// How often a standby runner tries to take the lease.
    pub standby_interval: Duration,
    /// How often `ferrishop_projection_lag_events` is refreshed.
    pub lag_interval: Duration,
    /// First pause after a failed batch; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `LISTEN` on this channel to wake up on appends.
    pub listen_channel: Option<String>,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_interval: Duration::from_millis(100),
            held_back_interval: Duration::from_millis(10),
            lease_ttl: Duration::from_secs(30),
            standby_interval: Duration::from_secs(1),
            lag_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            listen_channel: None,
        }
    }
}

/// Drives one [`Projection`].
pub struct ProjectionRunner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    upcasters: Upcasters,
    config: ProjectionConfig,
    owner: Uuid,
    /// Fencing token of the lease this runner holds; 0 when it holds none
    /// (the token sequence starts at 1).
    token: AtomicI64,
    /// Serialises this runner's batches and resets, so `rebuild` (or
    /// `catch_up`) called while `run` is going interleaves with it instead
    /// of racing it for the checkpoint.
    batch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("owner", &self.owner)
            .field("token", &self.token.load(Ordering::Relaxed))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A projection's checkpoint, if it has one.
pub async fn checkpoint(
    pool: &PgPool,
    projection: &str,
) -> Result<Option<GlobalPosition>, ProjectionError> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS transaction_id_text, position \
           FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(pool)
    .await?;
    row.map(|row| decode_position(&row)).transpose()
}

/// The last committed event in the global order, readable or not yet.
async fn head(pool: &PgPool) -> Result<Option<GlobalPosition>, ProjectionError> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS transaction_id_text, position FROM es_events \
          ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.map(|row| decode_position(&row)).transpose()
}

/// Whether an event was appended at exactly `position`.
async fn recorded(pool: &PgPool, position: GlobalPosition) -> Result<bool, ProjectionError> {
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM es_events \
          WHERE transaction_id = $1::text::xid8 AND position = $2)",
    )
    .bind(position.transaction_id.to_string())
    .bind(position.position)
    .fetch_one(pool)
    .await?;
    Ok(found)
}

/// Why [`wait_for`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No event was ever appended at this position: a forged or foreign
    /// token, not one a projection will reach.
    #[error("no event was appended at {0}")]
    NotIssued(GlobalPosition),
    #[error("projection {projection} did not reach {wanted} within {timeout:?} (at {reached:?})")]
    Timeout {
        projection: String,
        wanted: GlobalPosition,
        reached: Option<GlobalPosition>,
        timeout: Duration,
    },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// Waits until `projection` has applied every event up to `position` (the
/// consistency token an append returned), for read-your-writes. Returns the
/// checkpoint reached.
///
/// A position that names no event in the log was not issued by an append:
/// it is refused at once ([`WaitError::NotIssued`]) rather than waited for,
/// since no projection would ever reach it.
pub async fn wait_for(
    pool: &PgPool,
    projection: &str,
    position: GlobalPosition,
    timeout: Duration,
) -> Result<GlobalPosition, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let mut issued = false;
    loop {
        let reached = checkpoint(pool, projection).await?;
        if let Some(reached) = reached
            && reached >= position
        {
            return Ok(reached);
        }
        if !issued {
            issued = recorded(pool, position).await?;
            if !issued {
                return Err(WaitError::NotIssued(position));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                projection: projection.to_owned(),
                wanted: position,
                reached,
                timeout,
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl ProjectionRunner {
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>, config: ProjectionConfig) -> Self {
        Self {
            pool,
            projection,
            upcasters: Upcasters::new(),
            config,
            owner: Uuid::now_v7(),
            token: AtomicI64::new(0),
            batch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Upcasts every event before the projection sees it.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    pub fn name(&self) -> &str {
        self.projection.name()
    }

    /// The fencing token of the lease held, if any.
    pub fn fencing_token(&self) -> Option<i64> {
        Some(self.token.load(Ordering::Acquire)).filter(|token| *token != 0)
    }

    /// [`ProjectionRunner::run`], after rebuilding the read model when
    /// `rebuild` is set. The rebuild needs the lease, which a crashed
    /// predecessor or another replica may hold for up to its TTL: it waits
    /// for it, and skips the rebuild if a replica asked at the same time has
    /// done it.
    pub async fn rebuild_then_run(&self, rebuild: bool, cancel: CancellationToken) {
        let requested_at = Utc::now();
        while rebuild && !cancel.is_cancelled() {
            match self.rebuild(requested_at).await {
                Ok(Some(applied)) => {
                    tracing::info!(projection = self.name(), applied, "read model rebuilt");
                    break;
                }
                Ok(None) => break,
                Err(ProjectionError::LeaseHeld { .. }) => {
                    let wait = tokio::time::sleep(LEASE_RETRY);
                    if cancel.run_until_cancelled(wait).await.is_none() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(projection = self.name(), %error, "read model not rebuilt");
                    break;
                }
            }
        }
        self.run(cancel).await;
    }

    /// Runs until `cancel` fires: stands by until it holds the lease, then
    /// tails the global order. Failed batches are retried with backoff (a
    /// projection stuck on an event keeps its checkpoint before it). The
    /// lease is released on the way out.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut listener = self.listen().await;
        let mut backoff = self.config.initial_backoff;
        let mut last_renewal = Instant::now();
        let mut last_lag: Option<Instant> = None;
        while !cancel.is_cancelled() {
            if self.fencing_token().is_none() {
                match self.try_acquire().await {
                    Ok(true) => {
                        tracing::info!(
                            projection = self.name(),
                            token = self.fencing_token(),
                            "projection lease acquired"
                        );
                        last_renewal = Instant::now();
                    }
                    Ok(false) => {
                        sleep_or_cancel(&cancel, self.config.standby_interval).await;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(projection = self.name(), %error, "cannot acquire projection lease");
                        sleep_or_cancel(&cancel, self.config.standby_interval).await;
                        continue;
                    }
                }
            }
            if last_lag.is_none_or(|at| at.elapsed() >= self.config.lag_interval) {
                self.refresh_lag().await;
                last_lag = Some(Instant::now());
            }
            let pause = match self.step().await {
                Ok((0, checkpoint)) => {
                    backoff = self.config.initial_backoff;
                    if last_renewal.elapsed() >= self.config.lease_ttl / 2 {
                        match self.renew().await {
                            Ok(()) => last_renewal = Instant::now(),
                            Err(error) => {
                                tracing::warn!(projection = self.name(), %error, "lease renewal failed")
                            }
                        }
                    }
                    // Committed events that an older, still running
                    // transaction keeps from being read: no notification
                    // will announce that transaction's end, so look again
                    // soon rather than after a whole idle interval.
                    match self.held_back(checkpoint).await {
                        Ok(true) => self
                            .config
                            .held_back_interval
                            .min(self.config.idle_interval),
                        Ok(false) => self.config.idle_interval,
                        Err(error) => {
                            tracing::warn!(projection = self.name(), %error, "cannot check for held-back events");
                            self.config.idle_interval
                        }
                    }
                }
                Ok(_) => {
                    backoff = self.config.initial_backoff;
                    last_renewal = Instant::now();
                    continue;
                }
                Err(error @ ProjectionError::LeaseLost { .. }) => {
                    tracing::warn!(projection = self.name(), %error, "standing by");
                    self.token.store(0, Ordering::Release);
                    continue;
                }
                Err(error) => {
                    tracing::error!(projection = self.name(), %error, retry_in_ms = backoff.as_millis() as u64, "projection batch failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    pause
                }
            };
            match listener.as_mut() {
                Some(listener) => {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                        notification = listener.recv() => {
                            match notification {
                                // One look at the log covers every append
                                // announced so far.
                                Ok(_) => while listener.next_buffered().is_some() {},
                                Err(error) => {
                                    tracing::debug!(%error, "notification listener failed; polling");
                                    tokio::time::sleep(pause).await;
                                }
                            }
                        }
                    }
                }
                None => sleep_or_cancel(&cancel, pause).await,
            }
        }
        if let Err(error) = self.release().await {
            tracing::warn!(projection = self.name(), %error, "cannot release projection lease");
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let channel = self.config.listen_channel.as_deref()?;
        let listener = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, channel, "cannot LISTEN; polling only");
                None
            }
        }
    }

    /// Applies every event committed before the call, under the lease
    /// (taken if free), then returns how many were applied. Events held
    /// back by an older transaction that is still running are waited for.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        self.ensure_lease().await?;
        let target = head(&self.pool).await?;
        let mut applied = 0;
        loop {
            let (batch, from) = self.step().await?;
            applied += batch;
            if batch == 0 {
                if target.is_none_or(|target| from >= target) {
                    self.refresh_lag().await;
                    return Ok(applied);
                }
                tokio::time::sleep(self.config.held_back_interval).await;
            }
        }
    }

    /// Empties the read model and replays the whole event log into it;
    /// returns the events replayed. The reset and the checkpoint's return to
    /// the start commit together, so a crash mid-rebuild leaves a read model
    /// that is consistent with its checkpoint, and the rebuild simply
    /// continues. Call it on the runner that holds the lease (it may be
    /// running: batches and the reset take turns), or on a new runner once
    /// the lease is free.
    ///
    /// A rebuild asked of several runners (every replica started with the
    /// same flag) is done once: a runner that gets the lease after another
    /// one rebuilt the read model at or after `requested_at` leaves it and
    /// returns `None`.
    pub async fn rebuild(
        &self,
        requested_at: DateTime<Utc>,
    ) -> Result<Option<u64>, ProjectionError> {
        let token = self.ensure_lease().await?;
        let batch = self.batch_lock.lock().await;
        let mut transaction = self.pool.begin().await?;
        self.lock_checkpoint(&mut transaction, token, None).await?;
        let rebuilt_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT rebuilt_at FROM projection_checkpoints WHERE projection = $1",
        )
        .bind(self.name())
        .fetch_one(&mut *transaction)
        .await?;
        if rebuilt_at.is_some_and(|rebuilt_at| rebuilt_at >= requested_at) {
            tracing::info!(
                projection = self.name(),
                ?rebuilt_at,
                "read model rebuilt since the request; not again"
            );
            return Ok(None);
        }
        self.projection
            .reset(&mut transaction)
            .await
            .map_err(|source| ProjectionError::Apply {
                projection: self.name().to_owned(),
                source,
            })?;
        sqlx::query(
            "UPDATE projection_checkpoints \
                SET transaction_id = '0'::xid8, position = 0, updated_at = now(), rebuilt_at = $2 \
              WHERE projection = $1",
        )
        .bind(self.name())
        .bind(Utc::now())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        drop(batch);
        tracing::info!(projection = self.name(), "read model reset; replaying");
        self.catch_up().await.map(Some)
    }

    /// Gives the lease up so a standby can take over at once.
    pub async fn release(&self) -> Result<(), ProjectionError> {
        let token = self.token.swap(0, Ordering::AcqRel);
        if token == 0 {
            return Ok(());
        }
        sqlx::query(
            "UPDATE projection_checkpoints SET lease_owner = NULL, lease_expires_at = NULL \
              WHERE projection = $1 AND fencing_token = $2",
        )
        .bind(self.name())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ensure_lease(&self) -> Result<i64, ProjectionError> {
        if let Some(token) = self.fencing_token() {
            return Ok(token);
        }
        if self.try_acquire().await? {
            self.fencing_token()
                .ok_or_else(|| ProjectionError::LeaseHeld {
                    projection: self.name().to_owned(),
                })
        } else {
            Err(ProjectionError::LeaseHeld {
                projection: self.name().to_owned(),
            })
        }
    }

    /// Takes the lease if it is free, expired or already ours; a new
    /// fencing token either way.
    async fn try_acquire(&self) -> Result<bool, ProjectionError> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(self.name())
        .execute(&self.pool)
        .await?;
        let token: Option<i64> = sqlx::query_scalar(
            "UPDATE projection_checkpoints \
                SET lease_owner = $2, \
                    lease_expires_at = now() + $3 * interval '1 millisecond', \
                    fencing_token = nextval('projection_fencing_tokens') \
              WHERE projection = $1 \
                AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now()) \
          RETURNING fencing_token",
        )
        .bind(self.name())
        .bind(self.owner)
        .bind(millis(self.config.lease_ttl))
        .fetch_optional(&self.pool)
        .await?;
        match token {
            Some(token) => {
                self.token.store(token, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn renew(&self) -> Result<(), ProjectionError> {
        let token = self.token.load(Ordering::Acquire);
        let renewed = sqlx::query(
            "UPDATE projection_checkpoints SET lease_expires_at = now() + $3 * interval '1 millisecond' \
              WHERE projection = $1 AND fencing_token = $2",
        )
        .bind(self.name())
        .bind(token)
        .bind(millis(self.config.lease_ttl))
        .execute(&self.pool)
        .await?;
        if renewed.rows_affected() == 0 {
            self.token.store(0, Ordering::Release);
            return Err(self.lease_lost(token));
        }
        Ok(())
    }

    fn lease_lost(&self, token: i64) -> ProjectionError {
        ProjectionError::LeaseLost {
            projection: self.name().to_owned(),
            token,
        }
    }

    /// Locks the checkpoint row if this runner's token still owns it (and,
    /// when given, the checkpoint is still where the batch was read from).
    async fn lock_checkpoint(
        &self,
        connection: &mut PgConnection,
        token: i64,
        at: Option<GlobalPosition>,
    ) -> Result<(), ProjectionError> {
        let row = sqlx::query(
            "SELECT transaction_id::text AS transaction_id_text, position FROM projection_checkpoints \
              WHERE projection = $1 AND fencing_token = $2 \
                FOR UPDATE",
        )
        .bind(self.name())
        .bind(token)
        .fetch_optional(&mut *connection)
        .await?;
        let Some(row) = row else {
            self.token.store(0, Ordering::Release);
            return Err(self.lease_lost(token));
        };
        if let Some(at) = at
            && decode_position(&row)? != at
        {
            // Only a runner with a newer token could have moved it.
            self.token.store(0, Ordering::Release);
            return Err(self.lease_lost(token));
        }
        Ok(())
    }

    /// Applies one batch; returns its size (0 when caught up) and the
    /// checkpoint it started from.
    async fn step(&self) -> Result<(u64, GlobalPosition), ProjectionError> {
        let _batch = self.batch_lock.lock().await;
        let token = self
            .fencing_token()
            .ok_or_else(|| ProjectionError::LeaseHeld {
                projection: self.name().to_owned(),
            })?;
        let from = checkpoint(&self.pool, self.name())
            .await?
            .unwrap_or_default();
        // Read outside the write transaction: a transaction holding an id
        // would hold back the snapshot horizon that read_all waits for.
        let events = {
            let mut connection = self.pool.acquire().await?;
            read_all_on(&mut connection, from, self.config.batch_size).await?
        };
        let Some(last) = events.last().map(|event| event.position) else {
            return Ok((0, from));
        };
        let mut transaction = self.pool.begin().await?;
        self.lock_checkpoint(&mut transaction, token, Some(from))
            .await?;
        let events = events
            .into_iter()
            .map(|event| self.upcasters.upcast_event(event))
            .collect::<Result<Vec<_>, _>>()?;
        self.projection
            .apply_batch(&mut transaction, &events)
            .await
            .map_err(|source| ProjectionError::Apply {
                projection: self.name().to_owned(),
                source,
            })?;
        platform::faults::inject(BEFORE_CHECKPOINT_FAULT_POINT).await?;
        sqlx::query(
            "UPDATE projection_checkpoints \
                SET transaction_id = $2::text::xid8, position = $3, updated_at = now(), \
                    lease_expires_at = now() + $4 * interval '1 millisecond' \
              WHERE projection = $1",
        )
        .bind(self.name())
        .bind(last.transaction_id.to_string())
        .bind(last.position)
        .bind(millis(self.config.lease_ttl))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let applied = events.len() as u64;
        metrics::counter!(names::PROJECTION_EVENTS_APPLIED, "projection" => self.name().to_owned())
            .increment(applied);
        Ok((applied, from))
    }

    /// Whether events after `checkpoint` exist that [`read_all_on`] does not
    /// return yet because an older transaction is still running.
    async fn held_back(&self, checkpoint: GlobalPosition) -> Result<bool, ProjectionError> {
        // Not `EXISTS (..)`: the planner drops the ORDER BY inside EXISTS and
        // may pick a sequential scan of the whole log for its generic plan.
        let next: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM es_events WHERE (transaction_id, position) > ($1::text::xid8, $2) \
              ORDER BY transaction_id, position LIMIT 1",
        )
        .bind(checkpoint.transaction_id.to_string())
        .bind(checkpoint.position)
        .fetch_optional(&self.pool)
        .await?;
        Ok(next.is_some())
    }

    /// Refreshes `ferrishop_projection_lag_events`: exact up to
    /// [`LAG_COUNT_CAP`], estimated beyond.
    async fn refresh_lag(&self) {
        let lag = async {
            let from = checkpoint(&self.pool, self.name())
                .await?
                .unwrap_or_default();
            // ORDER BY keeps the scan on the global-order index.
            let counted: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM es_events \
                  WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                  ORDER BY transaction_id, position LIMIT $3) AS behind",
            )
            .bind(from.transaction_id.to_string())
            .bind(from.position)
            .bind(LAG_COUNT_CAP)
            .fetch_one(&self.pool)
            .await?;
            if counted < LAG_COUNT_CAP {
                return Ok::<_, ProjectionError>(counted);
            }
            let estimate = head(&self.pool)
                .await?
                .map_or(counted, |head| head.position - from.position);
            Ok(estimate.max(counted))
        };
        match lag.await {
            Ok(lag) => {
                metrics::gauge!(names::PROJECTION_LAG, "projection" => self.name().to_owned())
                    .set(lag as f64)
            }
            Err(error) => {
                tracing::warn!(projection = self.name(), %error, "cannot measure projection lag")
            }
        }
    }
}

fn decode_position(row: &sqlx::postgres::PgRow) -> Result<GlobalPosition, ProjectionError> {
    let transaction_id: String = row.try_get("transaction_id_text")?;
    Ok(GlobalPosition {
        transaction_id: parse_transaction_id(&transaction_id)?,
        position: row.try_get("position")?,
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

async fn sleep_or_cancel(cancel: &CancellationToken, pause: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
