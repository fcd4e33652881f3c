//! What a saga is: a named list of steps, each an action with an optional
//! compensation, a timeout and retry policies.
//!
//! A definition is plain data built once at start-up and shared by every
//! instance of the saga; the engine persists only an instance's *position*
//! in it (step index, attempt) and its [`SagaData`]. Steps are therefore
//! identified by index and name, and a deployment must not reorder or
//! rename the steps of a saga type while instances of it are unfinished
//! (append new steps, or introduce a new saga type).
//!
//! # Two kinds of operation
//!
//! - [`Operation::call`]: an async function the engine awaits, e.g. a gRPC
//!   call. It gets the saga's data and returns it updated with the call's
//!   output (`Ok`), or fails with a [`StepError`].
//! - [`Operation::command`]: a message to a participant, answered later.
//!   `build` turns the data into a [`Command`] (no I/O: the engine writes it
//!   to the outbox in the transaction that records the send), and
//!   `on_reply` turns the reply into updated data or a [`StepError`] (also
//!   no I/O; it runs in the worker that picks the reply up).
//!
//! Either can be a step's action or its compensation.
//!
//! # Failures
//!
//! A [`StepError::Rejected`] is a business refusal (`INSUFFICIENT_STOCK`):
//! the step's effect did not happen and retrying cannot change the answer,
//! so the saga compensates the steps *before* it at once. A
//! [`StepError::Transient`] (and a timeout, a panic, a missing reply) is
//! retried under the step's [`RetryPolicy`]; when the attempts run out the
//! step's outcome is unknown — the participant may have done the work and
//! only the answer got lost — so the failed step is compensated too, along
//! with the ones before it. Compensations must therefore cope with "there
//! is nothing to undo".
//!
//! # Idempotency is the step's job
//!
//! The engine records a step as done in the same transaction as the saga's
//! new state, so a step recorded as done never runs again. But a process
//! can die after a call took effect and before that transaction commits;
//! the step then runs again on resume. Delivery is at least once, and every
//! operation must be idempotent by [`StepContext::idempotency_key`], which
//! is the same on every attempt.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::command::{Command, Correlation, Reply};
use crate::retry::RetryPolicy;
use crate::status::Phase;

/// The state a saga carries from step to step, persisted as JSON with the
/// instance. Steps read it and return it with their output merged in.
pub trait SagaData: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T> SagaData for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// Where an operation runs: which saga, step, phase and attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    pub saga_id: Uuid,
    pub saga_type: String,
    pub step: String,
    pub phase: Phase,
    /// 1 on the first attempt of this step and phase.
    pub attempt: u32,
}

impl StepContext {
    /// The key participants deduplicate by: `{saga_id}:{step}` for an
    /// action, `{saga_id}:{step}:compensation` for a compensation. The same
    /// on every attempt.
    pub fn idempotency_key(&self) -> String {
        self.correlation().idempotency_key()
    }

    /// The key the step's *action* used, e.g. for a compensation that
    /// undoes "the reservation made under this key".
    pub fn action_key(&self) -> String {
        Correlation::new(self.saga_id, self.step.clone(), Phase::Action).idempotency_key()
    }

    pub fn correlation(&self) -> Correlation {
        Correlation::new(self.saga_id, self.step.clone(), self.phase)
    }
}

/// Why an operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A business refusal: the effect did not happen and retrying cannot
    /// help. `code` is a stable machine-readable reason
    /// (`INSUFFICIENT_FUNDS`), kept as the saga's failure.
    #[error("rejected ({code}): {message}")]
    Rejected { code: String, message: String },
    /// Might succeed if tried again (unreachable participant, timeout, ...).
    #[error("{message}")]
    Transient { message: String },
}

impl StepError {
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Rejected {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn transient(error: impl fmt::Display) -> Self {
        Self::Transient {
            message: error.to_string(),
        }
    }
}

/// The outcome of an operation: the data with the step's output merged in.
pub type StepResult<D> = Result<D, StepError>;

pub(crate) type CallFn<D> =
    dyn Fn(StepContext, D) -> BoxFuture<'static, StepResult<D>> + Send + Sync;
pub(crate) type BuildCommandFn<D> =
    dyn Fn(&StepContext, &D) -> Result<Command, StepError> + Send + Sync;
pub(crate) type HandleReplyFn<D> = dyn Fn(&StepContext, D, &Reply) -> StepResult<D> + Send + Sync;

/// One thing a step does: its action or its compensation.
pub enum Operation<D> {
    /// Awaited in place (e.g. a gRPC call).
    Call(Arc<CallFn<D>>),
    /// Sent through the outbox; completed by a reply.
    Command {
        build: Arc<BuildCommandFn<D>>,
        on_reply: Arc<HandleReplyFn<D>>,
    },
}

impl<D: SagaData> Operation<D> {
    /// An operation the engine awaits: `call(context, data)` returns the
    /// updated data. The engine bounds it by the step's timeout.
    pub fn call<F, Fut>(call: F) -> Self
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult<D>> + Send + 'static,
    {
        Self::Call(Arc::new(move |context, data| call(context, data).boxed()))
    }

