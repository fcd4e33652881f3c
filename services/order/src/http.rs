//! REST adapter: the same use cases as the gRPC service, in the JSON shapes
//! of DESIGN.md's public API, for callers that prefer HTTP (tools, the
//! gateway's REST fallback, curl during a demo).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/orders` | `{items: [{product_id, quantity}]}` + `Idempotency-Key` → 202 `{id, status, consistency_token}` + `Location` |
//! | `GET /api/v1/orders/{id}` | one order (owner or admin); `?consistency_token=` for read-your-writes |
//! | `GET /api/v1/orders` | the caller's orders, newest first: `?status=&limit=&cursor=` → `{items, next_cursor}` |
//! | `POST /api/v1/orders/{id}/cancel` | 202; 409 `ORDER_NOT_CANCELLABLE` |
//! | `GET /api/v1/admin/sagas` | saga instances (admin): `?status=&limit=&cursor=` |
//! | `GET /api/v1/admin/sales/{day}` | the `product_sales` read model for one day (admin) |
//!
//! The caller comes from `x-user-id` / `x-user-roles`, set by the gateway as
//! on gRPC. Errors are RFC 9457 problem documents; [`problem`] is the one
//! translation of [`OrderError`] into one.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use platform::pagination::PageSize;
use platform::problem::{JsonBody, PathParams, Problem, QueryParams};
use platform::validation;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::commands::{Accepted, PlaceOrder};
use crate::app::queries::{Page, SagaSummary, StepStatus};
use crate::app::{Caller, Orders};
use crate::domain::ids::{CustomerId, OrderId};
use crate::domain::money::Money;
use crate::domain::order::OrderStatus;
use crate::error::{OrderError, TOKEN_NOT_ISSUED};
use crate::projections::orders::{OrderSummary, ViewLine};
use crate::projections::product_sales::DailySales;

/// The routes, on the use cases.
pub fn router(orders: Orders) -> Router {
    Router::new()
        .route("/api/v1/orders", post(place_order).get(list_orders))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/cancel", post(cancel_order))
        .route("/api/v1/admin/sagas", get(list_sagas))
        .route("/api/v1/admin/sales/{day}", get(sales_of_day))
        .with_state(orders)
}

type ApiResult<T> = Result<T, ApiError>;

/// A use case's error on its way out as a problem document.
#[derive(Debug)]
struct ApiError(OrderError);

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem(self.0).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct PlaceOrderBody {
    items: Vec<ItemBody>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    product_id: String,
    quantity: u32,
}

#[derive(Debug, Serialize)]
struct AcceptedBody {
    id: OrderId,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency_token: Option<String>,
}

impl AcceptedBody {
    fn of(accepted: &Accepted) -> Self {
        Self {
            id: accepted.order_id,
            status: accepted.status.as_str(),
            consistency_token: accepted.token.map(|token| token.to_string()),
        }
    }
}

