//! gRPC adapter: `ferrishop.payment.v1.PaymentService`.
//!
//! Methods answer `UNIMPLEMENTED` until their use cases are built; the service
//! is registered now so health and reflection describe the binary's contract.

use proto::ferrishop::payment::v1::payment_service_server::PaymentService;
use proto::ferrishop::payment::v1::*;
use tonic::{Request, Response, Status};

/// The `PaymentService` implementation.
#[derive(Debug, Clone, Default)]
pub struct PaymentServiceApi;

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "payment.v1.PaymentService/{method} is not implemented yet"
    ))
}

#[tonic::async_trait]
impl PaymentService for PaymentServiceApi {
    async fn get_account(
        &self,
        _: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        Err(unimplemented("GetAccount"))
    }

    async fn deposit(
        &self,
        _: Request<DepositRequest>,
    ) -> Result<Response<DepositResponse>, Status> {
        Err(unimplemented("Deposit"))
    }

    async fn list_transactions(
        &self,
        _: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        Err(unimplemented("ListTransactions"))
    }
}
