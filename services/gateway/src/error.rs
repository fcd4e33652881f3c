//! The gateway's one error type, and the one place it becomes a response.
//!
//! Everything a handler can fail with ends up here: a refused token, a rate
//! limit, an upstream that is down, or an upstream's own answer (a gRPC
//! status from order or inventory). Each variant documents the status it
//! maps to; the body is always RFC 9457 problem+json with a stable `code`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use platform::problem::Problem;
use tonic::Code;
use tonic_types::StatusExt;

/// Why the gateway could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`: no token, or
    /// one that is expired, forged or meant for someone else.
    #[error("not authenticated: {0}")]
    Unauthenticated(#[from] auth::VerifyError),

    /// 503 `UPSTREAM_UNAVAILABLE`: a token was presented, but the user
    /// service's keys have not been loaded since start.
    #[error("{0}")]
    KeysUnavailable(crate::auth::TokenError),

    /// 403 `FORBIDDEN`: authenticated, but the route needs a role the caller
    /// does not have.
    #[error("this route needs the {0:?} role")]
    Forbidden(&'static str),

    /// 404 `NOT_FOUND`: nothing at this route, or nothing the caller may see
    /// (another user's order is reported as missing, never as forbidden).
    #[error("{0}")]
    NotFound(String),

    /// 400 `BAD_REQUEST`: the body could not be read (the client broke
    /// the connection or the framing).
    #[error("the request body could not be read")]
    BodyUnreadable,

    /// 408 `REQUEST_TIMEOUT`: the body did not arrive in time.
    #[error("the request body did not arrive within {deadline:?}")]
    BodyTimeout { deadline: Duration },

    /// 413 `PAYLOAD_TOO_LARGE`: the body is over the gateway's limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },

    /// 422 `VALIDATION_FAILED` with one message per field.
    #[error("invalid fields: {0:?}")]
    Validation(BTreeMap<String, String>),

    /// 429 `RATE_LIMITED` with `Retry-After`.
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },

    /// 503 `UPSTREAM_UNAVAILABLE` when the call was refused locally (breaker
    /// open, bulkhead full, no healthy instance), 504 on a timeout, 502 when
    /// the upstream could not be reached or answered garbage.
    #[error(transparent)]
    Upstream(#[from] resilience::Error),

    /// An upstream's gRPC status, mapped by its code and its `x-error-code`
    /// metadata; see [`problem_from_status`].
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),

    /// 500 `INTERNAL`: a bug or an answer the gateway cannot translate.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::auth::TokenError> for ApiError {
    fn from(error: crate::auth::TokenError) -> Self {
        match error {
            crate::auth::TokenError::Refused(refused) => Self::Unauthenticated(refused),
            unavailable => Self::KeysUnavailable(unavailable),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl ApiError {
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    /// The problem document this error is reported as.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Unauthenticated(error) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                error.to_string(),
            ),
            Self::KeysUnavailable(error) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                error.to_string(),
            ),
            Self::Forbidden(_) => {
                Problem::new(StatusCode::FORBIDDEN, "FORBIDDEN", self.to_string())
            }
            Self::NotFound(what) => Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", what),
            Self::BodyUnreadable => {
                Problem::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", self.to_string())
            }
            Self::BodyTimeout { .. } => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                self.to_string(),
            ),
            Self::PayloadTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                self.to_string(),
            ),
            Self::Validation(errors) => Problem::validation(errors.clone()),
            Self::RateLimited { .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                self.to_string(),
            ),
            Self::Upstream(error) => {
                let status = match error {
                    resilience::Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                    error if error.is_fail_fast() => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                // What failed inside (a connection error, an address) is for
                // the log, not the client.
                let detail = match error {
                    resilience::Error::Upstream { upstream, .. } => {
                        format!("call to {upstream} failed")
                    }
                    other => other.to_string(),
                };
                Problem::new(status, "UPSTREAM_UNAVAILABLE", detail)
            }
            Self::Status(status) => problem_from_status(status),
            Self::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the gateway failed to handle the request",
            ),
        }
    }
}

