//! `ferrishop.user.v1.UserService` as the gateway and other services call it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use proto::ferrishop::user::v1::user_service_client::UserServiceClient;
use proto::ferrishop::user::v1::{BatchGetUsersRequest, GetUserRequest};
use support::{UserService, start_with};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

async fn client(service: &UserService) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(testkit::grpc::channel(&service.process.grpc_url()).await)
}

/// A request carrying the identity the gateway would set.
fn as_user<T>(message: T, user_id: &str, roles: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-user-id", user_id.parse().unwrap());
    if !roles.is_empty() {
        request
            .metadata_mut()
            .insert("x-user-roles", roles.parse().unwrap());
    }
    request
}

fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get("x-error-code")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

fn get(user_id: &str) -> GetUserRequest {
    GetUserRequest {
        user_id: user_id.to_owned(),
    }
}

#[tokio::test]
async fn users_read_themselves_admins_and_services_read_anyone() {
    let service = start_with(|spawn| spawn.env("ADMIN_EMAILS", "root@example.com")).await;
    let ann = service.registered("ann@example.com").await;
    let bob = service.registered("bob@example.com").await;
    let root = service.registered("root@example.com").await;
    let mut users = client(&service).await;

    let own = users.get_user(as_user(get(""), &ann, "")).await.unwrap();
    let own = own.into_inner().user.unwrap();
    assert_eq!(
        (own.id.as_str(), own.email.as_str()),
        (ann.as_str(), "ann@example.com")
    );
    assert!(own.roles.is_empty());
    assert!(own.created_at.is_some());

    let hidden = users
        .get_user(as_user(get(&bob), &ann, ""))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(error_code(&hidden), "USER_NOT_FOUND");

    let by_admin = users
        .get_user(as_user(get(&bob), &root, "admin"))
        .await
        .unwrap();
    assert_eq!(by_admin.into_inner().user.unwrap().id, bob);

    let internal = users.get_user(get(&root)).await.unwrap();
    assert_eq!(internal.into_inner().user.unwrap().roles, ["admin"]);

    let nobody = users.get_user(get("")).await.unwrap_err();
    assert_eq!(nobody.code(), Code::Unauthenticated);

    let spoofed = users
        .get_user(as_user(get(""), "not-a-uuid", ""))
        .await
        .unwrap_err();
    assert_eq!(spoofed.code(), Code::Unauthenticated);

    let malformed = users.get_user(get("42")).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(error_code(&malformed), "VALIDATION_FAILED");
    assert!(malformed.message().contains("user_id"), "{malformed:?}");
    let violations = malformed
        .get_details_bad_request()
        .unwrap()
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "user_id");

    let missing = users
        .get_user(get(&uuid::Uuid::now_v7().to_string()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn batches_keep_request_order_skip_unknown_ids_and_are_bounded() {
    let service = start_with(|spawn| spawn).await;
    let ann = service.registered("ann@example.com").await;
    let bob = service.registered("bob@example.com").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut users = client(&service).await;

    let batch = |ids: Vec<String>| BatchGetUsersRequest { user_ids: ids };
    let found = users
        .batch_get_users(batch(vec![
            bob.clone(),
            unknown.clone(),
            ann.clone(),
            bob.clone(),
        ]))
        .await
        .unwrap()
        .into_inner()
        .users;
    let ids: Vec<_> = found.iter().map(|user| user.id.as_str()).collect();
    assert_eq!(ids, [bob.as_str(), ann.as_str()]);

    let own_only = users
        .batch_get_users(as_user(batch(vec![ann.clone(), bob.clone()]), &ann, ""))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(own_only.len(), 1);
    assert_eq!(own_only[0].id, ann);

    let too_many = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let refused = users.batch_get_users(batch(too_many)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(error_code(&refused), "BAD_REQUEST");

    let malformed = users
        .batch_get_users(batch(vec![ann, "nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(error_code(&malformed), "VALIDATION_FAILED");
}
