//! Failed calls, the one way every Ferrishop service reports them.
//!
//! `ferrishop/common/v1/common.proto` is the contract: a standard gRPC code,
//! and the stable machine-readable error code (`INSUFFICIENT_STOCK`,
//! `VALIDATION_FAILED`, ...) in the [`ERROR_CODE`] metadata, which the
//! gateway copies to the problem+json `code`. [`ErrorDomain::status_with`]
//! builds exactly that, plus the same code as the `reason` of a
//! `google.rpc.ErrorInfo` rich detail in the service's domain, so every
//! service's failures look alike on the wire. Each service still decides
//! which gRPC code, which stable code and which details its own errors get;
//! this is only the shared last step.

use std::collections::HashMap;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::metadata::ERROR_CODE;

/// What an `INTERNAL` status says, whatever went wrong.
pub const INTERNAL_MESSAGE: &str = "internal error";

/// A service's `google.rpc.ErrorInfo.domain` (`<service>.ferrishop.dev`),
/// through which its failed calls become [`Status`]es.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorDomain(&'static str);

impl ErrorDomain {
    pub const fn new(domain: &'static str) -> Self {
        Self(domain)
    }

    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// [`Self::status_with`] with no facts and no other details.
    pub fn status(
        self,
        code: Code,
        error_code: &'static str,
        message: impl Into<String>,
    ) -> Status {
        self.status_with(
            code,
            error_code,
            message,
            HashMap::new(),
            ErrorDetails::new(),
        )
    }

    /// A failed call:
    ///
    /// - `code` and `message` — except that an `INTERNAL` status always says
    ///   just [`INTERNAL_MESSAGE`]: what went wrong inside (a query, a row, a
    ///   host name) is for the service's own logs, never for the caller;
    /// - `error_code` (an upper-case constant such as `INSUFFICIENT_STOCK`) in
    ///   the `x-error-code` metadata, and as the `reason` of a
    ///   `google.rpc.ErrorInfo` in this domain whose metadata is `info`
    ///   (facts a client may act on, such as `product_id`);
    /// - the other rich `details` (bad-request field violations, precondition
    ///   failures, ...), as built by the service.
    pub fn status_with(
        self,
        code: Code,
        error_code: &'static str,
        message: impl Into<String>,
        info: HashMap<String, String>,
        mut details: ErrorDetails,
    ) -> Status {
        details.set_error_info(error_code, self.0, info);
        let message = if code == Code::Internal {
            INTERNAL_MESSAGE.to_owned()
        } else {
            message.into()
        };
        let mut metadata = MetadataMap::new();
        // An error code is an ASCII constant, so this always succeeds; were it
        // not, the ErrorInfo above would still carry it.
        if let Ok(value) = MetadataValue::try_from(error_code) {
            metadata.insert(ERROR_CODE, value);
        }
        Status::with_error_details_and_metadata(code, message, details, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: ErrorDomain = ErrorDomain::new("order.ferrishop.dev");

    #[test]
    fn the_error_code_travels_in_metadata_and_error_info() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("items", "must not be empty");
        let info = HashMap::from([("order_id".to_owned(), "42".to_owned())]);
        let status = ORDERS.status_with(
            Code::InvalidArgument,
            "VALIDATION_FAILED",
            "items: must not be empty",
            info.clone(),
            details,
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "items: must not be empty");
        assert_eq!(
            status.metadata().get(ERROR_CODE).unwrap(),
            "VALIDATION_FAILED"
        );
        let error_info = status.get_details_error_info().unwrap();
        assert_eq!(error_info.reason, "VALIDATION_FAILED");
        assert_eq!(error_info.domain, ORDERS.as_str());
        assert_eq!(error_info.metadata, info);
        let bad_request = status.get_details_bad_request().unwrap();
        assert_eq!(bad_request.field_violations[0].field, "items");
    }

    #[test]
    fn without_details_there_is_still_the_error_info() {
        let status = ORDERS.status(Code::NotFound, "ORDER_NOT_FOUND", "no such order");
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "no such order")
        );
        assert_eq!(
            status.metadata().get(ERROR_CODE).unwrap(),
            "ORDER_NOT_FOUND"
        );
        let error_info = status.get_details_error_info().unwrap();
        assert_eq!(
            (error_info.reason.as_str(), error_info.domain.as_str()),
            ("ORDER_NOT_FOUND", "order.ferrishop.dev")
        );
        assert!(status.get_details_bad_request().is_none());
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = ORDERS.status(
            Code::Internal,
            "INTERNAL",
            "internal error: connection to db-1.internal:5432 refused",
        );
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert_eq!(status.metadata().get(ERROR_CODE).unwrap(), "INTERNAL");
    }
}
