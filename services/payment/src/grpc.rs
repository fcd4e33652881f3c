//! gRPC adapter: `ferrishop.payment.v1.PaymentService`.
//!
//! Every method acts on the caller's own wallet, named by the `x-user-id`
//! metadata the gateway sets (see `common.proto`). Handlers are thin: parse
//! the request into domain values, call one use case, convert the result.
//! [`PaymentError`] becomes a [`Status`] in exactly one place, [`status`],
//! which sets the gRPC code, the stable `x-error-code` metadata and its
//! `google.rpc.ErrorInfo`.

use platform::pagination::PageSize;
use platform::validation::Violations;
use proto::convert::timestamp;
use proto::ferrishop::common::v1 as common;
use proto::ferrishop::payment::v1 as pb;
use proto::ferrishop::payment::v1::payment_service_server::PaymentService;
use proto::metadata::VouchedUser;
use proto::status::ErrorDomain;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::app::Payments;
use crate::app::queries::{Cursor, TransactionKind, TransactionView};
use crate::domain::ids::{IdempotencyKey, UserId};
use crate::domain::money::{Amount, Currency};
use crate::domain::wallet::{Account, AccountStatus};
use crate::error::PaymentError;

/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: ErrorDomain = ErrorDomain::new("payment.ferrishop.dev");

/// The `PaymentService` implementation.
#[derive(Debug, Clone)]
pub struct PaymentServiceApi {
    payments: Payments,
}

impl PaymentServiceApi {
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

type ApiResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl PaymentService for PaymentServiceApi {
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> ApiResult<pb::GetAccountResponse> {
        let user = caller(request.metadata())?;
        let account = self.payments.account(user).await.map_err(status)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_message(&account)),
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> ApiResult<pb::DepositResponse> {
        let user = caller(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let amount = match request.amount {
            None => violations.reject("amount", "required"),
            Some(money) => violations
                .check("amount.currency", Currency::parse(&money.currency))
                .and_then(|currency| {
                    violations.check("amount.amount", Amount::new(money.amount, currency))
                }),
        };
        let key = violations.check(
            "idempotency_key",
            IdempotencyKey::parse(&request.idempotency_key),
        );
        let (Some(amount), Some(key)) = (amount, key) else {
            return Err(status(violations.into()));
        };
        let receipt = self
            .payments
            .deposit(user, amount, key)
            .await
            .map_err(status)?;
        let account = self.payments.account(user).await.map_err(status)?;
        Ok(Response::new(pb::DepositResponse {
            transaction: Some(transaction_message(&TransactionView::of_deposit(
                &receipt.deposit,
            ))),
            account: Some(account_message(&account)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> ApiResult<pb::ListTransactionsResponse> {
        let user = caller(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let kind = match pb::TransactionKind::try_from(request.kind) {
            Ok(pb::TransactionKind::Unspecified) => Some(None),
            Ok(pb::TransactionKind::Deposit) => Some(Some(TransactionKind::Deposit)),
            Ok(pb::TransactionKind::Charge) => Some(Some(TransactionKind::Charge)),
            Ok(pb::TransactionKind::Refund) => Some(Some(TransactionKind::Refund)),
            Ok(pb::TransactionKind::Payout) => Some(Some(TransactionKind::Payout)),
            Err(_) => violations.reject("kind", "unknown transaction kind"),
        };
        let page = request.page.unwrap_or_default();
        let cursor = if page.cursor.is_empty() {
            Some(None)
        } else {
            violations.check("page.cursor", Cursor::parse(&page.cursor).map(Some))
        };
        let (Some(kind), Some(cursor)) = (kind, cursor) else {
            return Err(status(violations.into()));
        };
        let page = self
            .payments
            .transactions(user, kind, PageSize::from_request(page.limit), cursor)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: page.items.iter().map(transaction_message).collect(),
            page: Some(common::PageResponse {
                next_cursor: page
                    .next_cursor
                    .map(|cursor| cursor.to_string())
                    .unwrap_or_default(),
            }),
        }))
    }
}

/// The caller named by `x-user-id`.
fn caller(metadata: &MetadataMap) -> Result<UserId, Status> {
    VouchedUser::from_headers(metadata.as_ref())
        .ok()
        .flatten()
        .map(|user| UserId::from_uuid(user.id))
        .ok_or_else(|| status(PaymentError::Unauthenticated))
}

/// The one translation of [`PaymentError`] into a gRPC status.
fn status(error: PaymentError) -> Status {
    error.log();
    let code = match &error {
        PaymentError::Validation(_) => Code::InvalidArgument,
        PaymentError::Unauthenticated => Code::Unauthenticated,
        PaymentError::Forbidden => Code::PermissionDenied,
        PaymentError::AccountNotFound => Code::NotFound,
        PaymentError::AccountFrozen
        | PaymentError::AccountClosed
        | PaymentError::PayoutIbanRequired(_)
        | PaymentError::IdempotencyKeyReused => Code::FailedPrecondition,
        PaymentError::Unavailable(_) | PaymentError::DatabaseUnavailable(_) => Code::Unavailable,
        PaymentError::Internal(_) => Code::Internal,
    };
    ERROR_DOMAIN.status(code, error.code(), error.to_string())
}

fn account_message(account: &Account) -> pb::Account {
    let status = match account.status {
        AccountStatus::Active => pb::AccountStatus::Active,
        AccountStatus::Frozen => pb::AccountStatus::Frozen,
        AccountStatus::Closed => pb::AccountStatus::Closed,
    };
    pb::Account {
        id: account.id.to_string(),
        owner_id: account.owner.to_string(),
        balance: Some(account.balance.into()),
        status: status.into(),
        created_at: Some(timestamp(account.opened_at)),
        updated_at: Some(timestamp(account.updated_at)),
        payout_iban: account
            .payout_iban
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

fn transaction_message(view: &TransactionView) -> pb::Transaction {
    let kind = match view.kind {
        TransactionKind::Deposit => pb::TransactionKind::Deposit,
        TransactionKind::Charge => pb::TransactionKind::Charge,
        TransactionKind::Refund => pb::TransactionKind::Refund,
        TransactionKind::Payout => pb::TransactionKind::Payout,
    };
    pb::Transaction {
        id: view.id.to_string(),
        account_id: view.account_id.to_string(),
        kind: kind.into(),
        amount: Some(view.amount.into()),
        balance_after: Some(view.balance_after.into()),
        order_id: view.order_id.map(|id| id.to_string()).unwrap_or_default(),
        idempotency_key: view.idempotency_key.clone().unwrap_or_default(),
        created_at: Some(timestamp(view.created_at)),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn errors_carry_their_code_in_metadata() {
        let frozen = status(PaymentError::AccountFrozen);
        assert_eq!(frozen.code(), Code::FailedPrecondition);
        assert_eq!(
            frozen
                .metadata()
                .get(proto::metadata::ERROR_CODE)
                .and_then(|v| v.to_str().ok()),
            Some("ACCOUNT_FROZEN")
        );
        let info = frozen.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("ACCOUNT_FROZEN", ERROR_DOMAIN.as_str())
        );
        assert_eq!(status(PaymentError::AccountNotFound).code(), Code::NotFound);
        let internal = status(PaymentError::internal("db-1.internal:5432 refused"));
        assert_eq!(
            (internal.code(), internal.message()),
            (Code::Internal, "internal error")
        );
        assert_eq!(
            status(PaymentError::invalid("amount", "required")).code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn a_missing_caller_is_unauthenticated() {
        let error = caller(&MetadataMap::new()).unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }
}
