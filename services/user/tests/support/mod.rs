//! The real `user` binary on a fresh database, and a client for its REST API.
#![allow(dead_code)]

use std::time::Duration;

use auth::{JwkSet, KeySet, Verifier};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};

pub const PASSWORD: &str = "correct horse battery staple";

/// A running `user` process with its own database and events topic.
pub struct UserService {
    pub process: ServiceProcess,
    pub database: TestDatabase,
    pub topic: String,
    http: reqwest::Client,
}

/// A response, read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn text(&self, key: &str) -> &str {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key:?} in {}", self.body))
    }
}

/// Starts the service with the test defaults and `configure`'s changes.
pub async fn start_with(configure: impl FnOnce(Spawn) -> Spawn) -> UserService {
    let database = fresh_database().await;
    start_on(database, configure).await
}

pub async fn start() -> UserService {
    start_with(|spawn| spawn).await
}

/// Starts the service on an existing database (e.g. to restart it).
pub async fn start_on(
    database: TestDatabase,
    configure: impl FnOnce(Spawn) -> Spawn,
) -> UserService {
    let topic = testkit::brokers::unique_name("user-events");
    let spawn = Spawn::new("user")
        .env("DATABASE_URL", &database.url)
        .env("KAFKA_BROKERS", testkit::brokers::kafka().await)
        .env("NATS_URL", testkit::brokers::nats().await)
        .env("USER_EVENTS_TOPIC", &topic);
    let process = configure(spawn).start().await;
    process.wait_ready(Duration::from_secs(30)).await;
    UserService {
        process,
        database,
        topic,
        http: reqwest::Client::new(),
    }
}

impl UserService {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.http_url())
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Answer {
        self.post(
            "/api/v1/users",
            json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    /// Registers and returns the new user's id.
    pub async fn registered(&self, email: &str) -> String {
        let answer = self.register(email, PASSWORD, "Test User").await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.text("id").to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": refresh_token}),
        )
        .await
    }

    /// `GET /api/v1/users/me` as the gateway calls it.
    pub async fn me(&self, user_id: &str) -> Answer {
        self.send(
            self.http
                .get(self.url("/api/v1/users/me"))
                .header("x-user-id", user_id),
        )
        .await
    }

    pub async fn jwks(&self) -> JwkSet {
        let answer = self
            .send(self.http.get(self.url("/.well-known/jwks.json")))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        serde_json::from_value(answer.body).expect("a JWKS document")
    }

    /// The verifier the gateway would build from this service's JWKS.
    pub async fn verifier(&self) -> Verifier {
        Verifier::new(
            KeySet::from_jwks(&self.jwks().await),
            auth::DEFAULT_ISSUER,
            auth::DEFAULT_AUDIENCE,
        )
    }

    /// Everything the process has written so far, stdout and stderr.
    pub fn logs(&self) -> String {
        let mut lines = self.process.stdout_lines();
        lines.extend(self.process.stderr_lines());
        lines.join("\n")
    }
}
