//! The saga state machine, as pure functions.
//!
//! Everything the engine decides — which operation runs next, what an
//! attempt's result does to the saga, which step is compensated next — is
//! decided here, from the persisted [`Progress`] and the definition, with no
//! I/O. The engine only executes operations and commits the [`Transition`]s
//! these functions return, each in one transaction. Keeping the decisions
//! apart makes them readable in one place and testable without a database.
//!
//! Position bookkeeping: going forward, `step_index` is the next step to run
//! and reaches the step count once all ran; compensating, it is the step
//! being compensated and reaches -1 once none is left. Steps without a
//! compensation are skipped on the way back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::definition::{SagaDefinition, StepError};
use crate::status::{FailureKind, Phase, SagaStatus, StepOutcome};

/// Why a saga compensates: the step that failed and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    pub step: String,
    pub kind: FailureKind,
    /// The participant's reason code, for a rejection.
    pub code: Option<String>,
    pub message: String,
}

/// The persisted position of a saga, apart from its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    pub status: SagaStatus,
    pub step_index: i32,
    /// Attempts started on the current step and phase.
    pub attempt: u32,
    pub awaiting_reply: bool,
    pub failure: Option<StepFailure>,
    pub compensation_failures: u32,
    pub last_error: Option<String>,
}

impl Progress {
    /// A saga that has just been started.
    #[cfg(test)]
    pub fn created() -> Self {
        Self {
            status: SagaStatus::Created,
            step_index: 0,
            attempt: 0,
            awaiting_reply: false,
            failure: None,
            compensation_failures: 0,
            last_error: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.status.phase()
    }

    /// The current step's index, if it points at one.
    pub fn step(&self) -> Option<usize> {
        usize::try_from(self.step_index).ok()
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaOutcome {
    Completed,
    Compensated,
    Failed,
}

impl SagaOutcome {
    /// The `outcome` label of `ferrishop_saga_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    pub fn status(self) -> SagaStatus {
        match self {
            Self::Completed => SagaStatus::Completed,
            Self::Compensated => SagaStatus::Compensated,
            Self::Failed => SagaStatus::Failed,
        }
    }
}

/// What a worker should do with a saga it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// Record the end of the saga.
    Finish(SagaOutcome),
    /// Work on the current step's operation in `phase`.
    Step {
        step: usize,
        phase: Phase,
        next: StepMove,
    },
    /// The step has no operation for this phase (a definition that changed
    /// under an unfinished saga): move past it.
    Skip { step: usize },
    /// Nothing to do (the saga has finished).
    Idle,
}

/// What to do with the current step's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepMove {
    /// Start a new attempt.
    Attempt,
    /// A reply to the awaited command has been recorded: handle it.
    HandleReply,
    /// The awaited reply is late: count the attempt as failed.
    ReplyOverdue,
    /// A reply is awaited and not yet late, but the saga was made due (an
    /// engine resumed it): send the same command again, same attempt.
    Resend,
}

/// Decides the next move.
pub(crate) fn next_move<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    reply_recorded: bool,
    reply_overdue: bool,
) -> Move {
    if progress.status.is_finished() {
        return Move::Idle;
    }
    let phase = progress.phase();
    let Some(step) = progress
        .step()
        .filter(|step| *step < definition.steps().len())
    else {
        return Move::Finish(match phase {
            Phase::Action => SagaOutcome::Completed,
            Phase::Compensation if progress.compensation_failures > 0 => SagaOutcome::Failed,
            Phase::Compensation => SagaOutcome::Compensated,
        });
    };
    if definition.steps()[step].operation(phase).is_none() {
        return Move::Skip { step };
    }
    let next = if !progress.awaiting_reply {
        StepMove::Attempt
    } else if reply_recorded {
        StepMove::HandleReply
    } else if reply_overdue {
        StepMove::ReplyOverdue
    } else {
        StepMove::Resend
    };
    Move::Step { step, phase, next }
}

