//! Translation between the services' protobuf and the public JSON, for the
//! gRPC-backed REST routes (catalogue, orders, admin).
//!
//! Order and inventory speak protobuf; the public API speaks the JSON of
//! DESIGN.md. The pieces every translation needs live here once, so the
//! three route modules agree on them: money, timestamps, the list envelope,
//! query reading that turns bad values into 422 problems naming the field,
//! and [`upstream_error`], which renames a service's request-field paths
//! (`page.cursor`, `product_id`, ...) to the REST names the client sent
//! (`cursor`, `id`, ...) before the error becomes problem+json.
//!
//! The OpenAPI schemas of the problem document and of money are defined here
//! too ([`ProblemDocument`], [`Money`]), since `platform::problem::Problem`
//! carries no schema of its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proto::ferrishop::common::v1 as common;
use serde::{Deserialize, Serialize};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tower_http::request_id::RequestId;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// An RFC 9457 problem document, as every error of the API is reported
/// (the schema of `platform::problem::Problem`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem, derived from `code`.
    #[serde(rename = "type")]
    #[schema(example = "https://ferrishop.dev/problems/validation-failed")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    #[schema(example = "Unprocessable Entity")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong, for humans.
    pub detail: String,
    /// Stable machine-readable code (`VALIDATION_FAILED`, `INSUFFICIENT_STOCK`,
    /// `ORDER_NOT_CANCELLABLE`, `UPSTREAM_UNAVAILABLE`, ...).
    #[schema(example = "VALIDATION_FAILED")]
    pub code: String,
    /// One message per invalid field, by field name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}

/// An amount of money: integer minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"amount": 1999, "currency": "EUR"}))]
pub struct Money {
    /// Minor units (cents for EUR: 1999 is 19.99 EUR).
    pub amount: i64,
    /// ISO 4217 code, upper case.
    #[schema(example = "EUR")]
    pub currency: String,
}

