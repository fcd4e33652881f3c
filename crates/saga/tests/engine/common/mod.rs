//! Shared fixtures: a migrated database per test, a sample saga whose fake
//! steps record every call and follow a script, and helpers to run engines
//! and wait for outcomes.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use saga::query::{self, SagaDetails};
use saga::{
    EngineConfig, FinishedSaga, HookError, Operation, Phase, RetryPolicy, SagaDefinition,
    SagaEngine, SagaHooks, SagaStatus, Step, StepContext, StepError,
};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use testkit::postgres::TestDatabase;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A fresh database with the event store's and the saga tables, plus the
/// tables the fakes write to.
pub async fn migrated_database() -> TestDatabase {
    let database = testkit::postgres::fresh_database().await;
    eventstore::migrate(&database.pool)
        .await
        .expect("eventstore migrations");
    saga::migrate(&database.pool)
        .await
        .expect("saga migrations");
    sqlx::raw_sql(
        "CREATE TABLE finished_sagas (
             saga_id uuid NOT NULL, outcome text NOT NULL, failed_step text, failure_code text,
             recorded_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE test_calls (
             saga_id uuid NOT NULL, step text NOT NULL, phase text NOT NULL, attempt int NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT clock_timestamp());",
    )
    .execute(&database.pool)
    .await
    .expect("test tables");
    database
}

/// Another pool on the same database (an engine replica gets its own).
pub async fn pool_with(database: &TestDatabase, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&database.url)
        .await
        .expect("connect")
}

/// A saga type nobody else uses (fault points and metrics are global).
pub fn unique_saga_type(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// The sample saga's data: steps record that they ran and what they got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub number: u32,
    /// Names of the actions that succeeded, in order (merged step outputs).
    pub visited: Vec<String>,
    /// Set from a command's reply.
    pub charge_id: Option<String>,
    /// Names of the compensations that succeeded, in order.
    pub undone: Vec<String>,
}

impl Order {
    pub fn number(number: u32) -> Self {
        Self {
            number,
            ..Self::default()
        }
    }
}

/// One invocation of a fake operation.
#[derive(Debug, Clone)]
pub struct Call {
    pub saga_id: Uuid,
    pub step: String,
    pub phase: Phase,
    pub attempt: u32,
    pub at: Instant,
}

/// What a fake operation does on one call.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Succeed,
    Reject(&'static str),
    Fail,
    /// Never returns (until the step's timeout or the task's end).
    Hang,
    /// Succeeds after a pause.
    Sleep(Duration),
}

type Key = (String, Phase);

/// Fake participants: every call is recorded (in memory, and in the
/// database's `test_calls` when given a pool) and does what its script says:
/// queued behaviours first, then the standing one, else success.
#[derive(Clone, Default)]
pub struct Fakes {
    calls: Arc<Mutex<Vec<Call>>>,
    queued: Arc<Mutex<HashMap<Key, VecDeque<Behaviour>>>>,
    standing: Arc<Mutex<HashMap<Key, Behaviour>>>,
    database: Option<PgPool>,
}

impl Fakes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records calls in `test_calls`, to be seen across processes.
    pub fn recording_to(pool: PgPool) -> Self {
        Self {
            database: Some(pool),
            ..Self::default()
        }
    }

    /// The next calls of `step`'s `phase` behave like this, in order.
    pub fn queue(&self, step: &str, phase: Phase, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.queued
            .lock()
            .unwrap()
            .entry((step.to_owned(), phase))
            .or_default()
            .extend(behaviours);
    }

    /// Every call of `step`'s `phase` behaves like this (after the queue).
    pub fn always(&self, step: &str, phase: Phase, behaviour: Behaviour) {
        self.standing
            .lock()
            .unwrap()
            .insert((step.to_owned(), phase), behaviour);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// `(step, phase, attempt)` of one saga's calls, in call order.
    pub fn calls_of(&self, saga_id: Uuid) -> Vec<(String, Phase, u32)> {
        self.calls()
            .into_iter()
            .filter(|call| call.saga_id == saga_id)
            .map(|call| (call.step, call.phase, call.attempt))
            .collect()
    }

    fn next_behaviour(&self, key: &Key) -> Behaviour {
        if let Some(next) = self
            .queued
            .lock()
            .unwrap()
            .get_mut(key)
            .and_then(VecDeque::pop_front)
        {
            return next;
        }
        self.standing
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or(Behaviour::Succeed)
    }

    /// Records the call, then behaves.
    pub async fn perform(&self, context: &StepContext) -> Result<(), StepError> {
        self.calls.lock().unwrap().push(Call {
            saga_id: context.saga_id,
            step: context.step.clone(),
            phase: context.phase,
            attempt: context.attempt,
            at: Instant::now(),
        });
        if let Some(pool) = &self.database {
            sqlx::query(
                "INSERT INTO test_calls (saga_id, step, phase, attempt) VALUES ($1, $2, $3, $4)",
            )
            .bind(context.saga_id)
            .bind(&context.step)
            .bind(context.phase.as_str())
            .bind(context.attempt as i32)
            .execute(pool)
            .await
            .map_err(StepError::transient)?;
        }
        match self.next_behaviour(&(context.step.clone(), context.phase)) {
            Behaviour::Succeed => Ok(()),
            Behaviour::Sleep(pause) => {
                tokio::time::sleep(pause).await;
                Ok(())
            }
            Behaviour::Reject(code) => Err(StepError::rejected(
                code,
                format!("{} refused", context.step),
            )),
            Behaviour::Fail => Err(StepError::transient(format!(
                "{} unavailable (attempt {})",
                context.step, context.attempt
            ))),
            Behaviour::Hang => futures::future::pending().await,
        }
    }
}