    /// An operation completed by a reply: `build` makes the command to
    /// send, `on_reply` interprets the answer. Neither may do I/O.
    pub fn command<B, R>(build: B, on_reply: R) -> Self
    where
        B: Fn(&StepContext, &D) -> Result<Command, StepError> + Send + Sync + 'static,
        R: Fn(&StepContext, D, &Reply) -> StepResult<D> + Send + Sync + 'static,
    {
        Self::Command {
            build: Arc::new(build),
            on_reply: Arc::new(on_reply),
        }
    }

    pub fn is_command(&self) -> bool {
        matches!(self, Self::Command { .. })
    }
}

impl<D> Clone for Operation<D> {
    fn clone(&self) -> Self {
        match self {
            Self::Call(call) => Self::Call(Arc::clone(call)),
            Self::Command { build, on_reply } => Self::Command {
                build: Arc::clone(build),
                on_reply: Arc::clone(on_reply),
            },
        }
    }
}

impl<D> fmt::Debug for Operation<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Call(_) => "Call",
            Self::Command { .. } => "Command",
        })
    }
}

/// One step of a saga.
pub struct Step<D> {
    pub(crate) name: String,
    pub(crate) action: Operation<D>,
    pub(crate) compensation: Option<Operation<D>>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
}

/// Per-call timeout when a step sets none (the platform's default).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);

impl<D: SagaData> Step<D> {
    /// A step doing `action`, with no compensation, a 5 s timeout,
    /// [`RetryPolicy::default`] and [`RetryPolicy::compensation`].
    pub fn new(name: impl Into<String>, action: Operation<D>) -> Self {
        Self {
            name: name.into(),
            action,
            compensation: None,
            timeout: DEFAULT_STEP_TIMEOUT,
            retry: RetryPolicy::default(),
            compensation_retry: RetryPolicy::compensation(),
        }
    }

    /// A step whose action is [`Operation::call`].
    pub fn call<F, Fut>(name: impl Into<String>, call: F) -> Self
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult<D>> + Send + 'static,
    {
        Self::new(name, Operation::call(call))
    }

    /// A step whose action is [`Operation::command`].
    pub fn command<B, R>(name: impl Into<String>, build: B, on_reply: R) -> Self
    where
        B: Fn(&StepContext, &D) -> Result<Command, StepError> + Send + Sync + 'static,
        R: Fn(&StepContext, D, &Reply) -> StepResult<D> + Send + Sync + 'static,
    {
        Self::new(name, Operation::command(build, on_reply))
    }

    /// Undoes the action when a later step fails (or this one's outcome
    /// stays unknown).
    pub fn compensate(mut self, compensation: Operation<D>) -> Self {
        self.compensation = Some(compensation);
        self
    }

    /// How long one call may take, or how long to wait for a command's reply
    /// before sending it again. Applies to the compensation too.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.compensation_retry = policy;
        self
    }
}

impl<D> Step<D> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has_compensation(&self) -> bool {
        self.compensation.is_some()
    }

    /// The operation run in `phase`, if the step has one.
    pub(crate) fn operation(&self, phase: Phase) -> Option<&Operation<D>> {
        match phase {
            Phase::Action => Some(&self.action),
            Phase::Compensation => self.compensation.as_ref(),
        }
    }

    pub(crate) fn retry_policy(&self, phase: Phase) -> &RetryPolicy {
        match phase {
            Phase::Action => &self.retry,
            Phase::Compensation => &self.compensation_retry,
        }
    }
}

impl<D> fmt::Debug for Step<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("action", &self.action)
            .field("compensation", &self.compensation)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("compensation_retry", &self.compensation_retry)
            .finish()
    }
}

/// A saga type: its name and its steps, in order.
pub struct SagaDefinition<D> {
    saga_type: String,
    steps: Vec<Step<D>>,
}