/// gRPC status → problem: the HTTP status from the code, the `code` from the
/// service's `x-error-code` metadata (else one derived from the gRPC code),
/// field errors from `google.rpc.BadRequest` details.
fn problem_from_status(status: &tonic::Status) -> Problem {
    let (http, fallback) = match status.code() {
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::InvalidArgument | Code::OutOfRange => {
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED")
        }
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => {
            (StatusCode::CONFLICT, "CONFLICT")
        }
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        Code::DeadlineExceeded | Code::Cancelled => {
            (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_UNAVAILABLE")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    };
    let code = status
        .metadata()
        .get(proto::metadata::ERROR_CODE)
        .and_then(|value| value.to_str().ok())
        .filter(|code| !code.is_empty())
        .unwrap_or(fallback);
    // A service's own account of a failure (a database error, a read
    // model's position) is for the log, not the client.
    let detail = match http {
        _ if !http.is_server_error() => status.message().to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => "the service is unavailable; retry later".to_owned(),
        StatusCode::GATEWAY_TIMEOUT => "the service did not answer in time".to_owned(),
        _ => "an upstream service failed".to_owned(),
    };
    let mut problem = Problem::new(http, code, detail);
    if let Some(bad_request) = status.get_details_bad_request() {
        problem.errors = bad_request
            .field_violations
            .into_iter()
            .map(|violation| (violation.field, violation.description))
            .collect();
    }
    problem
}

impl From<Vec<platform::validation::FieldViolation>> for ApiError {
    fn from(violations: Vec<platform::validation::FieldViolation>) -> Self {
        Self::Validation(platform::validation::by_field(&violations))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated(error) => {
                let challenge = match error {
                    auth::VerifyError::Missing => "Bearer".to_owned(),
                    error => format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        error.kind()
                    ),
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Self::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(platform::problem::retry_after_secs(*retry_after)),
                );
            }
            // The rest of the body is not read: the connection cannot carry
            // another request, and the client is told so (RFC 9112 §9.6).
            // HTTP/2 has no such header; hyper leaves it out there.
            Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } | Self::BodyUnreadable => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn service_error_code_and_field_errors_survive() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("items[0].quantity", "must be at least 1");
        let mut status =
            tonic::Status::with_error_details(Code::InvalidArgument, "invalid order", details);
        status.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("VALIDATION_FAILED"),
        );
        let problem = ApiError::from(status).problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "VALIDATION_FAILED");
        assert_eq!(problem.errors["items[0].quantity"], "must be at least 1");
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let cases = [
            (Code::NotFound, 404, "NOT_FOUND"),
            (Code::FailedPrecondition, 409, "CONFLICT"),
            (Code::Unauthenticated, 401, "UNAUTHENTICATED"),
            (Code::PermissionDenied, 403, "FORBIDDEN"),
            (Code::ResourceExhausted, 429, "RATE_LIMITED"),
            (Code::Unavailable, 503, "UPSTREAM_UNAVAILABLE"),
            (Code::DeadlineExceeded, 504, "UPSTREAM_UNAVAILABLE"),
            (Code::Internal, 500, "INTERNAL"),
        ];
        for (code, status, expected) in cases {
            let problem = ApiError::from(tonic::Status::new(code, "x")).problem();
            assert_eq!(
                (problem.status, problem.code.as_str()),
                (status, expected),
                "{code:?}"
            );
        }
    }

    #[test]
    fn internal_details_are_not_leaked() {
        let problem = ApiError::from(tonic::Status::internal("password table on fire")).problem();
        assert!(!problem.detail.contains("password"));
        let unavailable = tonic::Status::unavailable("database: pool timed out on db-3:5432");
        let problem = ApiError::from(unavailable).problem();
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!problem.detail.contains("db-3"), "{}", problem.detail);
        let unreachable = resilience::Error::Upstream {
            upstream: "user".into(),
            source: "tcp connect error: 10.0.0.5:8081: connection refused".into(),
        };
        let problem = ApiError::Upstream(unreachable).problem();
        assert_eq!(problem.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(problem.detail, "call to user failed");
    }

    #[test]
    fn refused_token_challenges_with_bearer() {
        let response = ApiError::Unauthenticated(auth::VerifyError::Expired).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(challenge.contains("expired"), "{challenge}");
    }

    #[test]
    fn rate_limited_rounds_retry_after_up() {
        let response = ApiError::RateLimited {
            retry_after: Duration::from_millis(1_200),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn an_oversized_body_closes_the_connection() {
        let response = ApiError::PayloadTooLarge { limit: 1024 }.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn open_breaker_is_503_and_timeout_504() {
        let open = ApiError::from(resilience::Error::CircuitOpen {
            upstream: "inventory".into(),
        });
        assert_eq!(open.problem().status, 503);
        assert_eq!(open.problem().code, "UPSTREAM_UNAVAILABLE");
        let slow = ApiError::from(resilience::Error::Timeout {
            upstream: "inventory".into(),
        });
        assert_eq!(slow.problem().status, 504);
    }
}
