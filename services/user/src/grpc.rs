//! gRPC adapter: `ferrishop.user.v1.UserService`.
//!
//! Methods answer `UNIMPLEMENTED` until their use cases are built; the service
//! is registered now so health and reflection describe the binary's contract.

use proto::ferrishop::user::v1::user_service_server::UserService;
use proto::ferrishop::user::v1::*;
use tonic::{Request, Response, Status};

/// The `UserService` implementation.
#[derive(Debug, Clone, Default)]
pub struct UserServiceApi;

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "user.v1.UserService/{method} is not implemented yet"
    ))
}

#[tonic::async_trait]
impl UserService for UserServiceApi {
    async fn get_user(
        &self,
        _: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        Err(unimplemented("GetUser"))
    }

    async fn batch_get_users(
        &self,
        _: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        Err(unimplemented("BatchGetUsers"))
    }
}
