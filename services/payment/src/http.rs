//! REST adapter, called by the gateway.
//!
//! The routes are the public API's own paths, so the gateway forwards them
//! 1:1:
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/v1/wallet` | owner | `{account_id, owner_id, balance, status, …}`; 404 `ACCOUNT_NOT_FOUND` |
//! | `POST /api/v1/wallet/deposits` | owner | `{amount}` + `Idempotency-Key` → 201 transaction; 409 `ACCOUNT_FROZEN`; 422 `IDEMPOTENCY_KEY_REUSED` |
//! | `GET /api/v1/wallet/transactions` | owner | `?limit=&cursor=&kind=` → `{items, next_cursor}`, newest first |
//! | `PUT /api/v1/wallet/payout-iban` | owner | `{iban}` → the account; 422 for an invalid IBAN |
//! | `POST /api/v1/admin/wallets/{user_id}/freeze` | admin | optional `{reason}` → the account |
//! | `POST /api/v1/admin/wallets/{user_id}/unfreeze` | admin | → the account |
//! | `POST /api/v1/admin/wallets/{user_id}/close` | admin | pays the balance out → the account; 409 `PAYOUT_IBAN_REQUIRED` |
//!
//! # Caller identity
//!
//! The service does not read access tokens: the gateway has verified the
//! token and passes the user's id in `x-user-id` and their roles in
//! `x-user-roles`, after removing any such header the client sent. The
//! service trusts those headers because only the gateway and the other
//! services can reach it; deployments must keep it that way.
//!
//! # Idempotent deposits
//!
//! A deposit needs an `Idempotency-Key` header. Repeating the request with
//! the same key and amount answers exactly as the first time (201, same
//! body, plus `Idempotent-Replayed: true`) and moves no money; the same key
//! with another amount is refused (422 `IDEMPOTENCY_KEY_REUSED`).
//!
//! Handlers are thin: extract, call one use case, shape the answer. Every
//! failure is a [`PaymentError`], turned into problem+json in one place, its
//! `IntoResponse` implementation at the end of this file.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use platform::pagination::PageSize;
use platform::problem::{JsonBody, PathParams, Problem, QueryParams};
use platform::validation::{self, Violations};
use proto::metadata::VouchedUser;
use serde::{Deserialize, Serialize};

use crate::app::queries::{Cursor, Page, TransactionKind, TransactionView};
use crate::app::{Payments, RequestContext};
use crate::domain::iban::Iban;
use crate::domain::ids::{IdempotencyKey, UserId};
use crate::domain::money::{Amount, Currency, Money};
use crate::domain::wallet::Account;
use crate::error::PaymentError;

/// The header a deposit is made idempotent with.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on the answer to a repeated deposit.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Why a wallet is frozen when the administrator gives no reason.
const DEFAULT_FREEZE_REASON: &str = "frozen by an administrator";

/// The routes of the REST API.
pub fn router(payments: Payments) -> Router {
    Router::new()
        .route("/api/v1/wallet", get(wallet))
        .route("/api/v1/wallet/deposits", post(deposit))
        .route("/api/v1/wallet/transactions", get(transactions))
        .route("/api/v1/wallet/payout-iban", put(set_payout_iban))
        .route("/api/v1/admin/wallets/{user_id}/freeze", post(freeze))
        .route("/api/v1/admin/wallets/{user_id}/unfreeze", post(unfreeze))
        .route("/api/v1/admin/wallets/{user_id}/close", post(close))
        .with_state(payments)
}

// ---------------------------------------------------------------- bodies

/// `{"amount": 1999, "currency": "EUR"}`: the platform's money, unchecked
/// on the way in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoneyBody {
    amount: i64,
    currency: String,
}

impl From<Money> for MoneyBody {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount(),
            currency: money.currency().as_str().to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositRequest {
    amount: Option<MoneyBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutIbanRequest {
    iban: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FreezeRequest {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    kind: Option<String>,
}

#[derive(Serialize)]
struct AccountResponse {
    account_id: String,
    owner_id: String,
    balance: MoneyBody,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    frozen_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payout_iban: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Account> for AccountResponse {
    fn from(account: Account) -> Self {
        Self {
            account_id: account.id.to_string(),
            owner_id: account.owner.to_string(),
            balance: account.balance.into(),
            status: account.status.as_str(),
            frozen_reason: account.frozen_reason,
            payout_iban: account.payout_iban.map(|iban| iban.to_string()),
            created_at: account.opened_at,
            updated_at: account.updated_at,
        }
    }
}

#[derive(Serialize)]
struct TransactionResponse {
    id: String,
    account_id: String,
    kind: &'static str,
    amount: MoneyBody,
    balance_after: MoneyBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<TransactionView> for TransactionResponse {
    fn from(view: TransactionView) -> Self {
        Self {
            id: view.id.to_string(),
            account_id: view.account_id.to_string(),
            kind: view.kind.as_str(),
            amount: view.amount.into(),
            balance_after: view.balance_after.into(),
            order_id: view.order_id.map(|id| id.to_string()),
            idempotency_key: view.idempotency_key,
            created_at: view.created_at,
        }
    }
}

#[derive(Serialize)]
struct PageResponse {
    items: Vec<TransactionResponse>,
    next_cursor: Option<String>,
}

impl From<Page> for PageResponse {
    fn from(page: Page) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|cursor| cursor.to_string()),
        }
    }
}

// ---------------------------------------------------------------- handlers

async fn wallet(
    State(payments): State<Payments>,
    Caller(user): Caller,
) -> Result<Json<AccountResponse>, PaymentError> {
    Ok(Json(payments.account(user).await?.into()))
}

async fn deposit(
    State(payments): State<Payments>,
    Caller(user): Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<DepositRequest>,
) -> Result<Response, PaymentError> {
    let mut violations = Violations::default();
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map_or(Err("required".to_owned()), |key| {
            IdempotencyKey::parse(key).map_err(|error| error.to_string())
        });
    let key = violations.check("Idempotency-Key", key);
    let amount = match request.amount {
        None => violations.reject("amount", "required"),
        Some(body) => amount(&mut violations, "amount", body),
    };
    let (Some(key), Some(amount)) = (key, amount) else {
        return Err(violations.into());
    };
    let receipt = payments.deposit(user, amount, key).await?;
    let body = TransactionResponse::from(TransactionView::of_deposit(&receipt.deposit));
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if receipt.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn transactions(
    State(payments): State<Payments>,
    Caller(user): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<PageResponse>, PaymentError> {
    let mut violations = Violations::default();
    let limit = violations.check("limit", PageSize::from_query(query.limit.as_deref()));
    let cursor = match query.cursor.as_deref() {
        None | Some("") => Some(None),
        Some(text) => violations.check("cursor", Cursor::parse(text).map(Some)),
    };
    let kind = match query.kind.as_deref() {
        None | Some("") => Some(None),
        Some(text) => violations.check("kind", TransactionKind::parse(text).map(Some)),
    };
    let (Some(limit), Some(cursor), Some(kind)) = (limit, cursor, kind) else {
        return Err(violations.into());
    };
    Ok(Json(
        payments
            .transactions(user, kind, limit, cursor)
            .await?
            .into(),
    ))
}

async fn set_payout_iban(
    State(payments): State<Payments>,
    Caller(user): Caller,
    JsonBody(request): JsonBody<PayoutIbanRequest>,
) -> Result<Json<AccountResponse>, PaymentError> {
    let iban = match request.iban {
        None => Err(PaymentError::invalid("iban", "required")),
        Some(text) => Iban::parse(&text).map_err(|error| PaymentError::invalid("iban", error)),
    }?;
    Ok(Json(payments.set_payout_iban(user, iban).await?.into()))
}

async fn freeze(
    State(payments): State<Payments>,
    AdministeredWallet { owner, context }: AdministeredWallet,
    body: Bytes,
) -> Result<Json<AccountResponse>, PaymentError> {
    let request: FreezeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FreezeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| PaymentError::invalid("body", error))?
    };
    let reason = request
        .reason
        .map(|reason| reason.trim().to_owned())
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| DEFAULT_FREEZE_REASON.to_owned());
    if reason.chars().count() > 500 {
        return Err(PaymentError::invalid("reason", "at most 500 characters"));
    }
    Ok(Json(payments.freeze(owner, reason, &context).await?.into()))
}

async fn unfreeze(
    State(payments): State<Payments>,
    AdministeredWallet { owner, context }: AdministeredWallet,
) -> Result<Json<AccountResponse>, PaymentError> {
    Ok(Json(payments.unfreeze(owner, &context).await?.into()))
}

async fn close(
    State(payments): State<Payments>,
    AdministeredWallet { owner, context }: AdministeredWallet,
) -> Result<Json<AccountResponse>, PaymentError> {
    Ok(Json(payments.close(owner, &context).await?.into()))
}

// ---------------------------------------------------------------- extractors

/// The signed-in user, from the gateway's `x-user-id` header.
struct Caller(UserId);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = PaymentError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PaymentError> {
        user_id(parts).map(Caller)
    }
}

/// A signed-in administrator: `x-user-id` plus `admin` in `x-user-roles`.
struct Admin(UserId);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = PaymentError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PaymentError> {
        let user = vouched_user(parts)?;
        if user.is_admin {
            Ok(Admin(UserId::from_uuid(user.id)))
        } else {
            Err(PaymentError::Forbidden)
        }
    }
}

/// The wallet an admin route acts on: its owner, the `{user_id}` of the
/// path, and the context that records the administrator who acted.
struct AdministeredWallet {
    owner: UserId,
    context: RequestContext,
}

impl<S: Send + Sync> FromRequestParts<S> for AdministeredWallet {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Admin(admin) = Admin::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let PathParams(user_id) = PathParams::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let owner = UserId::parse(&user_id)
            .map_err(|error| PaymentError::invalid("user_id", error).into_response())?;
        Ok(Self {
            owner,
            context: RequestContext::user(admin),
        })
    }
}

fn vouched_user(parts: &Parts) -> Result<VouchedUser, PaymentError> {
    VouchedUser::from_headers(&parts.headers)
        .ok()
        .flatten()
        .ok_or(PaymentError::Unauthenticated)
}

fn user_id(parts: &Parts) -> Result<UserId, PaymentError> {
    vouched_user(parts).map(|user| UserId::from_uuid(user.id))
}

/// The amount of `body`, or `None` after recording what is wrong with
/// `<field>.currency` or, given a currency, `<field>.amount`.
fn amount(violations: &mut Violations, field: &str, body: MoneyBody) -> Option<Amount> {
    let currency =
        violations.check(format!("{field}.currency"), Currency::parse(&body.currency))?;
    violations.check(
        format!("{field}.amount"),
        Amount::new(body.amount, currency),
    )
}

// ---------------------------------------------------------------- errors

impl IntoResponse for PaymentError {
    fn into_response(self) -> Response {
        self.log();
        let status = match &self {
            Self::Validation(violations) => {
                return Problem::validation(validation::by_field(violations)).into_response();
            }
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::AccountNotFound => StatusCode::NOT_FOUND,
            Self::AccountFrozen | Self::AccountClosed | Self::PayoutIbanRequired(_) => {
                StatusCode::CONFLICT
            }
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match &self {
            Self::Internal(_) => "an internal error occurred".to_owned(),
            other => other.to_string(),
        };
        Problem::new(status, self.code(), detail).into_response()
    }
}
