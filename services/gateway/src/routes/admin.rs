//! Operator routes: the saga log and run-time fault injection.
//!
//! `GET /api/v1/admin/sagas` reads the order service's saga instances over
//! gRPC (`ListSagas`), in the JSON shape of the order service's own REST
//! adapter.
//!
//! `PUT /api/v1/admin/faults/{name}` arms a fault point on every instance of
//! every service at once: the gateway writes the action into the NATS KV
//! bucket `ferrishop-faults` (key = point name, value = action text) and each
//! process's `messaging::watch_faults` arms its local point within
//! milliseconds. The action is checked with the same parser the watchers use
//! (`platform::faults::FaultAction`), so a typo is a 422 here rather than a
//! point silently disarmed everywhere. `off` (or `DELETE`) deletes the key,
//! which disarms the point, also on processes that reconnect later.
//!
//! The gateway watches the bucket too ([`watch_faults`]), so its own points
//! (`http.server.request`) are armed like every service's. NATS is reached
//! in the background: the gateway starts and serves every other route while
//! NATS is down, and these routes answer 503 until it is back.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use messaging::{FAULTS_BUCKET, MessagingError};
use platform::faults::FaultAction;
use platform::pagination::PageSize;
use platform::problem::{JsonBody, PathParams, Problem, QueryParams};
use platform::validation::Violations;
use proto::ferrishop::order::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, ToSchema};

use super::translation::{self, ProblemDocument, id_of};
use super::{AppState, upstream_request};
use crate::auth::Admin;
use crate::error::ApiError;

/// The action that disarms a point.
pub const OFF: &str = "off";

/// How long a fault flag write may take, connecting included.
const NATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Order request-field paths → REST names.
const RENAMES: &[(&str, &str)] = &[("page.cursor", "cursor")];

/// Status of a saga instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

impl SagaStatus {
    /// A filter value, case-insensitive.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        pb::SagaStatus::from_str_name(&format!("SAGA_STATUS_{}", text.trim().to_ascii_uppercase()))
            .and_then(|status| Self::try_from(status as i32).ok())
            .ok_or("must be RUNNING, COMPENSATING, COMPLETED, COMPENSATED or FAILED")
    }
}

impl TryFrom<i32> for SagaStatus {
    type Error = ApiError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match pb::SagaStatus::try_from(value) {
            Ok(pb::SagaStatus::Running) => Ok(Self::Running),
            Ok(pb::SagaStatus::Compensating) => Ok(Self::Compensating),
            Ok(pb::SagaStatus::Completed) => Ok(Self::Completed),
            Ok(pb::SagaStatus::Compensated) => Ok(Self::Compensated),
            Ok(pb::SagaStatus::Failed) => Ok(Self::Failed),
            _ => Err(ApiError::Internal(format!(
                "the order service sent saga status {value}"
            ))),
        }
    }
}

impl From<SagaStatus> for pb::SagaStatus {
    fn from(status: SagaStatus) -> Self {
        match status {
            SagaStatus::Running => Self::Running,
            SagaStatus::Compensating => Self::Compensating,
            SagaStatus::Completed => Self::Completed,
            SagaStatus::Compensated => Self::Compensated,
            SagaStatus::Failed => Self::Failed,
        }
    }
}

/// Status of one saga step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensated,
}

impl TryFrom<i32> for StepStatus {
    type Error = ApiError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match pb::SagaStepStatus::try_from(value) {
            Ok(pb::SagaStepStatus::Pending) => Ok(Self::Pending),
            Ok(pb::SagaStepStatus::Running) => Ok(Self::Running),
            Ok(pb::SagaStepStatus::Succeeded) => Ok(Self::Succeeded),
            Ok(pb::SagaStepStatus::Failed) => Ok(Self::Failed),
            Ok(pb::SagaStepStatus::Compensated) => Ok(Self::Compensated),
            _ => Err(ApiError::Internal(format!(
                "the order service sent saga step status {value}"
            ))),
        }
    }
}

