//! gRPC adapter: `ferrishop.order.v1.OrderService`.
//!
//! Handlers are thin: read the caller from the metadata the gateway sets
//! (`x-user-id`, `x-user-roles`), parse the request into domain values
//! (collecting every bad field, not just the first), call one use case,
//! convert the result. [`OrderError`] becomes a [`Status`] in exactly one
//! place, [`status`], which sets the gRPC code, the stable `x-error-code`
//! metadata and the rich error details.

use std::collections::HashMap;
use std::fmt::Display;

use eventstore::GlobalPosition;
use futures::stream::{BoxStream, StreamExt};
use platform::pagination::PageSize;
use platform::validation::Violations;
use proto::convert::timestamp;
use proto::ferrishop::common::v1 as common;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_server::OrderService;
use proto::status::ErrorDomain;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;
use uuid::Uuid;

use crate::app::commands::{Accepted, PlaceOrder};
use crate::app::queries::{Page, SagaSummary, StepStatus, StepSummary};
use crate::app::{Caller, Orders};
use crate::domain::ids::OrderId;
use crate::domain::order::OrderStatus;
use crate::error::{OrderError, TOKEN_NOT_ISSUED};
use crate::projections::orders::OrderSummary;

/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: ErrorDomain = ErrorDomain::new("order.ferrishop.dev");

/// The `OrderService` implementation.
#[derive(Debug, Clone)]
pub struct OrderServiceApi {
    orders: Orders,
    /// Ends open WatchOrder streams when the server shuts down, which would
    /// otherwise hold the graceful shutdown until its deadline.
    shutdown: CancellationToken,
}

impl OrderServiceApi {
    pub fn new(orders: Orders, shutdown: CancellationToken) -> Self {
        Self { orders, shutdown }
    }
}

type ApiResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl OrderService for OrderServiceApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> ApiResult<pb::PlaceOrderResponse> {
        let caller = caller(request.metadata())?;
        let request = request.into_inner();
        let request = PlaceOrder::parse(
            caller.user_id,
            request
                .items
                .iter()
                .map(|item| (item.product_id.as_str(), item.quantity)),
            "idempotency_key",
            &request.idempotency_key,
        )?;
        let accepted = self.orders.place_order(request).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order_id: accepted.order_id.to_string(),
            status: order_status(accepted.status).into(),
            consistency_token: token_text(&accepted),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> ApiResult<pb::GetOrderResponse> {
        let caller = caller(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("order_id", OrderId::parse(&request.order_id));
        let token = violations.check("consistency_token", token(&request.consistency_token));
        let (Some(id), Some(token)) = (id, token) else {
            return Err(OrderError::from(violations).into());
        };
        let order = self.orders.get_order(&caller, id, token).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_message(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> ApiResult<pb::ListOrdersResponse> {
        let caller = caller(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let status = violations.check("status", status_filter(request.status));
        let page = request.page.unwrap_or_default();
        let after = violations.check("page.cursor", cursor(&page.cursor, OrderId::parse));
        let token = violations.check("consistency_token", token(&request.consistency_token));
        let (Some(status), Some(after), Some(token)) = (status, after, token) else {
            return Err(OrderError::from(violations).into());
        };
        let page = self
            .orders
            .list_orders(
                &caller,
                status,
                Page {
                    size: PageSize::from_request(page.limit),
                    after,
                },
                token,
            )
            .await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.orders.iter().map(order_message).collect(),
            page: Some(common::PageResponse {
                next_cursor: page.next.map(|id| id.to_string()).unwrap_or_default(),
            }),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> ApiResult<pb::CancelOrderResponse> {
        let caller = caller(request.metadata())?;
        let id = field("order_id", OrderId::parse(&request.get_ref().order_id))?;
        let accepted = self.orders.cancel_order(&caller, id).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order_id: accepted.order_id.to_string(),
            status: order_status(accepted.status).into(),
            consistency_token: token_text(&accepted),
        }))
    }

    type WatchOrderStream = BoxStream<'static, Result<pb::WatchOrderResponse, Status>>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> ApiResult<Self::WatchOrderStream> {
        let caller = caller(request.metadata())?;
        let id = field("order_id", OrderId::parse(&request.get_ref().order_id))?;
        let changes = self.orders.watch_order(&caller, id).await?;
        let responses = changes
            .map(|order| {
                order.map_err(status).map(|order| pb::WatchOrderResponse {
                    order_id: order.order_id.to_string(),
                    status: order_status(order.status).into(),
                    failure_reason: order.failure_reason.unwrap_or_default(),
                    occurred_at: Some(timestamp(order.updated_at)),
                })
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(responses.boxed()))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> ApiResult<pb::ListSagasResponse> {
        let caller = caller(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let status = violations.check("status", saga_status_filter(request.status));
        let page = request.page.unwrap_or_default();
        let after = violations.check(
            "page.cursor",
            cursor(&page.cursor, |text| {
                Uuid::try_parse(text).map_err(|e| e.to_string())
            }),
        );
        let (Some(status), Some(after)) = (status, after) else {
            return Err(OrderError::from(violations).into());
        };
        let page = self
            .orders
            .list_sagas(
                &caller,
                status,
                Page {
                    size: PageSize::from_request(page.limit),
                    after,
                },
            )
            .await?;
        Ok(Response::new(pb::ListSagasResponse {
            sagas: page.sagas.iter().map(saga_message).collect(),
            page: Some(common::PageResponse {
                next_cursor: page.next.map(|id| id.to_string()).unwrap_or_default(),
            }),
        }))
    }
}

/// The caller the gateway vouched for in the metadata.
fn caller(metadata: &MetadataMap) -> Result<Caller, OrderError> {
    Caller::from_headers(metadata.as_ref())
}

/// A single field's value, or `INVALID_ARGUMENT` naming it.
fn field<T, E: Display>(name: &str, result: Result<T, E>) -> Result<T, OrderError> {
    result.map_err(|error| OrderError::invalid(name, error))
}

/// An optional consistency token.
fn token(text: &str) -> Result<Option<GlobalPosition>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| TOKEN_NOT_ISSUED.to_owned())
}

fn token_text(accepted: &Accepted) -> String {
    accepted
        .token
        .map(|token| token.to_string())
        .unwrap_or_default()
}

/// A list cursor: the last id of the previous page. Clients treat it as
/// opaque, so its form may change.
fn cursor<T, E>(text: &str, parse: impl Fn(&str) -> Result<T, E>) -> Result<Option<T>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text)
        .map(Some)
        .map_err(|_| "is not a cursor this service issued".to_owned())
}

