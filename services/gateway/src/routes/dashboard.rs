//! `GET /api/v1/me/dashboard`: the caller's profile, wallet and latest
//! orders in one answer.
//!
//! A client's home screen needs three services; asking the gateway once
//! instead of three times saves it two round trips over a slow network.
//! The three calls — user (REST `GET /api/v1/users/me`), payment (REST
//! `GET /api/v1/wallet`) and order (gRPC `ListOrders`, 5 newest) — run
//! concurrently, each through its upstream's resilience stack with the
//! caller's identity, so the answer takes as long as the slowest part.
//!
//! A screen with the wallet missing is still worth showing, so a part that
//! fails does not fail the request: it is `null`, and `errors` says which
//! part failed and why (`{part, status, code, detail}`, the status and code
//! it would have had on its own route). The answer is 200 whenever the
//! caller is authenticated, even should every part fail; clients look at
//! `errors`.
//!
//! Profile and wallet are passed on as their services wrote them (as the
//! forwarded routes do); orders are translated like `GET /api/v1/orders`.

use axum::extract::State;
use axum::{Extension, Json};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use platform::problem::Problem;
use proto::ferrishop::common::v1::PageRequest;
use proto::ferrishop::order::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::{Service, ServiceExt};
use tower_http::request_id::RequestId;
use utoipa::ToSchema;

use super::orders::OrderBody;
use super::translation::ProblemDocument;
use super::{AppState, BODY_LIMIT, REQUEST_ID, upstream_request};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::proxied::{User, Wallet};
use crate::upstreams::RestClient;

/// How many orders the dashboard shows.
pub const LATEST_ORDERS: u32 = 5;

/// The parts of a dashboard, as `errors` names them.
pub mod part {
    pub const PROFILE: &str = "profile";
    pub const WALLET: &str = "wallet";
    pub const ORDERS: &str = "orders";
}

/// The caller's dashboard. A part that could not be fetched is `null` and
/// has an entry in `errors`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dashboard {
    /// The caller's profile, as `GET /api/v1/users/me` answers it.
    #[schema(value_type = Option<User>, required)]
    pub profile: Option<Value>,
    /// The caller's wallet, as `GET /api/v1/wallet` answers it.
    #[schema(value_type = Option<Wallet>, required)]
    pub wallet: Option<Value>,
    /// The caller's 5 newest orders, newest first.
    #[schema(required)]
    pub orders: Option<Vec<OrderBody>>,
    /// One entry per part that failed; empty when everything is there.
    pub errors: Vec<PartError>,
}

/// Why one part of the dashboard is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartError {
    /// `profile`, `wallet` or `orders`.
    #[schema(example = "wallet")]
    pub part: String,
    /// The HTTP status the part's own route would have answered.
    #[schema(example = 503)]
    pub status: u16,
    /// The problem `code` it would have answered.
    #[schema(example = "UPSTREAM_UNAVAILABLE")]
    pub code: String,
    /// What went wrong, for humans.
    pub detail: String,
}

/// A part's failure, before it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFailure {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

impl From<Problem> for PartFailure {
    fn from(problem: Problem) -> Self {
        Self {
            status: problem.status,
            code: problem.code,
            detail: problem.detail,
        }
    }
}

impl From<ApiError> for PartFailure {
    fn from(error: ApiError) -> Self {
        if error.problem().status().is_server_error() {
            tracing::warn!(%error, "dashboard part failed");
        }
        error.problem().into()
    }
}

/// The dashboard from its parts' outcomes.
pub fn compose(
    profile: Result<Value, PartFailure>,
    wallet: Result<Value, PartFailure>,
    orders: Result<Vec<OrderBody>, PartFailure>,
) -> Dashboard {
    let mut errors = Vec::new();
    let mut keep = |name: &str, failure: PartFailure| {
        errors.push(PartError {
            part: name.to_owned(),
            status: failure.status,
            code: failure.code,
            detail: failure.detail,
        });
    };
    let profile = profile.map_err(|failure| keep(part::PROFILE, failure)).ok();
    let wallet = wallet.map_err(|failure| keep(part::WALLET, failure)).ok();
    let orders = orders.map_err(|failure| keep(part::ORDERS, failure)).ok();
    Dashboard {
        profile,
        wallet,
        orders,
        errors,
    }
}

/// `GET /api/v1/me/dashboard`.
#[utoipa::path(
    get,
    path = "/api/v1/me/dashboard",
    tag = "users",
    operation_id = "dashboard",
    summary = "The caller's profile, wallet and 5 newest orders in one answer",
    description = "The three parts are fetched concurrently. A part that fails is `null` \
        and has an entry in `errors` with the status and code its own route would have \
        answered; the rest is served, with 200.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dashboard, possibly with parts missing", body = Dashboard),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "`RATE_LIMITED`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn dashboard(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
) -> Json<Dashboard> {
    let request_id = request_id.map(|Extension(id)| id);
    let request_id = request_id.as_ref();
    let (profile, wallet, orders) = tokio::join!(
        rest_get(
            state.services.user.clone(),
            "/api/v1/users/me",
            &caller,
            request_id
        ),
        rest_get(
            state.services.payment.clone(),
            "/api/v1/wallet",
            &caller,
            request_id
        ),
        latest_orders(&state, &caller, request_id),
    );
    Json(compose(profile, wallet, orders))
}

