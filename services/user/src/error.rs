//! The one error type of the user service's use cases.
//!
//! Each variant says what went wrong in the caller's terms and documents the
//! answer it becomes. The adapters translate it exactly once each —
//! `http.rs` into a problem+json response, `grpc.rs` into a `tonic::Status`
//! carrying [`Error::code`] in the `x-error-code` metadata — so the two
//! protocols can never disagree about a case. Details of internal failures
//! are logged there and never sent.

use std::time::Duration;

use platform::validation::{FieldViolation, summary};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Request fields failed validation.
    /// HTTP 422 `VALIDATION_FAILED` with an `errors` entry per field; gRPC
    /// `INVALID_ARGUMENT`.
    #[error("invalid fields: {}", summary(.0))]
    Validation(Vec<FieldViolation>),

    /// The request as a whole is unacceptable (e.g. too many ids at once).
    /// HTTP 400 `BAD_REQUEST`; gRPC `INVALID_ARGUMENT`.
    #[error("{0}")]
    BadRequest(String),

    /// Registration with an address that already has an account (in any
    /// letter case). HTTP 409 `EMAIL_TAKEN`; gRPC `ALREADY_EXISTS`.
    #[error("an account with this e-mail address already exists")]
    EmailTaken,

    /// Unknown e-mail address or wrong password: deliberately one case, so
    /// the answer never reveals whether an address has an account.
    /// HTTP 401 `INVALID_CREDENTIALS` with `WWW-Authenticate: Bearer`, as
    /// every 401; gRPC `UNAUTHENTICATED`.
    #[error("e-mail address or password is incorrect")]
    InvalidCredentials,

    /// The refresh token is unknown, expired, already used or revoked.
    /// HTTP 401 `INVALID_REFRESH_TOKEN`; gRPC `UNAUTHENTICATED`.
    #[error("the refresh token is invalid, expired or revoked; log in again")]
    InvalidRefreshToken,

    /// A route for the signed-in user was called without a valid caller id
    /// (`x-user-id`, set by the gateway). HTTP 401 `UNAUTHENTICATED`; gRPC
    /// `UNAUTHENTICATED`.
    #[error("authentication required")]
    Unauthenticated,

    /// No such user, or not one the caller may see.
    /// HTTP 404 `USER_NOT_FOUND`; gRPC `NOT_FOUND`.
    #[error("no such user")]
    UserNotFound,

    /// Too many login attempts for one account.
    /// HTTP 429 `RATE_LIMITED` with `Retry-After`; gRPC `RESOURCE_EXHAUSTED`.
    #[error("too many login attempts; retry in {} s", platform::problem::retry_after_secs(*.retry_after))]
    RateLimited { retry_after: Duration },

    /// The database cannot be reached right now; retrying later may work.
    /// HTTP 503 `UNAVAILABLE` (the code every service gives this case);
    /// gRPC `UNAVAILABLE`.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),

    /// Anything else: a bug or a broken invariant.
    /// HTTP 500 `INTERNAL`; gRPC `INTERNAL`.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The stable, machine-readable code clients switch on (problem+json
    /// `code`, gRPC `x-error-code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_FAILED",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::InvalidRefreshToken => "INVALID_REFRESH_TOKEN",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// The error and its whole cause chain, the way an operator wants to
    /// read it (`Display` alone is what a client may see).
    pub fn report(&self) -> String {
        chain(self)
    }

    /// Logs the failures that are ours rather than the caller's, with their
    /// whole cause chain. Adapters call it once per failed request.
    pub fn log(&self) {
        match self {
            Self::Unavailable(_) => {
                tracing::warn!(error = %self.report(), "request failed");
            }
            Self::Internal(_) => {
                tracing::error!(error = %self.report(), "request failed");
            }
            _ => {}
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        // A failover or a serialization failure is worth a retry by the
        // client; anything else reaching here is a bug.
        if platform::db::is_transient(&error) {
            Self::Unavailable(error)
        } else {
            Self::internal(error)
        }
    }
}

/// `error: cause: cause`, the way an operator wants to read it.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_the_cause_chain() {
        let error = Error::Internal("stored password hash: invalid salt".into());
        assert_eq!(error.to_string(), "internal error");
        assert_eq!(
            error.report(),
            "internal error: stored password hash: invalid salt"
        );
    }
}
