//! The one error type of the service.
//!
//! Every use case returns [`OrderError`]; each variant says what went wrong
//! in the caller's terms and is documented with the gRPC status code, the
//! stable `x-error-code` / problem `code`, and the HTTP status it becomes.
//! The translations happen once each — [`crate::grpc::status`] and
//! [`crate::http::problem`] — so the same failure reaches every client the
//! same way.

use eventstore::{OutboxError, RepositoryError, WaitError};
use platform::validation::{self, FieldViolation, Violations};

use crate::domain::ids::{OrderId, ProductId};
use crate::domain::order::{OrderRuleError, OrderStatus};

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// `INVALID_ARGUMENT`, `VALIDATION_FAILED`, HTTP 422; a `BadRequest`
    /// detail (the problem's `errors`) names every bad field.
    #[error("invalid request: {}", validation::summary(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// `UNAUTHENTICATED`, `UNAUTHENTICATED`, HTTP 401: no valid `x-user-id`.
    #[error("the caller is not authenticated")]
    Unauthenticated,

    /// `PERMISSION_DENIED`, `FORBIDDEN`, HTTP 403: an admin-only call without
    /// the `admin` role.
    #[error("the {0} role is required")]
    Forbidden(&'static str),

    /// `NOT_FOUND`, `ORDER_NOT_FOUND`, HTTP 404: no such order — or another
    /// customer's, whose existence is not revealed.
    #[error("order {0} not found")]
    OrderNotFound(OrderId),

    /// `INVALID_ARGUMENT`, `PRODUCT_NOT_FOUND`, HTTP 422: an item names a
    /// product that does not exist or is not for sale.
    #[error("{field}: product {product_id} does not exist or is not for sale")]
    ProductNotFound {
        field: String,
        product_id: ProductId,
    },

    /// `ALREADY_EXISTS`, `IDEMPOTENCY_KEY_REUSED`, HTTP 422: the idempotency
    /// key was used before for different items.
    #[error("idempotency key {0:?} was used for a different order")]
    IdempotencyKeyReused(String),

    /// `FAILED_PRECONDITION`, `ORDER_NOT_CANCELLABLE`, HTTP 409: only a
    /// CONFIRMED order can be cancelled.
    #[error("order {order_id} is {status} and cannot be cancelled")]
    NotCancellable {
        order_id: OrderId,
        status: OrderStatus,
    },

    /// `FAILED_PRECONDITION`, `INVALID_TRANSITION`, HTTP 409: any other
    /// command the order's status forbids.
    #[error("{0}")]
    InvalidTransition(OrderRuleError),

    /// `ABORTED`, `CONCURRENT_UPDATE`, HTTP 409: the order changed while the
    /// command was decided, again and again; retry.
    #[error("order {0} was changed concurrently; retry")]
    Conflict(String),

    /// `UNAVAILABLE`, `UPSTREAM_UNAVAILABLE`, HTTP 503: a service this one
    /// depends on (the inventory) could not answer.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),

    /// `UNAVAILABLE`, `UNAVAILABLE`, HTTP 503: a dependency failed in a way
    /// worth retrying (the database, a read model that has not caught up in
    /// time, an injected fault).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),

    /// `INTERNAL`, `INTERNAL`, HTTP 500: a bug or corrupt stored data. The
    /// details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl OrderError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl ToString) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// The stable machine-readable code (`x-error-code`, problem `code`).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "VALIDATION_FAILED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::OrderNotFound(_) => "ORDER_NOT_FOUND",
            Self::ProductNotFound { .. } => "PRODUCT_NOT_FOUND",
            Self::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            Self::NotCancellable { .. } => "ORDER_NOT_CANCELLABLE",
            Self::InvalidTransition(_) => "INVALID_TRANSITION",
            Self::Conflict(_) => "CONCURRENT_UPDATE",
            Self::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// Whether trying the same thing again later may succeed (a saga step
    /// retries these, and nothing else).
    pub const fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Conflict(_) | Self::UpstreamUnavailable(_) | Self::Unavailable(_)
        )
    }

    /// A domain refusal of `order_id`'s command.
    pub fn rule(order_id: OrderId, error: OrderRuleError) -> Self {
        match error {
            OrderRuleError::NotPlaced => Self::OrderNotFound(order_id),
            OrderRuleError::NotCancellable { status } => Self::NotCancellable { order_id, status },
            other => Self::InvalidTransition(other),
        }
    }
}

impl From<Violations> for OrderError {
    fn from(violations: Violations) -> Self {
        Self::InvalidArgument(violations.into())
    }
}

impl From<sqlx::Error> for OrderError {
    /// Connectivity problems are worth a retry
    /// ([`platform::db::is_transient`]); anything else reaching here is a bug.
    fn from(error: sqlx::Error) -> Self {
        if platform::db::is_transient(&error) {
            Self::Unavailable(format!("database: {error}"))
        } else {
            Self::Internal(format!("database: {error}"))
        }
    }
}

impl From<RepositoryError> for OrderError {
    fn from(error: RepositoryError) -> Self {
        if error.is_conflict() {
            return Self::Conflict(error.to_string());
        }
        match error {
            RepositoryError::Database(error) => error.into(),
            RepositoryError::Store(eventstore::EventStoreError::Database(error)) => error.into(),
            RepositoryError::Store(eventstore::EventStoreError::Fault(fault)) => fault.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<OutboxError> for OrderError {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<platform::faults::InjectedFault> for OrderError {
    fn from(fault: platform::faults::InjectedFault) -> Self {
        Self::Unavailable(fault.to_string())
    }
}

/// Why a `consistency_token` is refused: it does not parse, or it names no
/// event in the log.
pub const TOKEN_NOT_ISSUED: &str = "is not a token this service issued";

impl From<WaitError> for OrderError {
    fn from(error: WaitError) -> Self {
        match error {
            WaitError::NotIssued(_) => Self::invalid("consistency_token", TOKEN_NOT_ISSUED),
            WaitError::Timeout { .. } => Self::Unavailable(error.to_string()),
            WaitError::Projection(error) => Self::Unavailable(error.to_string()),
        }
    }
}

impl From<saga::SagaError> for OrderError {
    fn from(error: saga::SagaError) -> Self {
        match error {
            saga::SagaError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<saga::query::QueryError> for OrderError {
    fn from(error: saga::query::QueryError) -> Self {
        match error {
            saga::query::QueryError::Database(error) => error.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}