impl From<common::Money> for Money {
    fn from(money: common::Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

impl From<Money> for common::Money {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

/// A money field of a service's message; an absent one (never sent by a
/// healthy service) reads as zero of no currency rather than failing the
/// whole answer.
pub fn money(money: Option<common::Money>) -> Money {
    money.map(Money::from).unwrap_or(Money {
        amount: 0,
        currency: String::new(),
    })
}

/// A protobuf timestamp as RFC 3339 UTC; absent or out of range reads as
/// the Unix epoch (a healthy service always sets the ones this is used for).
pub fn timestamp(timestamp: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    optional_timestamp(timestamp).unwrap_or_default()
}

/// A timestamp that may legitimately be unset (a saga step not started).
pub fn optional_timestamp(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(|timestamp| {
        DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
    })
}

/// The request id to send upstream, from the extension the request-id
/// layer sets.
pub fn id_of(request_id: &Option<axum::Extension<RequestId>>) -> Option<&RequestId> {
    request_id.as_ref().map(|axum::Extension(id)| id)
}

/// Empty strings are how protobuf says "none".
pub fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A path or query id: a UUID, in its canonical text form upstream.
pub fn parse_id(text: &str) -> Result<String, &'static str> {
    parse_uuid(text).map(|id| id.to_string())
}

fn parse_uuid(text: &str) -> Result<Uuid, &'static str> {
    Uuid::try_parse(text.trim()).map_err(|_| "must be a UUID")
}

/// A single path id in its canonical text form, or a 422 naming `field`.
pub fn path_id(field: &str, text: &str) -> Result<String, ApiError> {
    path_uuid(field, text).map(|id| id.to_string())
}

/// A single path id, or a 422 naming `field`.
pub fn path_uuid(field: &str, text: &str) -> Result<Uuid, ApiError> {
    parse_uuid(text).map_err(|error| {
        ApiError::Validation(BTreeMap::from([(field.to_owned(), error.to_owned())]))
    })
}

/// `?cursor=`: opaque, passed on as given; empty means the first page.
pub fn cursor(text: Option<String>) -> String {
    text.map(|text| text.trim().to_owned()).unwrap_or_default()
}

/// An upstream's gRPC error on its way to the client: its field violations
/// renamed from request-message paths to the REST names (`renames` maps
/// `from → to`; a violation of a nested path such as `price.amount` keeps
/// its suffix), and a few codes moved to the status the REST contract gives
/// them (`IDEMPOTENCY_KEY_REUSED` is a 422 at the REST API, ALREADY_EXISTS
/// at gRPC).
pub fn upstream_error(status: tonic::Status, renames: &[(&str, &str)]) -> ApiError {
    let code = status
        .metadata()
        .get(proto::metadata::ERROR_CODE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let rest_code = match (status.code(), code) {
        (tonic::Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED") => tonic::Code::InvalidArgument,
        (code, _) => code,
    };
    let mut details = status.get_error_details();
    let renamed = details.bad_request().map(|bad_request| {
        bad_request
            .field_violations
            .iter()
            .map(|violation| FieldViolation {
                field: rename_field(&violation.field, renames),
                ..violation.clone()
            })
            .collect::<Vec<_>>()
    });
    let fields_changed = renamed.as_ref().is_some_and(|violations| {
        details.bad_request().is_some_and(|original| {
            original
                .field_violations
                .iter()
                .zip(violations)
                .any(|(before, after)| before.field != after.field)
        })
    });
    if !fields_changed && rest_code == status.code() {
        return status.into();
    }
    if let Some(violations) = renamed {
        details.set_bad_request(violations);
    }
    rebuilt(rest_code, &status, details).into()
}

fn rebuilt(code: tonic::Code, status: &tonic::Status, details: ErrorDetails) -> tonic::Status {
    tonic::Status::with_error_details_and_metadata(
        code,
        status.message(),
        details,
        status.metadata().clone(),
    )
}

fn rename_field(field: &str, renames: &[(&str, &str)]) -> String {
    for (from, to) in renames {
        if field == *from {
            return (*to).to_owned();
        }
        if let Some(rest) = field
            .strip_prefix(from)
            .filter(|rest| rest.starts_with('.') || rest.starts_with('['))
        {
            return format!("{to}{rest}");
        }
    }
    field.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    #[test]
    fn ids_must_be_uuids_and_are_sent_canonical() {
        let id = "0193A0E0-0000-7000-8000-000000000001";
        assert_eq!(
            parse_id(id).as_deref(),
            Ok("0193a0e0-0000-7000-8000-000000000001")
        );
        let problem = path_id("id", "nope").unwrap_err().problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "VALIDATION_FAILED");
        assert_eq!(problem.errors["id"], "must be a UUID");
    }

    #[test]
    fn timestamps_become_utc_and_unset_ones_are_none() {
        let at = optional_timestamp(Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }));
        assert_eq!(
            at.map(|at| at.to_rfc3339()).as_deref(),
            Some("2023-11-14T22:13:20.000000005+00:00")
        );
        assert_eq!(optional_timestamp(None), None);
        assert_eq!(timestamp(None), DateTime::<Utc>::default());
    }

    #[test]
    fn money_keeps_minor_units_both_ways() {
        let json = serde_json::to_value(money(Some(common::Money {
            amount: 1999,
            currency: "EUR".into(),
        })))
        .unwrap();
        assert_eq!(json, serde_json::json!({"amount": 1999, "currency": "EUR"}));
        let back: Money = serde_json::from_value(json).unwrap();
        assert_eq!(common::Money::from(back).amount, 1999);
    }

    #[test]
    fn field_violations_are_renamed_to_rest_names() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("page.cursor", "bad cursor");
        details.add_bad_request_violation("price.amount", "must be positive");
        details.add_bad_request_violation("name", "too long");
        let mut status =
            tonic::Status::with_error_details(Code::InvalidArgument, "invalid", details);
        status.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("VALIDATION_FAILED"),
        );
        let problem = upstream_error(
            status,
            &[("page.cursor", "cursor"), ("price", "unit_price")],
        )
        .problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "VALIDATION_FAILED");
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["cursor", "name", "unit_price.amount"]);
    }

    #[test]
    fn reused_idempotency_key_is_a_422() {
        let mut status = tonic::Status::already_exists("key used for other items");
        status.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("IDEMPOTENCY_KEY_REUSED"),
        );
        let problem = upstream_error(status, &[]).problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (422, "IDEMPOTENCY_KEY_REUSED")
        );
        let other = upstream_error(tonic::Status::already_exists("sku"), &[]).problem();
        assert_eq!(other.status, 409);
    }

    #[test]
    fn problem_schema_matches_the_problem_document() {
        let problem = platform::problem::Problem::validation(BTreeMap::from([(
            "id".to_owned(),
            "must be a UUID".to_owned(),
        )]));
        let json = serde_json::to_value(&problem).unwrap();
        let document: ProblemDocument = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(document).unwrap(), json);
    }
}
