//! gRPC adapter: `ferrishop.user.v1.UserService`, the read side other
//! services and the gateway use.
//!
//! Caller identity comes from the `x-user-id` / `x-user-roles` metadata the
//! gateway sets on user-facing calls (see `ferrishop/common/v1/common.proto`).
//! A call without `x-user-id` is a service-to-service call from inside the
//! cluster and may read any user. Every failure is an [`Error`], turned into
//! a `Status` (with the stable code in `x-error-code`) in exactly one place,
//! `From<Error> for Status` at the end of this file.

use std::collections::HashMap;
use std::sync::Arc;

use platform::validation::FieldViolation;
use proto::convert::timestamp;
use proto::ferrishop::user::v1::user_service_server::UserService;
use proto::ferrishop::user::v1::{
    BatchGetUsersRequest, BatchGetUsersResponse, GetUserRequest, GetUserResponse, User,
};
use proto::metadata::VouchedUser;
use proto::status::ErrorDomain;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

use crate::app::App;
use crate::domain::{Account, Caller, UserId};
use crate::error::Error;

/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: ErrorDomain = ErrorDomain::new("user.ferrishop.dev");

/// The `UserService` implementation.
#[derive(Debug, Clone)]
pub struct UserServiceApi {
    app: Arc<App>,
}

impl UserServiceApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl UserService for UserServiceApi {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let caller = caller(request.metadata())?;
        let wanted = request.into_inner().user_id;
        let id = match (wanted.is_empty(), caller) {
            (false, _) => parse_id("user_id", &wanted)?,
            (true, Caller::User { id, .. }) => id,
            (true, Caller::Internal) => return Err(Error::Unauthenticated.into()),
        };
        let account = self.app.user(caller, id).await?;
        Ok(Response::new(GetUserResponse {
            user: Some(to_proto(account)),
        }))
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let caller = caller(request.metadata())?;
        let ids = request
            .into_inner()
            .user_ids
            .iter()
            .map(|id| parse_id("user_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let users = self.app.users(caller, ids).await?;
        Ok(Response::new(BatchGetUsersResponse {
            users: users.into_iter().map(to_proto).collect(),
        }))
    }
}

/// The caller the gateway vouches for, or an internal caller when there is
/// no `x-user-id`; a malformed one is refused rather than ignored.
fn caller(metadata: &MetadataMap) -> Result<Caller, Error> {
    match VouchedUser::from_headers(metadata.as_ref()) {
        Ok(Some(user)) => Ok(Caller::User {
            id: UserId::from(user.id),
            admin: user.is_admin,
        }),
        Ok(None) => Ok(Caller::Internal),
        Err(_) => Err(Error::Unauthenticated),
    }
}

fn parse_id(field: &'static str, text: &str) -> Result<UserId, Error> {
    text.parse::<UserId>().map_err(|_| {
        Error::Validation(vec![FieldViolation::new(
            field,
            format!("{text:?} is not a UUID"),
        )])
    })
}

fn to_proto(account: Account) -> User {
    User {
        roles: account.role_names(),
        id: account.user.id.to_string(),
        email: account.user.email.into_string(),
        name: account.user.name.as_str().to_owned(),
        created_at: Some(timestamp(account.user.created_at)),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.log();
        let code = match &error {
            Error::Validation(_) | Error::BadRequest(_) => Code::InvalidArgument,
            Error::EmailTaken => Code::AlreadyExists,
            Error::InvalidCredentials | Error::InvalidRefreshToken | Error::Unauthenticated => {
                Code::Unauthenticated
            }
            Error::UserNotFound => Code::NotFound,
            Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        };
        let mut details = ErrorDetails::new();
        if let Error::Validation(violations) = &error {
            for violation in violations {
                details.add_bad_request_violation(&violation.field, &violation.description);
            }
        }
        ERROR_DOMAIN.status_with(
            code,
            error.code(),
            error.to_string(),
            HashMap::new(),
            details,
        )
    }
}
