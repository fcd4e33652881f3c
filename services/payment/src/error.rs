//! The one error type of the service.
//!
//! Every use case fails with a [`PaymentError`]. Each variant is documented
//! with what it becomes on each surface — HTTP status and problem `code`,
//! gRPC status code, with the same stable code in the `x-error-code`
//! metadata — and the translation happens exactly once per surface:
//! `IntoResponse` in [`crate::http`] and `status` in [`crate::grpc`]. The
//! saga's command consumer never sees most of these: a refused charge is an
//! *answer* (a `declined` reply), not an error; only failures worth a retry
//! reach it ([`PaymentError::is_transient`]).

use std::fmt;

use eventstore::{EventStoreError, OutboxError, RepositoryError};
use platform::validation::{self, FieldViolation, Violations};

use crate::domain::wallet::WalletError;

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// HTTP 422 `VALIDATION_FAILED` (with `errors` per field); gRPC
    /// `INVALID_ARGUMENT`.
    #[error("invalid request: {}", validation::summary(.0))]
    Validation(Vec<FieldViolation>),

    /// HTTP 401 `UNAUTHENTICATED`; gRPC `UNAUTHENTICATED`: no valid
    /// `x-user-id`.
    #[error("the caller is not authenticated")]
    Unauthenticated,

    /// HTTP 403 `FORBIDDEN`; gRPC `PERMISSION_DENIED`: an admin route without
    /// the `admin` role in `x-user-roles`.
    #[error("the admin role is required")]
    Forbidden,

    /// HTTP 404 `ACCOUNT_NOT_FOUND`; gRPC `NOT_FOUND`: the user has no wallet
    /// (yet: it opens shortly after registration).
    #[error("the user has no wallet")]
    AccountNotFound,

    /// HTTP 409 `ACCOUNT_FROZEN`; gRPC `FAILED_PRECONDITION`.
    #[error("the wallet is frozen")]
    AccountFrozen,

    /// HTTP 409 `ACCOUNT_CLOSED`; gRPC `FAILED_PRECONDITION`.
    #[error("the wallet is closed")]
    AccountClosed,

    /// HTTP 409 `PAYOUT_IBAN_REQUIRED`; gRPC `FAILED_PRECONDITION`: closing a
    /// wallet that still holds money, with nowhere to pay it out to.
    #[error("the wallet holds {0} and has no payout IBAN to pay it out to")]
    PayoutIbanRequired(String),

    /// HTTP 422 `IDEMPOTENCY_KEY_REUSED`; gRPC `FAILED_PRECONDITION`: the
    /// `Idempotency-Key` was used before with a different request.
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,

    /// HTTP 503 `UNAVAILABLE`; gRPC `UNAVAILABLE`: a failure worth retrying
    /// (write conflicts that kept coming, an injected fault).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),

    /// HTTP 503 `UNAVAILABLE`; gRPC `UNAVAILABLE`: the database cannot be
    /// reached. A consumer holds its message until it can
    /// ([`messaging::Nack::unavailable`]) instead of spending its attempts.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),

    /// HTTP 500 `INTERNAL`; gRPC `INTERNAL`: a bug or corrupt stored data.
    /// The details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PaymentError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl ToString) -> Self {
        Self::Validation(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(error: impl fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// The stable machine-readable code (problem `code`, `x-error-code`).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_FAILED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::AccountFrozen => "ACCOUNT_FROZEN",
            Self::AccountClosed => "ACCOUNT_CLOSED",
            Self::PayoutIbanRequired(_) => "PAYOUT_IBAN_REQUIRED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// Whether the same request may succeed later (a consumer requeues it).
    pub const fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::DatabaseUnavailable(_))
    }

    /// How a consumer gives back the message this error stopped: held while
    /// the database is down, retried (counted) for other passing failures,
    /// dead-lettered for the rest.
    pub fn nack(&self) -> messaging::Nack {
        match self {
            Self::DatabaseUnavailable(_) => messaging::Nack::unavailable(self.to_string()),
            _ if self.is_transient() => messaging::Nack::requeue(self.to_string()),
            _ => messaging::Nack::reject(self.to_string()),
        }
    }

    /// Logs server-side failures once, where they are turned into a
    /// response; client errors are the client's business.
    pub fn log(&self) {
        match self {
            Self::Internal(_) => tracing::error!(error = %self, "request failed"),
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => {
                tracing::warn!(error = %self, "request failed");
            }
            _ => {}
        }
    }
}

impl From<WalletError> for PaymentError {
    fn from(error: WalletError) -> Self {
        match error {
            WalletError::NotOpened => Self::AccountNotFound,
            WalletError::Frozen => Self::AccountFrozen,
            WalletError::Closed => Self::AccountClosed,
            WalletError::CurrencyMismatch { account, .. } => Self::invalid(
                "amount.currency",
                format!("the wallet holds {account}; use that currency"),
            ),
            WalletError::PayoutIbanRequired { balance } => {
                Self::PayoutIbanRequired(balance.to_string())
            }
            WalletError::Overflow => Self::invalid("amount", "the balance would become too large"),
        }
    }
}

impl From<Violations> for PaymentError {
    fn from(violations: Violations) -> Self {
        Self::Validation(violations.into())
    }
}

impl From<sqlx::Error> for PaymentError {
    /// Connectivity problems are worth waiting for
    /// ([`platform::db::is_unavailable`]), conflicts worth a retry
    /// ([`platform::db::is_transient`]); anything else reaching here is a bug.
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_unavailable(&error) {
            Self::DatabaseUnavailable(error.to_string())
        } else if platform::db::is_transient(&error) {
            Self::Unavailable(format!("database: {error}"))
        } else {
            Self::Internal(format!("database: {error}"))
        }
    }
}

impl From<EventStoreError> for PaymentError {
    fn from(error: EventStoreError) -> Self {
        match error {
            EventStoreError::Database(error) => error.into(),
            EventStoreError::Fault(fault) => fault.into(),
            error if error.is_conflict() => Self::Unavailable(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RepositoryError> for PaymentError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Store(error) => error.into(),
            RepositoryError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<OutboxError> for PaymentError {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<platform::faults::InjectedFault> for PaymentError {
    fn from(fault: platform::faults::InjectedFault) -> Self {
        Self::Unavailable(fault.to_string())
    }
}