/// Why a definition cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("saga type {0:?} must match [a-z][a-z0-9_]* (at most 63 characters)")]
    InvalidSagaType(String),
    #[error("saga {0} has no steps")]
    NoSteps(String),
    #[error("step name {0:?} must match [a-z][a-z0-9_]* (at most 63 characters)")]
    InvalidStepName(String),
    #[error("step {0:?} appears twice")]
    DuplicateStep(String),
    #[error("step {step}: {problem}")]
    InvalidRetryPolicy { step: String, problem: &'static str },
    #[error("step {0}: the timeout must be positive")]
    ZeroTimeout(String),
}

impl<D: SagaData> SagaDefinition<D> {
    /// An empty definition of `saga_type` (e.g. `"place_order"`), the name
    /// stored with every instance and used in metric labels and fault points.
    pub fn new(saga_type: impl Into<String>) -> Self {
        Self {
            saga_type: saga_type.into(),
            steps: Vec::new(),
        }
    }

    /// Appends a step.
    pub fn step(mut self, step: Step<D>) -> Self {
        self.steps.push(step);
        self
    }
}

impl<D> SagaDefinition<D> {
    pub fn saga_type(&self) -> &str {
        &self.saga_type
    }

    pub fn steps(&self) -> &[Step<D>] {
        &self.steps
    }

    /// Checks names (they end up in idempotency keys, fault-point names and
    /// metric labels), uniqueness and policies.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if !is_identifier(&self.saga_type) {
            return Err(DefinitionError::InvalidSagaType(self.saga_type.clone()));
        }
        if self.steps.is_empty() {
            return Err(DefinitionError::NoSteps(self.saga_type.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for step in &self.steps {
            if !is_identifier(&step.name) {
                return Err(DefinitionError::InvalidStepName(step.name.clone()));
            }
            if !seen.insert(step.name.as_str()) {
                return Err(DefinitionError::DuplicateStep(step.name.clone()));
            }
            if step.timeout.is_zero() {
                return Err(DefinitionError::ZeroTimeout(step.name.clone()));
            }
            for policy in [&step.retry, &step.compensation_retry] {
                if let Some(problem) = policy.problem() {
                    return Err(DefinitionError::InvalidRetryPolicy {
                        step: step.name.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }
}

impl<D> fmt::Debug for SagaDefinition<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("saga_type", &self.saga_type)
            .field("steps", &self.steps)
            .finish()
    }
}

/// `[a-z][a-z0-9_]*`, at most 63 bytes: safe in keys (no `:`), fault-point
/// names, metric labels and Postgres identifiers alike.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 63
        && bytes.next().is_some_and(|first| first.is_ascii_lowercase())
        && bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(name: &str) -> Step<u32> {
        Step::call(name, |_, data| async move { Ok(data) })
    }

    #[test]
    fn a_sound_definition_validates() {
        let definition = SagaDefinition::new("place_order")
            .step(
                noop("reserve_stock")
                    .compensate(Operation::call(|_, data| async move { Ok(data) })),
            )
            .step(noop("charge_payment"));
        assert_eq!(definition.validate(), Ok(()));
        assert!(definition.steps()[0].has_compensation());
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let cases: Vec<(SagaDefinition<u32>, DefinitionError)> = vec![
            (
                SagaDefinition::new("Place-Order").step(noop("a")),
                DefinitionError::InvalidSagaType("Place-Order".into()),
            ),
            (
                SagaDefinition::new("empty"),
                DefinitionError::NoSteps("empty".into()),
            ),
            (
                SagaDefinition::new("s").step(noop("a:b")),
                DefinitionError::InvalidStepName("a:b".into()),
            ),
            (
                SagaDefinition::new("s").step(noop("a")).step(noop("a")),
                DefinitionError::DuplicateStep("a".into()),
            ),
            (
                SagaDefinition::new("s").step(noop("a").timeout(Duration::ZERO)),
                DefinitionError::ZeroTimeout("a".into()),
            ),
            (
                SagaDefinition::new("s")
                    .step(noop("a").retry(RetryPolicy::default().with_max_attempts(0))),
                DefinitionError::InvalidRetryPolicy {
                    step: "a".into(),
                    problem: "max_attempts must be at least 1",
                },
            ),
        ];
        for (definition, expected) in cases {
            assert_eq!(definition.validate(), Err(expected));
        }
    }

    #[test]
    fn contexts_derive_their_keys() {
        let saga_id = Uuid::now_v7();
        let context = StepContext {
            saga_id,
            saga_type: "place_order".into(),
            step: "charge_payment".into(),
            phase: Phase::Compensation,
            attempt: 2,
        };
        assert_eq!(
            context.idempotency_key(),
            format!("{saga_id}:charge_payment:compensation")
        );
        assert_eq!(context.action_key(), format!("{saga_id}:charge_payment"));
    }
}