/// `ORDER_STATUS_UNSPECIFIED` is "any"; unknown values are refused.
fn status_filter(value: i32) -> Result<Option<OrderStatus>, String> {
    match pb::OrderStatus::try_from(value) {
        Ok(pb::OrderStatus::Unspecified) => Ok(None),
        Ok(pb::OrderStatus::Pending) => Ok(Some(OrderStatus::Pending)),
        Ok(pb::OrderStatus::Confirmed) => Ok(Some(OrderStatus::Confirmed)),
        Ok(pb::OrderStatus::Rejected) => Ok(Some(OrderStatus::Rejected)),
        Ok(pb::OrderStatus::Cancelled) => Ok(Some(OrderStatus::Cancelled)),
        Err(_) => Err(format!("unknown order status value {value}")),
    }
}

fn saga_status_filter(value: i32) -> Result<Option<saga::SagaStatus>, String> {
    use saga::SagaStatus as S;
    match pb::SagaStatus::try_from(value) {
        Ok(pb::SagaStatus::Unspecified) => Ok(None),
        Ok(pb::SagaStatus::Running) => Ok(Some(S::Running)),
        Ok(pb::SagaStatus::Compensating) => Ok(Some(S::Compensating)),
        Ok(pb::SagaStatus::Completed) => Ok(Some(S::Completed)),
        Ok(pb::SagaStatus::Compensated) => Ok(Some(S::Compensated)),
        Ok(pb::SagaStatus::Failed) => Ok(Some(S::Failed)),
        Err(_) => Err(format!("unknown saga status value {value}")),
    }
}

/// The one translation of an [`OrderError`] into a gRPC status.
pub fn status(error: OrderError) -> Status {
    let code = match &error {
        OrderError::InvalidArgument(_) | OrderError::ProductNotFound { .. } => {
            Code::InvalidArgument
        }
        OrderError::Unauthenticated => Code::Unauthenticated,
        OrderError::Forbidden(_) => Code::PermissionDenied,
        OrderError::OrderNotFound(_) => Code::NotFound,
        OrderError::IdempotencyKeyReused(_) => Code::AlreadyExists,
        OrderError::NotCancellable { .. } | OrderError::InvalidTransition(_) => {
            Code::FailedPrecondition
        }
        OrderError::Conflict(_) => Code::Aborted,
        OrderError::UpstreamUnavailable(_) | OrderError::Unavailable(_) => Code::Unavailable,
        OrderError::Internal(_) => Code::Internal,
    };

    let mut details = ErrorDetails::new();
    let mut info = HashMap::new();
    match &error {
        OrderError::InvalidArgument(violations) => {
            for violation in violations {
                details.add_bad_request_violation(&violation.field, &violation.description);
            }
        }
        OrderError::ProductNotFound { field, product_id } => {
            details.add_bad_request_violation(field, error.to_string());
            info.insert("product_id".to_owned(), product_id.to_string());
        }
        OrderError::OrderNotFound(order_id) => {
            info.insert("order_id".to_owned(), order_id.to_string());
        }
        OrderError::NotCancellable { order_id, status } => {
            details.add_precondition_failure_violation(
                error.code(),
                order_id.to_string(),
                format!("the order is {status}; only a CONFIRMED order can be cancelled"),
            );
            info.insert("order_id".to_owned(), order_id.to_string());
            info.insert("status".to_owned(), status.to_string());
        }
        _ => {}
    }
    match &error {
        OrderError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        OrderError::Unavailable(detail) | OrderError::UpstreamUnavailable(detail) => {
            tracing::warn!(error = %detail, "unavailable");
        }
        _ => {}
    }
    ERROR_DOMAIN.status_with(code, error.code(), error.to_string(), info, details)
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        status(error)
    }
}