/// A step-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub step_index: usize,
    pub step: String,
    pub phase: Phase,
    pub attempt: u32,
    pub outcome: StepOutcome,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

/// A state change to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub progress: Progress,
    /// When the saga is due next, from the commit; `None` once finished.
    pub due_in: Option<Duration>,
    /// Deadline of the awaited reply, from the commit.
    pub reply_deadline_in: Option<Duration>,
    pub log: Option<LogEntry>,
    /// Set when this transition ends the saga.
    pub finished: Option<SagaOutcome>,
}

impl Transition {
    fn due_now(progress: Progress, log: Option<LogEntry>) -> Self {
        Self {
            progress,
            due_in: Some(Duration::ZERO),
            reply_deadline_in: None,
            log,
            finished: None,
        }
    }
}

/// Attempt number `attempt` is about to run: make the count durable first,
/// so a step that crashes its process every time still runs out of attempts.
pub(crate) fn begin_attempt(progress: &Progress, attempt: u32) -> Transition {
    let mut next = progress.clone();
    next.attempt = attempt;
    if next.status == SagaStatus::Created {
        next.status = SagaStatus::Running;
    }
    Transition::due_now(next, None)
}

/// A command went to the outbox (or went again, on resume): wait for the
/// reply until `timeout`.
pub(crate) fn command_sent<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    step: usize,
    attempt: u32,
    resent: bool,
    timeout: Duration,
) -> Transition {
    let mut next = progress.clone();
    next.attempt = attempt;
    next.awaiting_reply = true;
    if next.status == SagaStatus::Created {
        next.status = SagaStatus::Running;
    }
    let outcome = if resent {
        StepOutcome::Resent
    } else {
        StepOutcome::Sent
    };
    Transition {
        log: Some(log_entry(
            definition, progress, step, attempt, outcome, None,
        )),
        progress: next,
        due_in: Some(timeout),
        reply_deadline_in: Some(timeout),
        finished: None,
    }
}

/// Applies the result of attempt number `attempt` of the current step.
pub(crate) fn attempt_finished<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    step: usize,
    attempt: u32,
    result: Result<(), &StepError>,
) -> Transition {
    let phase = progress.phase();
    let policy = definition.steps()[step].retry_policy(phase);
    match result {
        Ok(()) => {
            let log = log_entry(
                definition,
                progress,
                step,
                attempt,
                StepOutcome::Succeeded,
                None,
            );
            let next = match phase {
                Phase::Action => advance_to(progress, step_index(step + 1)),
                Phase::Compensation => compensate_from(definition, progress, step_index(step) - 1),
            };
            Transition::due_now(next, Some(log))
        }
        Err(error @ StepError::Rejected { code, message }) => {
            let log = log_entry(
                definition,
                progress,
                step,
                attempt,
                StepOutcome::Rejected,
                Some(error),
            );
            let failure = StepFailure {
                step: definition.steps()[step].name().to_owned(),
                kind: FailureKind::Rejected,
                code: Some(code.clone()),
                message: message.clone(),
            };
            Transition::due_now(
                give_up(
                    definition,
                    progress,
                    step,
                    failure,
                    FailedStepEffect::DidNotHappen,
                ),
                Some(log),
            )
        }
        Err(error @ StepError::Transient { message }) => {
            if policy.allows_another_attempt_after(attempt) {
                let mut next = progress.clone();
                next.attempt = attempt;
                next.awaiting_reply = false;
                next.last_error = Some(message.clone());
                Transition {
                    log: Some(log_entry(
                        definition,
                        progress,
                        step,
                        attempt,
                        StepOutcome::Retrying,
                        Some(error),
                    )),
                    progress: next,
                    due_in: Some(policy.delay_after(attempt)),
                    reply_deadline_in: None,
                    finished: None,
                }
            } else {
                let log = log_entry(
                    definition,
                    progress,
                    step,
                    attempt,
                    StepOutcome::Exhausted,
                    Some(error),
                );
                let failure = StepFailure {
                    step: definition.steps()[step].name().to_owned(),
                    kind: FailureKind::Exhausted,
                    code: None,
                    message: format!("gave up after {attempt} attempts: {message}"),
                };
                Transition::due_now(
                    give_up(
                        definition,
                        progress,
                        step,
                        failure,
                        FailedStepEffect::Unknown,
                    ),
                    Some(log),
                )
            }
        }
    }
}

