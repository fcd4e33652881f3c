//! What an operator sees: `--help`, configuration errors, requests that
//! arrive while the database is not ready, and logs that never contain a
//! password or a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use proto::ferrishop::user::v1::GetUserRequest;
use proto::ferrishop::user::v1::user_service_client::UserServiceClient;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{PASSWORD, start_with};
use testkit::net::{TcpProxy, free_port};
use testkit::postgres::fresh_database;
use testkit::process::{Spawn, binary_path};

#[test]
fn help_lists_every_variable() {
    let output = Command::new(binary_path("user"))
        .arg("--help")
        .env("JWT_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----kEyMaTeRiAl")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "HTTP_ADDR",
        "GRPC_ADDR",
        "DATABASE_URL",
        "ADMIN_EMAILS",
        "JWT_SIGNING_KEY",
        "JWT_SIGNING_KEY_FILE",
        "JWT_PREVIOUS_KEY",
        "JWT_PREVIOUS_KEY_FILE",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "ACCESS_TOKEN_TTL",
        "REFRESH_TOKEN_TTL",
        "LOGIN_ATTEMPTS_PER_MINUTE",
        "USER_EVENTS_TOPIC",
        "KAFKA_BROKERS",
        "RUST_LOG",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }
    assert!(
        !help.contains("kEyMaTeRiAl"),
        "--help must not show a key's value"
    );
}

#[tokio::test]
async fn a_bad_key_exits_2_naming_the_variable_without_echoing_it() {
    let mut process = Spawn::new("user")
        .env(
            "JWT_SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nnot-base64\n-----END PRIVATE KEY-----",
        )
        .no_wait()
        .start()
        .await;
    let status = process.wait(std::time::Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2));
    let stderr = process.stderr_lines();
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("JWT_SIGNING_KEY"), "{stderr:?}");
    assert!(!stderr[0].contains("not-base64"), "{stderr:?}");
}

#[tokio::test]
async fn passwords_and_tokens_never_reach_the_logs() {
    let mut service = start_with(|spawn| spawn.env("RUST_LOG", "trace")).await;
    let wrong = "definitely-not-it-1234";

    let id = service.registered("ann@example.com").await;
    let refused = service.login("ann@example.com", wrong).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let login = service.login("ann@example.com", PASSWORD).await;
    let access = login.text("access_token").to_owned();
    let first_refresh = login.text("refresh_token").to_owned();
    let refreshed = service.refresh(&first_refresh).await;
    let second_access = refreshed.text("access_token").to_owned();
    let second_refresh = refreshed.text("refresh_token").to_owned();
    let replay = service.refresh(&first_refresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    service.me(&id).await;
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();

    // Every line it will ever write: stopped, and its output read to the end.
    let status = service.process.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    let logs = service.logs();
    assert!(logs.contains("user registered"), "the capture works");
    assert!(
        logs.contains("refresh token reused"),
        "security events are logged"
    );
    assert!(
        logs.contains("signing with a generated key"),
        "a missing signing key is a warning"
    );
    for secret in [
        PASSWORD.to_owned(),
        wrong.to_owned(),
        access.clone(),
        signature(&access),
        second_access.clone(),
        signature(&second_access),
        first_refresh,
        second_refresh,
    ] {
        assert!(
            !logs.contains(&secret),
            "a secret reached the logs: {secret:.12}…"
        );
    }
    assert!(!logs.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn requests_before_the_database_is_migrated_get_a_retryable_503_then_are_served() {
    // The database sits behind a port nothing listens on yet: the service
    // starts, and its bootstrap keeps retrying.
    let database = fresh_database().await;
    let mut behind_proxy = reqwest::Url::parse(&database.url).unwrap();
    let postgres = format!(
        "{}:{}",
        behind_proxy.host_str().unwrap(),
        behind_proxy.port().unwrap_or(5432)
    );
    let port = free_port();
    behind_proxy.set_port(Some(port)).unwrap();
    let process = Spawn::new("user")
        .env("DATABASE_URL", behind_proxy.as_str())
        .env("KAFKA_BROKERS", testkit::brokers::kafka().await)
        .env("NATS_URL", testkit::brokers::nats().await)
        .env(
            "USER_EVENTS_TOPIC",
            testkit::brokers::unique_name("user-events"),
        )
        .start()
        .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", process.http_url());
    let register = || {
        http.post(url("/api/v1/users"))
            .json(&json!({"email": "early@example.com", "password": PASSWORD, "name": "Early"}))
            .send()
    };

    let refused = register().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "SERVICE_STARTING", "{problem}");
    let mut grpc = UserServiceClient::new(testkit::grpc::channel(&process.grpc_url()).await);
    let status = grpc
        .get_user(GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The probes still answer, and say why.
    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 503);

    // The database becomes reachable: the service migrates it and serves.
    let _proxy = TcpProxy::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        postgres.parse().unwrap(),
    )
    .await;
    process.wait_ready(Duration::from_secs(30)).await;
    let created = register().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
}