/// One step of a saga, from its persisted step log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = SagaStep)]
pub struct StepBody {
    /// `reserve_stock`, `charge_payment`, `commit_reservation`,
    /// `refund_payment`, `return_stock`.
    pub name: String,
    pub status: StepStatus,
    /// Executions so far (1 plus retries).
    pub attempts: u32,
    /// The step's last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Null while PENDING.
    pub started_at: Option<DateTime<Utc>>,
    /// Null while PENDING or RUNNING.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A saga instance: the orchestration of one order's placement or
/// cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Saga)]
pub struct SagaBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `place_order` or `cancel_order`.
    pub saga_type: String,
    #[schema(format = Uuid)]
    pub order_id: Option<String>,
    pub status: SagaStatus,
    pub steps: Vec<StepBody>,
    /// Why the saga compensated or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<pb::Saga> for SagaBody {
    type Error = ApiError;

    fn try_from(saga: pb::Saga) -> Result<Self, Self::Error> {
        Ok(Self {
            status: SagaStatus::try_from(saga.status)?,
            steps: saga
                .steps
                .into_iter()
                .map(|step| {
                    Ok(StepBody {
                        status: StepStatus::try_from(step.status)?,
                        name: step.name,
                        attempts: step.attempts,
                        error: translation::non_empty(step.error),
                        started_at: translation::optional_timestamp(step.started_at),
                        finished_at: translation::optional_timestamp(step.finished_at),
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            id: saga.id,
            saga_type: saga.saga_type,
            order_id: translation::non_empty(saga.order_id),
            failure_reason: translation::non_empty(saga.failure_reason),
            created_at: translation::timestamp(saga.created_at),
            updated_at: translation::timestamp(saga.updated_at),
        })
    }
}

/// One page of saga instances, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaBody>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/admin/sagas` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSagasQuery {
    /// Only sagas in this status.
    #[param(value_type = Option<SagaStatus>)]
    pub status: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page, with the same filter.
    pub cursor: Option<String>,
}

impl ListSagasQuery {
    fn into_request(self) -> Result<pb::ListSagasRequest, ApiError> {
        let mut violations = Violations::default();
        let status = match self
            .status
            .as_deref()
            .filter(|text| !text.trim().is_empty())
        {
            None => Some(pb::SagaStatus::Unspecified),
            Some(text) => violations.check("status", SagaStatus::parse(text).map(Into::into)),
        };
        let limit = violations.check("limit", PageSize::from_query(self.limit.as_deref()));
        violations.finish()?;
        Ok(pb::ListSagasRequest {
            status: status.unwrap_or_default().into(),
            page: Some(proto::ferrishop::common::v1::PageRequest {
                limit: limit.unwrap_or_default().get(),
                cursor: translation::cursor(self.cursor),
            }),
        })
    }
}

/// Saga instances with their step logs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/sagas",
    tag = "admin",
    params(ListSagasQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of sagas", body = SagaPage),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad status, limit or cursor", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list_sagas(
    State(state): State<AppState>,
    Admin(caller): Admin,
    request_id: Option<axum::Extension<RequestId>>,
    QueryParams(query): QueryParams<ListSagasQuery>,
) -> Result<Json<SagaPage>, ApiError> {
    let request = query.into_request()?;
    let listed = state
        .services
        .order
        .clone()
        .list_sagas(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner();
    Ok(Json(SagaPage {
        items: listed
            .sagas
            .into_iter()
            .map(SagaBody::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor: listed
            .page
            .and_then(|page| translation::non_empty(page.next_cursor)),
    }))
}

/// `PUT /api/v1/admin/faults/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = FaultAction)]
pub struct FaultActionBody {
    /// `error(p)` (fail with probability p, 0 to 1), `delay(ms)`, `abort`
    /// (the process exits at the point), or `off` (disarm).
    #[schema(example = "error(0.5)")]
    pub action: String,
}

/// A fault point and what it now does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Fault)]
pub struct FaultBody {
    /// The fault point, e.g. `payment.charge`.
    #[schema(example = "payment.charge")]
    pub name: String,
    /// The action in its canonical form, or `off`.
    #[schema(example = "error(0.5)")]
    pub action: String,
}

/// What a fault request asks for, once checked.
#[derive(Debug, Clone, PartialEq)]
enum FaultChange {
    Arm(FaultAction),
    Disarm,
}

impl FaultChange {
    fn parse(action: &str) -> Result<Self, String> {
        if action.trim().eq_ignore_ascii_case(OFF) {
            return Ok(Self::Disarm);
        }
        action
            .parse()
            .map(Self::Arm)
            .map_err(|error: platform::faults::FaultParseError| {
                format!("{error}; or \"{OFF}\" to disarm")
            })
    }
}

/// A fault point name, which is also a NATS KV key: letters, digits and
/// `-_./=`, not starting or ending with `.`.
fn check_point_name(name: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./=".contains(c);
    if name.is_empty()
        || name.len() > 128
        || name.starts_with('.')
        || name.ends_with('.')
        || !name.chars().all(allowed)
    {
        return Err("must be a fault point name such as payment.charge (letters, digits, -_./=)");
    }
    Ok(())
}

fn parse_fault(name: &str, action: &str) -> Result<FaultChange, ApiError> {
    let mut violations = Violations::default();
    violations.check("name", check_point_name(name));
    let change = violations.check("action", FaultChange::parse(action));
    violations.finish()?;
    change.ok_or_else(|| ApiError::Internal("fault validation passed without a change".into()))
}

/// Why a fault flag could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The request itself is refused (422 for a bad action, 403 for a
    /// non-admin): the problem its [`ApiError`] maps to.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// 503: NATS is down or refused the write.
    #[error("the fault flag bucket is unavailable: {0}")]
    Nats(#[from] MessagingError),
    /// 504: NATS did not answer in time.
    #[error("the fault flag bucket did not answer within {NATS_TIMEOUT:?}")]
    Timeout,
}

impl IntoResponse for FaultError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Nats(_) | Self::Api(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if let Self::Api(error) = self {
            return error.into_response();
        }
        tracing::warn!(error = %self, "fault flag not written");
        Problem::new(status, "UPSTREAM_UNAVAILABLE", self.to_string()).into_response()
    }
}

/// Arms this process's own fault points from the bucket, as every service
/// does, retrying until NATS answers (async-nats reconnects by itself after
/// that). Connecting here also readies the shared client for the SSE routes,
/// while the gateway serves every other route without NATS.
pub async fn watch_faults(nats: messaging::Nats, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        match nats.key_value(FAULTS_BUCKET).await {
            Ok(bucket) => {
                tracing::info!("connected to NATS; watching the fault flags");
                messaging::watch_faults(&bucket, cancel).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "NATS not reachable yet");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Writes (or deletes) one key of the fault bucket.
async fn write_fault(
    nats: &messaging::Nats,
    name: &str,
    change: &FaultChange,
) -> Result<(), FaultError> {
    let write = async {
        let bucket = nats.key_value(FAULTS_BUCKET).await?;
        match change {
            FaultChange::Arm(action) => bucket.put(name, action.to_string()).await.map(drop),
            FaultChange::Disarm => bucket.delete(name).await,
        }
    };
    tokio::time::timeout(NATS_TIMEOUT, write)
        .await
        .map_err(|_| FaultError::Timeout)??;
    Ok(())
}

impl FaultBody {
    fn of(name: String, change: &FaultChange) -> Self {
        let action = match change {
            FaultChange::Arm(action) => action.to_string(),
            FaultChange::Disarm => OFF.to_owned(),
        };
        Self { name, action }
    }
}

/// Arms (or, with `off`, disarms) a fault point on every service.
#[utoipa::path(
    put,
    path = "/api/v1/admin/faults/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "Fault point, e.g. payment.charge, inventory.reserve, order.saga.before_confirm")),
    request_body = FaultActionBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Written; services apply it within moments", body = FaultBody),
        (status = 400, description = "Broken JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad point name or action", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "NATS is unavailable", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn put_fault(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathParams(name): PathParams<String>,
    JsonBody(body): JsonBody<FaultActionBody>,
) -> Result<Json<FaultBody>, FaultError> {
    let change = parse_fault(&name, &body.action)?;
    write_fault(&state.nats, &name, &change).await?;
    tracing::warn!(fault.point = %name, ?change, admin = %caller.user_id, "fault flag written");
    Ok(Json(FaultBody::of(name, &change)))
}

/// Disarms a fault point on every service.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/faults/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "Fault point")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Disarmed (also when it was not armed)"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad point name", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "NATS is unavailable", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn delete_fault(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, FaultError> {
    let change = parse_fault(&name, OFF)?;
    write_fault(&state.nats, &name, &change).await?;
    tracing::warn!(fault.point = %name, admin = %caller.user_id, "fault flag removed");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn sagas_have_the_order_service_rest_shape() {
        let saga = pb::Saga {
            id: "s1".into(),
            saga_type: "place_order".into(),
            order_id: "o1".into(),
            status: pb::SagaStatus::Compensated.into(),
            steps: vec![
                pb::SagaStep {
                    name: "reserve_stock".into(),
                    status: pb::SagaStepStatus::Compensated.into(),
                    attempts: 1,
                    error: String::new(),
                    started_at: at(1_700_000_000),
                    finished_at: at(1_700_000_002),
                },
                pb::SagaStep {
                    name: "charge_payment".into(),
                    status: pb::SagaStepStatus::Failed.into(),
                    attempts: 3,
                    error: "INSUFFICIENT_FUNDS".into(),
                    started_at: at(1_700_000_001),
                    finished_at: None,
                },
            ],
            failure_reason: "INSUFFICIENT_FUNDS".into(),
            created_at: at(1_700_000_000),
            updated_at: at(1_700_000_002),
        };
        let json = serde_json::to_value(SagaBody::try_from(saga).unwrap()).unwrap();
        assert_eq!(json["status"], "COMPENSATED");
        assert_eq!(json["order_id"], "o1");
        assert_eq!(json["steps"][0]["status"], "COMPENSATED");
        assert!(json["steps"][0].get("error").is_none());
        assert_eq!(json["steps"][1]["error"], "INSUFFICIENT_FUNDS");
        assert_eq!(json["steps"][1]["finished_at"], serde_json::Value::Null);
        assert_eq!(json["failure_reason"], "INSUFFICIENT_FUNDS");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn saga_query_parses_and_names_bad_fields() {
        let request = ListSagasQuery {
            status: Some("failed".into()),
            limit: Some("50".into()),
            cursor: Some("s9".into()),
        }
        .into_request()
        .unwrap();
        assert_eq!(request.status(), pb::SagaStatus::Failed);
        let page = request.page.unwrap();
        assert_eq!((page.limit, page.cursor.as_str()), (50, "s9"));
        let problem = ListSagasQuery {
            status: Some("CREATED".into()),
            ..ListSagasQuery::default()
        }
        .into_request()
        .unwrap_err()
        .problem();
        assert!(problem.errors.contains_key("status"));
    }

    #[test]
    fn fault_actions_are_checked_with_the_watchers_parser() {
        assert_eq!(
            parse_fault("payment.charge", "error(0.5)").unwrap(),
            FaultChange::Arm(FaultAction::Error { probability: 0.5 })
        );
        assert_eq!(
            parse_fault("inventory.reserve", " delay(200) ").unwrap(),
            FaultChange::Arm(FaultAction::Delay(Duration::from_millis(200)))
        );
        assert_eq!(
            parse_fault("order.saga.before_confirm", "abort").unwrap(),
            FaultChange::Arm(FaultAction::Abort)
        );
        assert_eq!(
            parse_fault("payment.charge", "OFF").unwrap(),
            FaultChange::Disarm
        );

        let problem = parse_fault("payment.charge", "error(2)")
            .unwrap_err()
            .problem();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (422, "VALIDATION_FAILED")
        );
        assert!(problem.errors["action"].contains("off"), "{problem:?}");
        let problem = parse_fault("bad name*", "explode").unwrap_err().problem();
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["action", "name"]);
        for bad in ["", ".x", "x.", "a b", "a>b"] {
            assert!(check_point_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fault_answers_show_the_canonical_action() {
        let armed = FaultBody::of(
            "payment.charge".into(),
            &FaultChange::Arm(FaultAction::Delay(Duration::from_millis(200))),
        );
        assert_eq!(armed.action, "delay(200)");
        assert_eq!(
            FaultBody::of("payment.charge".into(), &FaultChange::Disarm).action,
            "off"
        );
    }

    #[tokio::test]
    async fn an_unreachable_nats_is_a_503_problem() {
        // Nothing listens on port 1: the connection is refused at once.
        let nats = messaging::Nats::new(messaging::NatsConfig::new(
            "nats://127.0.0.1:1",
            "gateway-test",
        ));
        let error = write_fault(&nats, "payment.charge", &FaultChange::Disarm)
            .await
            .unwrap_err();
        let response = error.into_response();
        assert!(
            matches!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            ),
            "{}",
            response.status()
        );
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            platform::problem::CONTENT_TYPE
        );
    }
}