// Domain → proto.

fn order_status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

fn order_message(order: &OrderSummary) -> pb::Order {
    pb::Order {
        id: order.order_id.to_string(),
        customer_id: order.customer_id.to_string(),
        status: order_status(order.status).into(),
        lines: order
            .lines
            .iter()
            .map(|line| pb::OrderLine {
                product_id: line.product_id.to_string(),
                product_name: line.product_name.clone(),
                quantity: line.quantity,
                unit_price: Some(line.unit_price.into()),
                line_total: Some(line.line_total.into()),
            })
            .collect(),
        total: Some(order.total.into()),
        failure_reason: order.failure_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
        cancellation_pending: order.cancellation_pending,
    }
}

fn saga_status(status: saga::SagaStatus) -> pb::SagaStatus {
    use saga::SagaStatus as S;
    match status {
        S::Created | S::Running => pb::SagaStatus::Running,
        S::Compensating => pb::SagaStatus::Compensating,
        S::Completed => pb::SagaStatus::Completed,
        S::Compensated => pb::SagaStatus::Compensated,
        S::Failed => pb::SagaStatus::Failed,
    }
}

fn step_message(step: &StepSummary) -> pb::SagaStep {
    pb::SagaStep {
        name: step.name.clone(),
        status: match step.status {
            StepStatus::Pending => pb::SagaStepStatus::Pending,
            StepStatus::Running => pb::SagaStepStatus::Running,
            StepStatus::Succeeded => pb::SagaStepStatus::Succeeded,
            StepStatus::Failed => pb::SagaStepStatus::Failed,
            StepStatus::Compensated => pb::SagaStepStatus::Compensated,
        }
        .into(),
        attempts: step.attempts,
        error: step.error.clone().unwrap_or_default(),
        started_at: step.started_at.map(timestamp),
        finished_at: step.finished_at.map(timestamp),
    }
}

fn saga_message(saga: &SagaSummary) -> pb::Saga {
    pb::Saga {
        id: saga.id.to_string(),
        saga_type: saga.saga_type.clone(),
        order_id: saga.order_id.map(|id| id.to_string()).unwrap_or_default(),
        status: saga_status(saga.status).into(),
        steps: saga.steps.iter().map(step_message).collect(),
        failure_reason: saga.failure_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(saga.created_at)),
        updated_at: Some(timestamp(saga.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::OrderRuleError;

    fn code_of(status: &Status) -> &str {
        status
            .metadata()
            .get(proto::metadata::ERROR_CODE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn errors_map_to_codes_and_stable_metadata() {
        let order_id = OrderId::generate();
        let cases = [
            (
                OrderError::OrderNotFound(order_id),
                Code::NotFound,
                "ORDER_NOT_FOUND",
            ),
            (
                OrderError::NotCancellable {
                    order_id,
                    status: OrderStatus::Rejected,
                },
                Code::FailedPrecondition,
                "ORDER_NOT_CANCELLABLE",
            ),
            (
                OrderError::IdempotencyKeyReused("k".into()),
                Code::AlreadyExists,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                OrderError::invalid("items", "must list at least one item"),
                Code::InvalidArgument,
                "VALIDATION_FAILED",
            ),
            (
                OrderError::InvalidTransition(OrderRuleError::NotPlaced),
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
            ),
            (
                OrderError::Unauthenticated,
                Code::Unauthenticated,
                "UNAUTHENTICATED",
            ),
            (
                OrderError::Forbidden("admin"),
                Code::PermissionDenied,
                "FORBIDDEN",
            ),
            (
                OrderError::UpstreamUnavailable("down".into()),
                Code::Unavailable,
                "UPSTREAM_UNAVAILABLE",
            ),
        ];
        for (error, code, stable) in cases {
            let status = status(error);
            assert_eq!(status.code(), code);
            assert_eq!(code_of(&status), stable);
        }
        let internal = status(OrderError::Internal("secret detail".into()));
        assert_eq!(internal.message(), "internal error");
    }

    #[test]
    fn the_caller_comes_from_the_gateways_metadata() {
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            caller(&metadata),
            Err(OrderError::Unauthenticated)
        ));
        let user = Uuid::now_v7();
        metadata.insert(proto::metadata::USER_ID, user.to_string().parse().unwrap());
        metadata.insert(
            proto::metadata::USER_ROLES,
            "customer, admin".parse().unwrap(),
        );
        let caller = caller(&metadata).unwrap();
        assert_eq!(caller.user_id.as_uuid(), user);
        assert!(caller.is_admin);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let position = GlobalPosition {
            transaction_id: 42,
            position: 7,
        };
        assert_eq!(token(&position.to_string()), Ok(Some(position)));
        assert_eq!(token(""), Ok(None));
        assert!(token("7").is_err());
    }
}