/// Moves past a step that has nothing to run in the current phase.
pub(crate) fn skip<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    step: usize,
) -> Transition {
    let next = match progress.phase() {
        Phase::Action => advance_to(progress, step_index(step + 1)),
        Phase::Compensation => compensate_from(definition, progress, step_index(step) - 1),
    };
    Transition::due_now(next, None)
}

/// Ends the saga.
pub(crate) fn finish(progress: &Progress, outcome: SagaOutcome) -> Transition {
    let mut next = progress.clone();
    next.status = outcome.status();
    next.attempt = 0;
    next.awaiting_reply = false;
    Transition {
        progress: next,
        due_in: None,
        reply_deadline_in: None,
        log: None,
        finished: Some(outcome),
    }
}

/// Whether the step that failed for good is itself compensated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedStepEffect {
    /// Rejected: its effect did not happen.
    DidNotHappen,
    /// Exhausted: its effect may have happened.
    Unknown,
}

/// The step failed for good. In the action phase: start compensating — the
/// steps before it, and the step itself when its effect is unknown. In the
/// compensation phase: count the failure and carry on with the remaining
/// compensations (they are independent undos; stopping would leave even
/// more to repair by hand).
fn give_up<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    step: usize,
    failure: StepFailure,
    effect: FailedStepEffect,
) -> Progress {
    match progress.phase() {
        Phase::Action => {
            let from = match effect {
                FailedStepEffect::DidNotHappen => step_index(step) - 1,
                FailedStepEffect::Unknown => step_index(step),
            };
            let mut next = compensate_from(definition, progress, from);
            next.status = SagaStatus::Compensating;
            next.last_error = Some(failure.message.clone());
            next.failure = Some(failure);
            next
        }
        Phase::Compensation => {
            let mut next = compensate_from(definition, progress, step_index(step) - 1);
            next.compensation_failures += 1;
            next.last_error = Some(format!(
                "compensation of {} failed: {}",
                failure.step, failure.message
            ));
            next
        }
    }
}

fn advance_to(progress: &Progress, step_index: i32) -> Progress {
    let mut next = progress.clone();
    next.status = SagaStatus::Running;
    next.step_index = step_index;
    next.attempt = 0;
    next.awaiting_reply = false;
    next.last_error = None;
    next
}

/// Points the saga at the nearest step at or before `from` that has a
/// compensation (-1 if none).
fn compensate_from<D>(definition: &SagaDefinition<D>, progress: &Progress, from: i32) -> Progress {
    let mut next = progress.clone();
    next.step_index = next_compensation(definition, from);
    next.attempt = 0;
    next.awaiting_reply = false;
    next
}

fn next_compensation<D>(definition: &SagaDefinition<D>, from: i32) -> i32 {
    let Ok(from) = usize::try_from(from) else {
        return -1;
    };
    definition.steps()[..=from.min(definition.steps().len().saturating_sub(1))]
        .iter()
        .rposition(|step| step.has_compensation())
        .map_or(-1, step_index)
}

fn step_index(step: usize) -> i32 {
    i32::try_from(step).unwrap_or(i32::MAX)
}

