//! The vocabulary of saga state: statuses, phases, step outcomes.
//!
//! Each is stored as text (readable in `psql`, checked by the table's
//! constraints) and converts both ways here, in one place. Statuses are
//! upper case, like the platform's other public statuses (`PENDING`,
//! `CONFIRMED`), because the admin API shows them; phases and outcomes are
//! the step log's lower-case vocabulary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a saga instance is in its life.
///
/// ```text
/// CREATED ──> RUNNING ──> COMPLETED
///                │
///                └──> COMPENSATING ──> COMPENSATED
///                           │
///                           └──> FAILED   (a compensation gave up: needs attention)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// Started (persisted), no step attempted yet.
    Created,
    /// Running its steps forward.
    Running,
    /// A step failed for good; undoing the completed steps in reverse.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every compensation succeeded.
    Compensated,
    /// A step failed and at least one compensation gave up: the system may
    /// be inconsistent until an operator steps in.
    Failed,
}

impl SagaStatus {
    pub const ALL: [Self; 6] = [
        Self::Created,
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Compensated,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Completed => "COMPLETED",
            Self::Compensated => "COMPENSATED",
            Self::Failed => "FAILED",
        }
    }

    /// Whether the saga has ended (nothing more will run).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// The phase whose operations run in this status.
    pub(crate) fn phase(self) -> Phase {
        match self {
            Self::Compensating | Self::Compensated | Self::Failed => Phase::Compensation,
            Self::Created | Self::Running | Self::Completed => Phase::Action,
        }
    }
}

/// Which of a step's two operations is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action, run while the saga goes forward.
    Action,
    /// The step's compensation, run while the saga goes back.
    Compensation,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }
}

/// How one attempt of a step's operation ended, as written to the step log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Done; the saga moved on.
    Succeeded,
    /// Refused for good (a business failure): not retried.
    Rejected,
    /// Failed transiently; another attempt follows after a backoff.
    Retrying,
    /// Failed transiently on its last allowed attempt.
    Exhausted,
    /// A command was written to the outbox; the reply is awaited.
    Sent,
    /// The awaited command was written again, same attempt and key, because
    /// an engine resumed the saga while its reply was outstanding.
    Resent,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Retrying => "retrying",
            Self::Exhausted => "exhausted",
            Self::Sent => "sent",
            Self::Resent => "resent",
        }
    }

    /// Whether the attempt failed (the step log's error entries).
    pub fn is_error(self) -> bool {
        matches!(self, Self::Rejected | Self::Retrying | Self::Exhausted)
    }
}

/// Why a step made its saga compensate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The participant refused (e.g. `INSUFFICIENT_STOCK`): the step's
    /// effect did not happen.
    Rejected,
    /// Every attempt failed transiently or went unanswered: the step's
    /// effect may or may not have happened.
    Exhausted,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Exhausted => "exhausted",
        }
    }
}

/// A stored value that is not one of its type's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

macro_rules! text_enum {
    ($type:ty, $what:literal, [$($variant:ident),+ $(,)?]) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownValue;

            /// Accepts the stored spelling in any letter case.
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                [$(<$type>::$variant),+]
                    .into_iter()
                    .find(|value| value.as_str().eq_ignore_ascii_case(text))
                    .ok_or_else(|| UnknownValue { what: $what, value: text.to_owned() })
            }
        }

        impl TryFrom<String> for $type {
            type Error = UnknownValue;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }
    };
}

text_enum!(
    SagaStatus,
    "saga status",
    [
        Created,
        Running,
        Compensating,
        Completed,
        Compensated,
        Failed
    ]
);
text_enum!(Phase, "phase", [Action, Compensation]);
text_enum!(
    StepOutcome,
    "step outcome",
    [Succeeded, Rejected, Retrying, Exhausted, Sent, Resent]
);
text_enum!(FailureKind, "failure kind", [Rejected, Exhausted]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_in_any_case() {
        for status in SagaStatus::ALL {
            assert_eq!(status.as_str().parse::<SagaStatus>(), Ok(status));
            assert_eq!(
                status.as_str().to_lowercase().parse::<SagaStatus>(),
                Ok(status)
            );
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::String(status.as_str().to_owned()))
            );
        }
        assert!("DONE".parse::<SagaStatus>().is_err());
    }

    #[test]
    fn only_terminal_statuses_are_finished() {
        let finished: Vec<_> = SagaStatus::ALL
            .into_iter()
            .filter(|status| status.is_finished())
            .collect();
        assert_eq!(
            finished,
            [
                SagaStatus::Completed,
                SagaStatus::Compensated,
                SagaStatus::Failed
            ]
        );
    }

    #[test]
    fn outcomes_and_phases_round_trip() {
        for outcome in [
            StepOutcome::Succeeded,
            StepOutcome::Rejected,
            StepOutcome::Retrying,
            StepOutcome::Exhausted,
            StepOutcome::Sent,
            StepOutcome::Resent,
        ] {
            assert_eq!(outcome.as_str().parse::<StepOutcome>(), Ok(outcome));
        }
        for phase in [Phase::Action, Phase::Compensation] {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
    }
}
