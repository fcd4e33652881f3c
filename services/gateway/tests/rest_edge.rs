//! The REST port's edge against the real gateway binary, with the user
//! service played by the test: HTTP/2 clients are served (the upstream is
//! spoken to in HTTP/1.1), and a body that never arrives gets 408 instead of
//! holding the connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::Setup;
use testkit::brokers::nats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

#[tokio::test]
async fn http2_clients_are_forwarded_and_never_open_the_breaker() {
    let setup = Setup::start().await;
    let user = Uuid::now_v7();
    let token = setup.token(user);
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // More calls than the breaker's five consecutive failures.
    for attempt in 0..8 {
        let response = http2
            .get(format!("{}/api/v1/users/me", setup.gateway.http_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 200, "attempt {attempt}: {body}");
        assert_eq!(body["id"], user.to_string());
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408_and_the_connection_closes() {
    let setup = Setup::start_with(&nats().await, &[]).await;
    let address = setup
        .gateway
        .http_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection
        .write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: gateway\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), connection.read_to_end(&mut answer))
        .await
        .expect("the gateway held the connection past its body deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
}