async fn place_order(
    State(orders): State<Orders>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PlaceOrderBody>,
) -> ApiResult<Response> {
    let caller = Caller::from_headers(&headers)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let request = PlaceOrder::parse(
        caller.user_id,
        body.items
            .iter()
            .map(|item| (item.product_id.as_str(), item.quantity)),
        "Idempotency-Key",
        key,
    )?;
    let accepted = orders.place_order(request).await?;
    let mut response = (StatusCode::ACCEPTED, Json(AcceptedBody::of(&accepted))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/orders/{}", accepted.order_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    consistency_token: Option<String>,
}

async fn get_order(
    State(orders): State<Orders>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<TokenQuery>,
) -> ApiResult<Json<OrderBody>> {
    let caller = Caller::from_headers(&headers)?;
    let id = OrderId::parse(&id).map_err(|error| OrderError::invalid("id", error))?;
    let token = parse_token(query.consistency_token.as_deref())?;
    let order = orders.get_order(&caller, id, token).await?;
    Ok(Json(OrderBody::of(order)))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    consistency_token: Option<String>,
}

#[derive(Debug, Serialize)]
struct ListBody<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

async fn list_orders(
    State(orders): State<Orders>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<ListBody<OrderBody>>> {
    let caller = Caller::from_headers(&headers)?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            OrderStatus::parse(&text.trim().to_ascii_uppercase()).ok_or_else(|| {
                OrderError::invalid(
                    "status",
                    "must be PENDING, CONFIRMED, REJECTED or CANCELLED",
                )
            })?,
        ),
    };
    let after =
        match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => Some(OrderId::parse(text).map_err(|_| {
                OrderError::invalid("cursor", "is not a cursor this service issued")
            })?),
        };
    let size = PageSize::from_query(query.limit.as_deref())
        .map_err(|error| OrderError::invalid("limit", error))?;
    let token = parse_token(query.consistency_token.as_deref())?;
    let page = orders
        .list_orders(&caller, status, Page { size, after }, token)
        .await?;
    Ok(Json(ListBody {
        items: page.orders.into_iter().map(OrderBody::of).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

async fn cancel_order(
    State(orders): State<Orders>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> ApiResult<Response> {
    let caller = Caller::from_headers(&headers)?;
    let id = OrderId::parse(&id).map_err(|error| OrderError::invalid("id", error))?;
    let accepted = orders.cancel_order(&caller, id).await?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedBody::of(&accepted))).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct SagaQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_sagas(
    State(orders): State<Orders>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<SagaQuery>,
) -> ApiResult<Json<ListBody<SagaBody>>> {
    let caller = Caller::from_headers(&headers)?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            saga::SagaStatus::ALL
                .into_iter()
                .find(|status| status.as_str().eq_ignore_ascii_case(text.trim()))
                .ok_or_else(|| {
                    OrderError::invalid(
                        "status",
                        "must be RUNNING, COMPENSATING, COMPLETED, COMPENSATED or FAILED",
                    )
                })?,
        ),
    };
    let after =
        match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => Some(Uuid::try_parse(text).map_err(|_| {
                OrderError::invalid("cursor", "is not a cursor this service issued")
            })?),
        };
    let size = PageSize::from_query(query.limit.as_deref())
        .map_err(|error| OrderError::invalid("limit", error))?;
    let page = orders
        .list_sagas(&caller, status, Page { size, after })
        .await?;
    Ok(Json(ListBody {
        items: page.sagas.into_iter().map(SagaBody::of).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

async fn sales_of_day(
    State(orders): State<Orders>,
    headers: HeaderMap,
    PathParams(day): PathParams<String>,
) -> ApiResult<Json<Vec<DailySales>>> {
    let caller = Caller::from_headers(&headers)?;
    let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .map_err(|_| OrderError::invalid("day", "must be a date such as 2025-01-31"))?;
    let sales = orders.sales_of_day(&caller, day).await?;
    Ok(Json(sales))
}

/// An order as the REST API shows it.
#[derive(Debug, Serialize)]
struct OrderBody {
    id: OrderId,
    customer_id: CustomerId,
    status: &'static str,
    items: Vec<ViewLine>,
    total: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    cancellation_pending: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl OrderBody {
    fn of(order: OrderSummary) -> Self {
        Self {
            id: order.order_id,
            customer_id: order.customer_id,
            status: order.status.as_str(),
            items: order.lines,
            total: order.total,
            failure_reason: order.failure_reason,
            cancellation_pending: order.cancellation_pending,
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct StepBody {
    name: String,
    status: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct SagaBody {
    id: Uuid,
    saga_type: String,
    order_id: Option<OrderId>,
    status: &'static str,
    steps: Vec<StepBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SagaBody {
    fn of(saga: SagaSummary) -> Self {
        Self {
            id: saga.id,
            saga_type: saga.saga_type,
            order_id: saga.order_id,
            status: saga.status.as_str(),
            steps: saga
                .steps
                .into_iter()
                .map(|step| StepBody {
                    name: step.name,
                    status: match step.status {
                        StepStatus::Pending => "PENDING",
                        StepStatus::Running => "RUNNING",
                        StepStatus::Succeeded => "SUCCEEDED",
                        StepStatus::Failed => "FAILED",
                        StepStatus::Compensated => "COMPENSATED",
                    },
                    attempts: step.attempts,
                    error: step.error,
                    started_at: step.started_at,
                    finished_at: step.finished_at,
                })
                .collect(),
            failure_reason: saga.failure_reason,
            created_at: saga.created_at,
            updated_at: saga.updated_at,
        }
    }
}

fn parse_token(text: Option<&str>) -> Result<Option<eventstore::GlobalPosition>, OrderError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| OrderError::invalid("consistency_token", TOKEN_NOT_ISSUED)),
    }
}

/// The one translation of an [`OrderError`] into a problem document.
pub fn problem(error: OrderError) -> Problem {
    let status = match &error {
        OrderError::InvalidArgument(_)
        | OrderError::ProductNotFound { .. }
        | OrderError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        OrderError::Unauthenticated => StatusCode::UNAUTHORIZED,
        OrderError::Forbidden(_) => StatusCode::FORBIDDEN,
        OrderError::OrderNotFound(_) => StatusCode::NOT_FOUND,
        OrderError::NotCancellable { .. }
        | OrderError::InvalidTransition(_)
        | OrderError::Conflict(_) => StatusCode::CONFLICT,
        OrderError::UpstreamUnavailable(_) | OrderError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        OrderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let detail = match &error {
        OrderError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            "internal error".to_owned()
        }
        OrderError::Unavailable(detail) | OrderError::UpstreamUnavailable(detail) => {
            tracing::warn!(error = %detail, "unavailable");
            error.to_string()
        }
        _ => error.to_string(),
    };
    let errors = match &error {
        OrderError::InvalidArgument(violations) => validation::by_field(violations),
        OrderError::ProductNotFound { field, .. } => {
            BTreeMap::from([(field.clone(), detail.clone())])
        }
        _ => BTreeMap::new(),
    };
    Problem {
        errors,
        ..Problem::new(status, error.code(), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_codes() {
        let order_id = OrderId::generate();
        let cases = [
            (OrderError::OrderNotFound(order_id), 404, "ORDER_NOT_FOUND"),
            (
                OrderError::NotCancellable {
                    order_id,
                    status: OrderStatus::Cancelled,
                },
                409,
                "ORDER_NOT_CANCELLABLE",
            ),
            (
                OrderError::IdempotencyKeyReused("k".into()),
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (OrderError::Unauthenticated, 401, "UNAUTHENTICATED"),
            (OrderError::Forbidden("admin"), 403, "FORBIDDEN"),
            (
                OrderError::UpstreamUnavailable("down".into()),
                503,
                "UPSTREAM_UNAVAILABLE",
            ),
            (OrderError::Internal("secret".into()), 500, "INTERNAL"),
        ];
        for (error, status, code) in cases {
            let problem = problem(error);
            assert_eq!(problem.status, status);
            assert_eq!(problem.code, code);
        }
        let invalid = problem(OrderError::invalid(
            "items[0].quantity",
            "must be greater than zero",
        ));
        assert_eq!(invalid.status, 422);
        assert_eq!(
            invalid.errors["items[0].quantity"],
            "must be greater than zero"
        );
        assert_eq!(
            problem(OrderError::Internal("secret".into())).detail,
            "internal error"
        );
    }
}
