//! The order routes, served by the order service over gRPC.
//!
//! The JSON shapes are the order service's own REST adapter's
//! (`services/order/src/http.rs`), field for field, so a client sees the same
//! order whichever door it came through. The gateway's part:
//!
//! - the caller comes from the verified token (`x-user-id`/`x-user-roles`
//!   metadata), never from the request;
//! - ownership is the order service's: another user's order answers
//!   NOT_FOUND there, which stays a 404 here (no existence leak);
//! - read-your-writes: the 202 of a placement or cancellation carries the
//!   order service's `consistency_token`; `GET /api/v1/orders/{id}` and
//!   `GET /api/v1/orders` pass `?consistency_token=` on, so the answer
//!   reflects at least that write. A plain GET right after the 202 never
//!   answers 404 either: the order service catches its read model up to an
//!   order it has stored but not yet projected.
//! - REST names in errors: `Idempotency-Key` (header), `id` (path), `cursor`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use platform::pagination::PageSize;
use platform::problem::{JsonBody, PathParams, QueryParams};
use platform::validation::Violations;
use proto::ferrishop::order::v1 as pb;
use serde::{Deserialize, Serialize};
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, ToSchema};

use super::translation::{self, Money, ProblemDocument, id_of, path_id};
use super::{AppState, upstream_request};
use crate::auth::Caller;
use crate::error::ApiError;

/// Where an order lives in the API.
pub const ORDERS: &str = "/api/v1/orders";

/// The header that makes placing an order safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Order request-field paths → REST names.
const RENAMES: &[(&str, &str)] = &[
    ("order_id", "id"),
    ("page.cursor", "cursor"),
    ("idempotency_key", "Idempotency-Key"),
];

/// Status of an order: PENDING → CONFIRMED | REJECTED; CONFIRMED →
/// CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// A filter value, case-insensitive.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        pb::OrderStatus::from_str_name(&format!(
            "ORDER_STATUS_{}",
            text.trim().to_ascii_uppercase()
        ))
        .and_then(|status| Self::try_from(status as i32).ok())
        .ok_or("must be PENDING, CONFIRMED, REJECTED or CANCELLED")
    }
}

