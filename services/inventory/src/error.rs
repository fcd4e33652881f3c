//! The one error type of the service.
//!
//! Every use case returns [`InventoryError`]; each variant says what went
//! wrong in the caller's terms and is documented with the gRPC status code
//! (and the stable `x-error-code`) it becomes. The translation itself happens
//! once, in [`crate::grpc`]: handlers never build a `tonic::Status` by hand, so
//! the same failure always reaches a client the same way.

use platform::validation::{self, FieldViolation, Violations};

use crate::domain::product::{ProductId, Sku};
use crate::domain::reservation::{ReservationError, ReservationId, Shortage};
use crate::domain::stock::StockError;

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// `INVALID_ARGUMENT`, `VALIDATION_FAILED`, with a `BadRequest` detail
    /// listing every bad field.
    #[error("invalid request: {}", validation::summary(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// `UNAUTHENTICATED`, `UNAUTHENTICATED`: an admin-only call without a
    /// valid caller identity.
    #[error("the caller is not authenticated")]
    Unauthenticated,

    /// `PERMISSION_DENIED`, `FORBIDDEN`: the caller lacks the `admin` role.
    #[error("the {0} role is required")]
    Forbidden(&'static str),

    /// `NOT_FOUND`, `PRODUCT_NOT_FOUND`: no such product (or, when reserving,
    /// an inactive one).
    #[error("product {0} not found")]
    ProductNotFound(ProductId),

    /// `NOT_FOUND`, `RESERVATION_NOT_FOUND`.
    #[error("reservation {0} not found")]
    ReservationNotFound(ReservationId),

    /// `ALREADY_EXISTS`, `SKU_TAKEN`.
    #[error("SKU {0} is already used by another product")]
    SkuTaken(Sku),

    /// `FAILED_PRECONDITION`, `INSUFFICIENT_STOCK`, with `ErrorInfo` and
    /// `PreconditionFailure` details naming each short product with the
    /// requested and available quantities. Never empty.
    #[error("insufficient stock: {}", describe_shortages(.0))]
    InsufficientStock(Vec<Shortage>),

    /// `ALREADY_EXISTS`, `RESERVATION_MISMATCH`: the reservation id is taken
    /// by a reservation of other products or quantities.
    #[error("reservation {0} already exists with different lines")]
    ReservationMismatch(ReservationId),

    /// `FAILED_PRECONDITION`, `RESERVATION_RELEASED` or `RESERVATION_EXPIRED`.
    #[error("reservation {id}: {reason}")]
    Reservation {
        id: ReservationId,
        reason: ReservationError,
    },

    /// `UNAVAILABLE`, `UNAVAILABLE`: a dependency failed in a way worth
    /// retrying (the database is unreachable, the pool is exhausted, a fault
    /// was injected).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),

    /// `INTERNAL`, `INTERNAL`: a bug or corrupt stored data. The details are
    /// logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InventoryError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl ToString) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The stable machine-readable code of `x-error-code`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "VALIDATION_FAILED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::ProductNotFound(_) => "PRODUCT_NOT_FOUND",
            Self::ReservationNotFound(_) => "RESERVATION_NOT_FOUND",
            Self::SkuTaken(_) => "SKU_TAKEN",
            Self::InsufficientStock(_) => "INSUFFICIENT_STOCK",
            Self::ReservationMismatch(_) => "RESERVATION_MISMATCH",
            Self::Reservation {
                reason: ReservationError::Released,
                ..
            } => "RESERVATION_RELEASED",
            Self::Reservation {
                reason: ReservationError::Expired,
                ..
            } => "RESERVATION_EXPIRED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Violations> for InventoryError {
    fn from(violations: Violations) -> Self {
        Self::InvalidArgument(violations.into())
    }
}

impl From<sqlx::Error> for InventoryError {
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

impl From<platform::faults::InjectedFault> for InventoryError {
    fn from(fault: platform::faults::InjectedFault) -> Self {
        Self::Unavailable(fault.to_string())
    }
}

impl From<StockError> for InventoryError {
    /// Only for stock changes whose feasibility was already established
    /// (releasing or committing reserved units): a refusal there means the
    /// stored counters are inconsistent.
    fn from(error: StockError) -> Self {
        Self::Internal(format!("stock: {error}"))
    }
}

fn describe_shortages(shortages: &[Shortage]) -> String {
    shortages
        .iter()
        .map(|s| {
            format!(
                "product {} requested {}, available {}",
                s.product_id, s.requested, s.available
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