/// Quick retries, so tests exercising them stay fast: 3 attempts, 20 ms ×2.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(100))
}

/// A fake call action: performs, then notes the step in `visited`.
pub fn fake_action(fakes: &Fakes) -> Operation<Order> {
    let fakes = fakes.clone();
    Operation::call(move |context: StepContext, mut order: Order| {
        let fakes = fakes.clone();
        async move {
            fakes.perform(&context).await?;
            order.visited.push(context.step.clone());
            Ok(order)
        }
    })
}

/// A fake call compensation: performs, then notes the step in `undone`.
pub fn fake_compensation(fakes: &Fakes) -> Operation<Order> {
    let fakes = fakes.clone();
    Operation::call(move |context: StepContext, mut order: Order| {
        let fakes = fakes.clone();
        async move {
            fakes.perform(&context).await?;
            order.undone.push(context.step.clone());
            Ok(order)
        }
    })
}

/// A step whose action and compensation are fake calls.
pub fn call_step(fakes: &Fakes, name: &str) -> Step<Order> {
    Step::new(name, fake_action(fakes))
        .compensate(fake_compensation(fakes))
        .retry(fast_retry())
        .compensation_retry(fast_retry().with_max_attempts(4))
}

/// A saga of fake call steps.
pub fn sample_saga(saga_type: &str, steps: &[&str], fakes: &Fakes) -> SagaDefinition<Order> {
    steps
        .iter()
        .fold(SagaDefinition::new(saga_type), |definition, step| {
            definition.step(call_step(fakes, step))
        })
}

/// Polls often, short leases, quick error retries.
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        name: "test".into(),
        poll_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(5),
        error_retry_delay: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// Records every saga's end in `finished_sagas`, in the final transaction.
pub struct RecordFinish;

#[async_trait]
impl SagaHooks<Order> for RecordFinish {
    async fn on_finished(
        &self,
        connection: &mut PgConnection,
        saga: &FinishedSaga<Order>,
    ) -> Result<(), HookError> {
        sqlx::query(
            "INSERT INTO finished_sagas (saga_id, outcome, failed_step, failure_code) VALUES ($1, $2, $3, $4)",
        )
        .bind(saga.id)
        .bind(saga.outcome.as_str())
        .bind(saga.failure.as_ref().map(|failure| failure.step.clone()))
        .bind(saga.failure.as_ref().and_then(|failure| failure.code.clone()))
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// The sample engine: fast config, `RecordFinish` hooks.
pub fn engine(pool: &PgPool, definition: SagaDefinition<Order>) -> SagaEngine<Order> {
    SagaEngine::builder(pool.clone(), definition)
        .config(fast_config())
        .hooks(Arc::new(RecordFinish))
        .build()
        .expect("valid definition")
}

/// `finished_sagas` rows of one saga: `(outcome, failed_step, failure_code)`.
pub async fn finish_records(
    pool: &PgPool,
    saga_id: Uuid,
) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT outcome, failed_step, failure_code FROM finished_sagas WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An engine's `run` loop in a task.
pub struct RunningEngine {
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
}

impl RunningEngine {
    pub fn spawn(engine: &SagaEngine<Order>) -> Self {
        let cancel = CancellationToken::new();
        let engine = engine.clone();
        let token = cancel.clone();
        let task = tokio::spawn(async move { engine.run(token).await });
        Self { cancel, task }
    }

    /// Graceful stop; waits for the loop to return.
    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("engine stops within 10 s")
            .unwrap();
    }

    /// Simulates a crash: the task (and every saga task it owns) is dropped
    /// mid-flight, nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Waits until the saga reaches `wanted`; panics with its details if it
/// does not within `timeout`.
pub async fn wait_for_status(
    pool: &PgPool,
    saga_id: Uuid,
    wanted: SagaStatus,
    timeout: Duration,
) -> SagaDetails {
    let deadline = Instant::now() + timeout;
    loop {
        let details = query::get(pool, saga_id).await.unwrap();
        if let Some(details) = &details
            && details.instance.status == wanted
        {
            return details.clone();
        }
        if Instant::now() >= deadline {
            panic!("saga {saga_id} did not reach {wanted} within {timeout:?}: {details:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `condition` holds, polling.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(step, phase, attempt, outcome)` of a step log.
pub fn log_summary(details: &SagaDetails) -> Vec<(String, Phase, i32, saga::StepOutcome)> {
    details
        .steps
        .iter()
        .map(|entry| {
            (
                entry.step.clone(),
                entry.phase,
                entry.attempt,
                entry.outcome,
            )
        })
        .collect()
}

/// Shorthand for expected call lists.
pub fn action(step: &str, attempt: u32) -> (String, Phase, u32) {
    (step.to_owned(), Phase::Action, attempt)
}

pub fn compensation(step: &str, attempt: u32) -> (String, Phase, u32) {
    (step.to_owned(), Phase::Compensation, attempt)
}