async fn latest_orders(
    state: &AppState,
    caller: &Caller,
    request_id: Option<&RequestId>,
) -> Result<Vec<OrderBody>, PartFailure> {
    let request = upstream_request(
        pb::ListOrdersRequest {
            status: pb::OrderStatus::Unspecified.into(),
            page: Some(PageRequest {
                limit: LATEST_ORDERS,
                cursor: String::new(),
            }),
            consistency_token: String::new(),
        },
        Some(caller),
        request_id,
    );
    let response = state
        .services
        .order
        .clone()
        .list_orders(request)
        .await
        .map_err(|status| PartFailure::from(ApiError::from(status)))?;
    response
        .into_inner()
        .orders
        .into_iter()
        .take(LATEST_ORDERS as usize)
        .map(OrderBody::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PartFailure::from)
}

/// `GET path` on a REST service as the caller; the JSON answer, or the
/// service's problem.
async fn rest_get(
    mut client: RestClient,
    path: &'static str,
    caller: &Caller,
    request_id: Option<&RequestId>,
) -> Result<Value, PartFailure> {
    let mut request = http::Request::new(Bytes::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(&caller.user_id.to_string()) {
        headers.insert(proto::metadata::USER_ID, id);
    }
    if let Ok(roles) = HeaderValue::from_str(&caller.roles_header()) {
        headers.insert(proto::metadata::USER_ROLES, roles);
    }
    if let Some(id) = request_id {
        headers.insert(REQUEST_ID.clone(), id.header_value().clone());
    }

    let response = match client.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(error) => Err(error),
    }
    .map_err(|error| PartFailure::from(ApiError::Upstream(error)))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|error| bad_answer(path, format!("reading the answer failed: {error}")))?
        .to_bytes();
    if status.is_success() {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| bad_answer(path, "the answer is not a JSON object".into()))
    } else {
        Err(upstream_problem(status, &body))
    }
}

/// A service's error answer as a part failure: its problem document, or
/// (for an answer that is none) the status with a generic code.
fn upstream_problem(status: StatusCode, body: &[u8]) -> PartFailure {
    match serde_json::from_slice::<ProblemDocument>(body) {
        Ok(problem) => PartFailure {
            status: status.as_u16(),
            code: problem.code,
            detail: problem.detail,
        },
        Err(_) => PartFailure {
            status: status.as_u16(),
            code: if status.is_server_error() {
                "UPSTREAM_UNAVAILABLE".to_owned()
            } else {
                "UPSTREAM_ERROR".to_owned()
            },
            detail: format!("the service answered {status}"),
        },
    }
}

fn bad_answer(path: &str, detail: String) -> PartFailure {
    tracing::warn!(path, %detail, "unusable dashboard part");
    PartFailure {
        status: StatusCode::BAD_GATEWAY.as_u16(),
        code: "UPSTREAM_UNAVAILABLE".to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn down(code: &str) -> PartFailure {
        PartFailure {
            status: 503,
            code: code.to_owned(),
            detail: "down".to_owned(),
        }
    }

    #[test]
    fn a_failed_part_is_null_with_an_error_and_the_rest_is_served() {
        let dashboard = compose(
            Ok(json!({"id": "u", "name": "Ada"})),
            Err(down("UPSTREAM_UNAVAILABLE")),
            Ok(vec![]),
        );
        let json = serde_json::to_value(&dashboard).unwrap();
        assert_eq!(json["profile"]["name"], "Ada");
        assert!(json.as_object().unwrap().contains_key("wallet"));
        assert_eq!(json["wallet"], Value::Null);
        assert_eq!(json["orders"], json!([]));
        assert_eq!(
            json["errors"],
            json!([{"part": "wallet", "status": 503, "code": "UPSTREAM_UNAVAILABLE", "detail": "down"}])
        );
    }

    #[test]
    fn every_part_can_fail_and_each_is_reported_in_order() {
        let dashboard = compose(
            Err(down("A")),
            Err(down("B")),
            Err(PartFailure {
                status: 504,
                code: "UPSTREAM_UNAVAILABLE".into(),
                detail: "slow".into(),
            }),
        );
        assert!(dashboard.profile.is_none() && dashboard.wallet.is_none());
        assert!(dashboard.orders.is_none());
        let parts: Vec<_> = dashboard
            .errors
            .iter()
            .map(|error| (error.part.as_str(), error.status))
            .collect();
        assert_eq!(parts, [("profile", 503), ("wallet", 503), ("orders", 504)]);
    }

    #[test]
    fn nothing_failed_means_no_errors() {
        let dashboard = compose(Ok(json!({})), Ok(json!({})), Ok(vec![]));
        assert!(dashboard.errors.is_empty());
        let json = serde_json::to_value(&dashboard).unwrap();
        assert_eq!(json["errors"], json!([]));
    }

    #[test]
    fn upstream_problems_keep_their_status_and_code() {
        let body = serde_json::to_vec(&Problem::new(
            StatusCode::NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
            "no wallet yet",
        ))
        .unwrap();
        assert_eq!(
            upstream_problem(StatusCode::NOT_FOUND, &body),
            PartFailure {
                status: 404,
                code: "ACCOUNT_NOT_FOUND".into(),
                detail: "no wallet yet".into()
            }
        );
        let garbage = upstream_problem(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(
            (garbage.status, garbage.code.as_str()),
            (502, "UPSTREAM_UNAVAILABLE")
        );
    }

    #[test]
    fn refused_calls_and_grpc_errors_become_part_failures() {
        let open = PartFailure::from(ApiError::Upstream(resilience::Error::CircuitOpen {
            upstream: "payment".into(),
        }));
        assert_eq!(
            (open.status, open.code.as_str()),
            (503, "UPSTREAM_UNAVAILABLE")
        );
        let missing = PartFailure::from(ApiError::from(tonic::Status::unavailable("order down")));
        assert_eq!(missing.status, 503);
    }
}