fn log_entry<D>(
    definition: &SagaDefinition<D>,
    progress: &Progress,
    step: usize,
    attempt: u32,
    outcome: StepOutcome,
    error: Option<&StepError>,
) -> LogEntry {
    LogEntry {
        step_index: step,
        step: definition.steps()[step].name().to_owned(),
        phase: progress.phase(),
        attempt,
        outcome,
        error_code: match error {
            Some(StepError::Rejected { code, .. }) => Some(code.clone()),
            _ => None,
        },
        error: error.map(|error| match error {
            StepError::Rejected { message, .. } | StepError::Transient { message } => {
                message.clone()
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Operation, Step};
    use crate::retry::RetryPolicy;

    /// Steps a..e; b and d have no compensation.
    fn definition() -> SagaDefinition<u32> {
        let step = |name: &str, compensated: bool| {
            let step = Step::call(name, |_, data| async move { Ok(data) })
                .retry(RetryPolicy::default().with_jitter(0.0))
                .compensation_retry(RetryPolicy::default().with_max_attempts(2));
            if compensated {
                step.compensate(Operation::call(|_, data| async move { Ok(data) }))
            } else {
                step
            }
        };
        SagaDefinition::new("sample")
            .step(step("a", true))
            .step(step("b", false))
            .step(step("c", true))
            .step(step("d", false))
            .step(step("e", true))
    }

    fn running_at(step: i32) -> Progress {
        Progress {
            status: SagaStatus::Running,
            step_index: step,
            ..Progress::created()
        }
    }

    fn rejected() -> StepError {
        StepError::rejected("NOPE", "refused")
    }

    fn transient() -> StepError {
        StepError::transient("unreachable")
    }

    #[test]
    fn a_new_saga_attempts_its_first_step() {
        let definition = definition();
        assert_eq!(
            next_move(&definition, &Progress::created(), false, false),
            Move::Step {
                step: 0,
                phase: Phase::Action,
                next: StepMove::Attempt
            }
        );
        let begun = begin_attempt(&Progress::created(), 1);
        assert_eq!(begun.progress.status, SagaStatus::Running);
        assert_eq!(begun.progress.attempt, 1);
        assert_eq!(begun.log, None);
    }

    #[test]
    fn success_moves_forward_and_the_end_completes() {
        let definition = definition();
        let done = attempt_finished(&definition, &running_at(4), 4, 1, Ok(()));
        assert_eq!(done.progress.step_index, 5);
        assert_eq!(done.progress.attempt, 0);
        assert_eq!(
            done.log.map(|log| log.outcome),
            Some(StepOutcome::Succeeded)
        );
        assert_eq!(
            next_move(&definition, &done.progress, false, false),
            Move::Finish(SagaOutcome::Completed)
        );
        let finished = finish(&done.progress, SagaOutcome::Completed);
        assert_eq!(finished.progress.status, SagaStatus::Completed);
        assert_eq!(finished.due_in, None);
        assert_eq!(
            next_move(&definition, &finished.progress, false, false),
            Move::Idle
        );
    }

    #[test]
    fn a_rejection_compensates_the_earlier_steps_in_reverse_skipping_uncompensated_ones() {
        let definition = definition();
        let failed = attempt_finished(&definition, &running_at(4), 4, 1, Err(&rejected()));
        let progress = failed.progress;
        assert_eq!(progress.status, SagaStatus::Compensating);
        assert_eq!(
            progress.failure,
            Some(StepFailure {
                step: "e".into(),
                kind: FailureKind::Rejected,
                code: Some("NOPE".into()),
                message: "refused".into(),
            })
        );
        // e itself is not undone (its effect never happened); d has no
        // compensation, so c comes first, then a.
        let mut order = Vec::new();
        let mut progress = progress;
        while let Move::Step { step, phase, next } = next_move(&definition, &progress, false, false)
        {
            assert_eq!(next, StepMove::Attempt);
            assert_eq!(phase, Phase::Compensation);
            order.push(step);
            progress = attempt_finished(&definition, &progress, step, 1, Ok(())).progress;
        }
        assert_eq!(order, [2, 0]);
        assert_eq!(
            next_move(&definition, &progress, false, false),
            Move::Finish(SagaOutcome::Compensated)
        );
    }

    #[test]
    fn a_rejected_first_step_has_nothing_to_compensate() {
        let definition = definition();
        let failed = attempt_finished(&definition, &running_at(0), 0, 1, Err(&rejected()));
        assert_eq!(failed.progress.step_index, -1);
        assert_eq!(
            next_move(&definition, &failed.progress, false, false),
            Move::Finish(SagaOutcome::Compensated)
        );
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_compensate_the_step_itself() {
        let definition = definition();
        let first = attempt_finished(&definition, &running_at(2), 2, 1, Err(&transient()));
        assert_eq!(first.progress.status, SagaStatus::Running);
        assert_eq!(first.progress.attempt, 1);
        assert_eq!(first.due_in, Some(Duration::from_millis(100)));
        assert_eq!(
            first.log.map(|log| log.outcome),
            Some(StepOutcome::Retrying)
        );

        let second = attempt_finished(&definition, &first.progress, 2, 2, Err(&transient()));
        assert_eq!(second.due_in, Some(Duration::from_millis(200)));

        let third = attempt_finished(&definition, &second.progress, 2, 3, Err(&transient()));
        assert_eq!(
            third.log.map(|log| log.outcome),
            Some(StepOutcome::Exhausted)
        );
        assert_eq!(third.progress.status, SagaStatus::Compensating);
        assert_eq!(
            third.progress.failure.as_ref().map(|failure| failure.kind),
            Some(FailureKind::Exhausted)
        );
        // Its outcome is unknown, so c is compensated first.
        assert_eq!(third.progress.step_index, 2);
    }

    #[test]
    fn a_compensation_that_gives_up_is_counted_and_the_rest_still_run() {
        let definition = definition();
        let compensating =
            attempt_finished(&definition, &running_at(4), 4, 1, Err(&rejected())).progress;
        assert_eq!(compensating.step_index, 2);
        let retry = attempt_finished(&definition, &compensating, 2, 1, Err(&transient()));
        assert_eq!(
            retry.log.map(|log| log.outcome),
            Some(StepOutcome::Retrying)
        );
        let gave_up = attempt_finished(&definition, &retry.progress, 2, 2, Err(&transient()));
        assert_eq!(gave_up.progress.compensation_failures, 1);
        assert_eq!(gave_up.progress.step_index, 0, "a is still compensated");
        let last = attempt_finished(&definition, &gave_up.progress, 0, 1, Ok(()));
        assert_eq!(
            next_move(&definition, &last.progress, false, false),
            Move::Finish(SagaOutcome::Failed)
        );
        // The original failure is kept.
        assert_eq!(
            last.progress.failure.map(|failure| failure.step),
            Some("e".to_owned())
        );
    }

    #[test]
    fn command_steps_wait_for_their_reply() {
        let definition = definition();
        let sent = command_sent(
            &definition,
            &Progress::created(),
            0,
            1,
            false,
            Duration::from_secs(5),
        );
        assert!(sent.progress.awaiting_reply);
        assert_eq!(sent.reply_deadline_in, Some(Duration::from_secs(5)));
        assert_eq!(sent.log.map(|log| log.outcome), Some(StepOutcome::Sent));
        let waiting = &sent.progress;
        let step = |next| Move::Step {
            step: 0,
            phase: Phase::Action,
            next,
        };
        assert_eq!(
            next_move(&definition, waiting, true, false),
            step(StepMove::HandleReply)
        );
        assert_eq!(
            next_move(&definition, waiting, false, true),
            step(StepMove::ReplyOverdue)
        );
        assert_eq!(
            next_move(&definition, waiting, false, false),
            step(StepMove::Resend)
        );
        let handled = attempt_finished(&definition, waiting, 0, 1, Ok(()));
        assert!(!handled.progress.awaiting_reply);
        assert_eq!(handled.progress.step_index, 1);
    }

    #[test]
    fn steps_without_an_operation_are_skipped() {
        let definition = definition();
        let progress = Progress {
            status: SagaStatus::Compensating,
            step_index: 3,
            ..Progress::created()
        };
        assert_eq!(
            next_move(&definition, &progress, false, false),
            Move::Skip { step: 3 }
        );
        assert_eq!(skip(&definition, &progress, 3).progress.step_index, 2);
    }
}