impl TryFrom<i32> for OrderStatus {
    type Error = ApiError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match pb::OrderStatus::try_from(value) {
            Ok(pb::OrderStatus::Pending) => Ok(Self::Pending),
            Ok(pb::OrderStatus::Confirmed) => Ok(Self::Confirmed),
            Ok(pb::OrderStatus::Rejected) => Ok(Self::Rejected),
            Ok(pb::OrderStatus::Cancelled) => Ok(Self::Cancelled),
            _ => Err(ApiError::Internal(format!(
                "the order service sent order status {value}"
            ))),
        }
    }
}

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Rejected => Self::Rejected,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One item of `POST /api/v1/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderItem)]
pub struct ItemBody {
    #[schema(format = Uuid)]
    pub product_id: String,
    /// Units wanted, at least 1.
    #[schema(minimum = 1)]
    pub quantity: u32,
}

/// `POST /api/v1/orders` body: 1 to 100 items; prices are the inventory's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = PlaceOrder)]
pub struct PlaceOrderBody {
    pub items: Vec<ItemBody>,
}

impl PlaceOrderBody {
    fn into_request(self, idempotency_key: String) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            items: self
                .items
                .into_iter()
                .map(|item| pb::OrderItem {
                    product_id: item.product_id,
                    quantity: item.quantity,
                })
                .collect(),
            idempotency_key,
        }
    }
}

/// The answer to a placement or cancellation: the work goes on after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderAccepted)]
pub struct AcceptedBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// PENDING for a new order; for a repeated placement or a cancellation,
    /// the order's status when the answer was sent.
    pub status: OrderStatus,
    /// Pass to `GET /api/v1/orders/{id}?consistency_token=` to read this
    /// write back. Opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_token: Option<String>,
}

impl AcceptedBody {
    fn of(order_id: String, status: i32, token: String) -> Result<Self, ApiError> {
        Ok(Self {
            id: order_id,
            status: OrderStatus::try_from(status)?,
            consistency_token: translation::non_empty(token),
        })
    }

    /// 202 with this body and, for a placement, `Location`.
    fn accepted(&self, location: bool) -> Response {
        let mut response = (StatusCode::ACCEPTED, Json(self)).into_response();
        if location && let Ok(url) = HeaderValue::from_str(&format!("{ORDERS}/{}", self.id)) {
            response.headers_mut().insert(header::LOCATION, url);
        }
        response
    }
}

/// One line of an order, priced at placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderLine)]
pub struct LineBody {
    #[schema(format = Uuid)]
    pub product_id: String,
    /// The product's name at order time.
    pub product_name: String,
    pub quantity: u32,
    /// Unit price at order time.
    pub unit_price: Money,
    /// unit_price × quantity.
    pub line_total: Money,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// The user who placed it.
    #[schema(format = Uuid)]
    pub customer_id: String,
    pub status: OrderStatus,
    pub items: Vec<LineBody>,
    /// What was (or is to be) charged.
    pub total: Money,
    /// Why a REJECTED order was rejected (INSUFFICIENT_STOCK,
    /// INSUFFICIENT_FUNDS, ACCOUNT_FROZEN, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// A CONFIRMED order whose cancellation is running.
    pub cancellation_pending: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<pb::Order> for OrderBody {
    type Error = ApiError;

    fn try_from(order: pb::Order) -> Result<Self, Self::Error> {
        Ok(Self {
            status: OrderStatus::try_from(order.status)?,
            id: order.id,
            customer_id: order.customer_id,
            items: order
                .lines
                .into_iter()
                .map(|line| LineBody {
                    product_id: line.product_id,
                    product_name: line.product_name,
                    quantity: line.quantity,
                    unit_price: translation::money(line.unit_price),
                    line_total: translation::money(line.line_total),
                })
                .collect(),
            total: translation::money(order.total),
            failure_reason: translation::non_empty(order.failure_reason),
            cancellation_pending: order.cancellation_pending,
            created_at: translation::timestamp(order.created_at),
            updated_at: translation::timestamp(order.updated_at),
        })
    }
}

/// One page of the caller's orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderBody>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// The `Idempotency-Key` header, which placing an order requires.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut violations = Violations::default();
    let key = violations.check(
        "Idempotency-Key",
        headers
            .get(IDEMPOTENCY_KEY)
            .and_then(|value| value.to_str().ok())
            .filter(|key| !key.is_empty())
            .ok_or("is required: a client-chosen key (a UUID, say) that makes retries safe"),
    );
    violations.finish()?;
    Ok(key.unwrap_or_default().to_owned())
}

/// Places an order for the caller. The answer comes at once, PENDING; the
/// order then becomes CONFIRMED or REJECTED (follow `Location` or
/// `/api/v1/orders/{id}/events`). Repeating a request with the same
/// `Idempotency-Key` and items returns the first one's order.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key, 1 to 255 characters, that makes retries safe")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the saga runs", body = AcceptedBody,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Broken JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Bad items, an unknown product (PRODUCT_NOT_FOUND), a missing Idempotency-Key, or a key used for other items (IDEMPOTENCY_KEY_REUSED)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The order service or the inventory is unavailable; retry with the same key", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let request = body.into_request(idempotency_key(&headers)?);
    let placed = state
        .services
        .order
        .clone()
        .place_order(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner();
    let body = AcceptedBody::of(placed.order_id, placed.status, placed.consistency_token)?;
    Ok(body.accepted(true))
}

/// `?consistency_token=` of the order reads.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetOrderQuery {
    /// A `consistency_token` from a 202: the answer reflects at least that
    /// write.
    pub consistency_token: Option<String>,
}

/// One order of the caller (any order, for an admin). Another user's order
/// is reported as missing.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id"), GetOrderQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller (ORDER_NOT_FOUND)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id or the token is malformed", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<GetOrderQuery>,
) -> Result<Json<OrderBody>, ApiError> {
    let request = pb::GetOrderRequest {
        order_id: path_id("id", &id)?,
        consistency_token: query.consistency_token.unwrap_or_default(),
    };
    let order = state
        .services
        .order
        .clone()
        .get_order(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner()
        .order
        .ok_or_else(|| ApiError::Internal("the order service answered without an order".into()))?;
    Ok(Json(order.try_into()?))
}

/// `GET /api/v1/orders` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page, with the same filter.
    pub cursor: Option<String>,
    /// A `consistency_token` from a 202: the list reflects at least that
    /// write.
    pub consistency_token: Option<String>,
}

impl ListOrdersQuery {
    fn into_request(self) -> Result<pb::ListOrdersRequest, ApiError> {
        let mut violations = Violations::default();
        let status = match self
            .status
            .as_deref()
            .filter(|text| !text.trim().is_empty())
        {
            None => Some(pb::OrderStatus::Unspecified),
            Some(text) => violations.check("status", OrderStatus::parse(text).map(Into::into)),
        };
        let limit = violations.check("limit", PageSize::from_query(self.limit.as_deref()));
        violations.finish()?;
        Ok(pb::ListOrdersRequest {
            status: status.unwrap_or_default().into(),
            page: Some(proto::ferrishop::common::v1::PageRequest {
                limit: limit.unwrap_or_default().get(),
                cursor: translation::cursor(self.cursor),
            }),
            consistency_token: self.consistency_token.unwrap_or_default(),
        })
    }
}

/// The caller's orders, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    params(ListOrdersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the caller's orders", body = OrderPage),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad status, limit, cursor or token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    QueryParams(query): QueryParams<ListOrdersQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let request = query.into_request()?;
    let listed = state
        .services
        .order
        .clone()
        .list_orders(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner();
    Ok(Json(OrderPage {
        items: listed
            .orders
            .into_iter()
            .map(OrderBody::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor: listed
            .page
            .and_then(|page| translation::non_empty(page.next_cursor)),
    }))
}

/// Cancels a CONFIRMED order of the caller: refund, stock returned, then
/// CANCELLED. The answer means the cancellation was accepted.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the order becomes CANCELLED", body = AcceptedBody),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller (ORDER_NOT_FOUND)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Only a CONFIRMED order can be cancelled (ORDER_NOT_CANCELLABLE)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<axum::Extension<RequestId>>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let request = pb::CancelOrderRequest {
        order_id: path_id("id", &id)?,
    };
    let cancelled = state
        .services
        .order
        .clone()
        .cancel_order(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner();
    let body = AcceptedBody::of(
        cancelled.order_id,
        cancelled.status,
        cancelled.consistency_token,
    )?;
    Ok(body.accepted(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataValue;
    use tonic_types::{ErrorDetails, StatusExt};

    fn eur(amount: i64) -> Option<proto::ferrishop::common::v1::Money> {
        Some(proto::ferrishop::common::v1::Money {
            amount,
            currency: "EUR".into(),
        })
    }

    fn order(status: pb::OrderStatus, failure_reason: &str) -> pb::Order {
        pb::Order {
            id: "o1".into(),
            customer_id: "c1".into(),
            status: status.into(),
            lines: vec![pb::OrderLine {
                product_id: "p1".into(),
                product_name: "Keyboard".into(),
                quantity: 2,
                unit_price: eur(4999),
                line_total: eur(9998),
            }],
            total: eur(9998),
            failure_reason: failure_reason.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            updated_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
            cancellation_pending: false,
        }
    }

    #[test]
    fn orders_have_the_order_service_rest_shape() {
        let json = serde_json::to_value(
            OrderBody::try_from(order(pb::OrderStatus::Confirmed, "")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "o1",
                "customer_id": "c1",
                "status": "CONFIRMED",
                "items": [{
                    "product_id": "p1",
                    "product_name": "Keyboard",
                    "quantity": 2,
                    "unit_price": {"amount": 4999, "currency": "EUR"},
                    "line_total": {"amount": 9998, "currency": "EUR"},
                }],
                "total": {"amount": 9998, "currency": "EUR"},
                "cancellation_pending": false,
                "created_at": "2023-11-14T22:13:20Z",
                "updated_at": "2023-11-14T22:13:21Z",
            })
        );
        let rejected = serde_json::to_value(
            OrderBody::try_from(order(pb::OrderStatus::Rejected, "INSUFFICIENT_FUNDS")).unwrap(),
        )
        .unwrap();
        assert_eq!(rejected["status"], "REJECTED");
        assert_eq!(rejected["failure_reason"], "INSUFFICIENT_FUNDS");
        assert!(OrderBody::try_from(order(pb::OrderStatus::Unspecified, "")).is_err());
    }

    #[test]
    fn accepted_is_202_with_location_for_a_placement_only() {
        let body =
            AcceptedBody::of("o1".into(), pb::OrderStatus::Pending.into(), "42".into()).unwrap();
        let placed = body.accepted(true);
        assert_eq!(placed.status(), StatusCode::ACCEPTED);
        assert_eq!(placed.headers()[header::LOCATION], "/api/v1/orders/o1");
        assert!(
            body.accepted(false)
                .headers()
                .get(header::LOCATION)
                .is_none()
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"id": "o1", "status": "PENDING", "consistency_token": "42"})
        );
        let untokened = AcceptedBody::of(
            "o1".into(),
            pb::OrderStatus::Confirmed.into(),
            String::new(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(untokened).unwrap(),
            serde_json::json!({"id": "o1", "status": "CONFIRMED"})
        );
    }

    #[test]
    fn placement_needs_an_idempotency_key() {
        let problem = idempotency_key(&HeaderMap::new()).unwrap_err().problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (422, "VALIDATION_FAILED")
        );
        assert!(problem.errors.contains_key("Idempotency-Key"));
        let mut headers = HeaderMap::new();
        headers.insert("Idempotency-Key", HeaderValue::from_static("k-1"));
        assert_eq!(idempotency_key(&headers).unwrap(), "k-1");

        let body: PlaceOrderBody = serde_json::from_value(serde_json::json!({
            "items": [{"product_id": "p1", "quantity": 2}]
        }))
        .unwrap();
        let request = body.into_request("k-1".into());
        assert_eq!(request.idempotency_key, "k-1");
        assert_eq!(request.items[0].quantity, 2);
    }

    #[test]
    fn list_query_parses_status_limit_and_cursor() {
        let request = ListOrdersQuery {
            status: Some("confirmed".into()),
            limit: Some("3".into()),
            cursor: Some("c".into()),
            consistency_token: Some("7".into()),
        }
        .into_request()
        .unwrap();
        assert_eq!(request.status(), pb::OrderStatus::Confirmed);
        let page = request.page.unwrap();
        assert_eq!((page.limit, page.cursor.as_str()), (3, "c"));
        assert_eq!(request.consistency_token, "7");

        let all = ListOrdersQuery::default().into_request().unwrap();
        assert_eq!(all.status(), pb::OrderStatus::Unspecified);
        assert_eq!(all.page.unwrap().limit, PageSize::DEFAULT.get());

        let problem = ListOrdersQuery {
            status: Some("SHIPPED".into()),
            limit: Some("0".into()),
            ..ListOrdersQuery::default()
        }
        .into_request()
        .unwrap_err()
        .problem();
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["limit", "status"]);
        assert!(OrderStatus::parse("unspecified").is_err());
    }

    #[test]
    fn order_service_errors_keep_their_codes_under_rest_names() {
        let mut not_cancellable = tonic::Status::failed_precondition("the order is PENDING");
        not_cancellable.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("ORDER_NOT_CANCELLABLE"),
        );
        let problem = translation::upstream_error(not_cancellable, RENAMES).problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (409, "ORDER_NOT_CANCELLABLE")
        );

        let mut not_found = tonic::Status::not_found("order o1 not found");
        not_found.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("ORDER_NOT_FOUND"),
        );
        let problem = translation::upstream_error(not_found, RENAMES).problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (404, "ORDER_NOT_FOUND")
        );

        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("idempotency_key", "must be at most 255 characters");
        details.add_bad_request_violation("items[0].quantity", "must be greater than zero");
        let invalid = tonic::Status::with_error_details(Code::InvalidArgument, "invalid", details);
        let problem = translation::upstream_error(invalid, RENAMES).problem();
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["Idempotency-Key", "items[0].quantity"]);
    }
}
