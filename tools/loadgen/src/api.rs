//! The public REST API as a shopper sees it, each call timed.
//!
//! A shopper calls through [`Session`], which records every call's latency
//! and outcome in the shopper's own [`Recorder`] (no shared lock on the hot
//! path) and honours `429 Retry-After` the way a well-behaved client does:
//! the wait is recorded as a rate-limit hit, not as latency.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::report::Recorder;

/// Longest wait honoured from a `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Times one call is repeated after a 429 before giving up.
const MAX_RATE_LIMIT_RETRIES: u32 = 5;

/// The gateway, shared by every shopper (one connection pool).
#[derive(Debug, Clone)]
pub struct Shop {
    client: reqwest::Client,
    base: String,
}

impl Shop {
    /// Fails only when no HTTP client can be built (no TLS backend or
    /// resolver).
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }
}

/// Why a call did not give the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{operation}: {status} {code}")]
    Refused {
        operation: &'static str,
        status: StatusCode,
        /// The problem document's `code`, when there is one.
        code: String,
    },
    #[error("{operation}: {source}")]
    Transport {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

impl CallError {
    pub fn code(&self) -> &str {
        match self {
            Self::Refused { code, .. } => code,
            Self::Transport { .. } => "TRANSPORT",
        }
    }
}

/// One shopper's view of the shop: its token and its recorder.
#[derive(Debug)]
pub struct Session {
    shop: Shop,
    token: Option<String>,
    pub recorder: Recorder,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: String,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
}

#[derive(Debug, Deserialize)]
pub struct OrderState {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct TokenPair {
    access_token: String,
}

impl Session {
    pub fn new(shop: Shop) -> Self {
        Self {
            shop,
            token: None,
            recorder: Recorder::default(),
        }
    }

    /// Registers (an existing account is fine) and logs in.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Result<(), CallError> {
        let body = json!({ "email": email, "password": password, "name": "Load Generator" });
        match self
            .call::<Value>("register", Method::POST, "/api/v1/users", Some(body), None)
            .await
        {
            Ok(_) => {}
            Err(error) if error.code() == "EMAIL_TAKEN" => {}
            Err(error) => return Err(error),
        }
        let body = json!({ "email": email, "password": password });
        let pair: TokenPair = self
            .call(
                "login",
                Method::POST,
                "/api/v1/auth/login",
                Some(body),
                None,
            )
            .await?;
        self.token = Some(pair.access_token);
        Ok(())
    }

    pub async fn products_in_stock(&mut self) -> Result<Vec<Product>, CallError> {
        let page: Page<Product> = self
            .call(
                "products.list",
                Method::GET,
                "/api/v1/products?in_stock=true&limit=50",
                None,
                None,
            )
            .await?;
        Ok(page.items)
    }

    pub async fn create_product(
        &mut self,
        sku: &str,
        price: i64,
        currency: &str,
        stock: i64,
    ) -> Result<Product, CallError> {
        let body = json!({
            "sku": sku,
            "name": format!("Load test item {sku}"),
            "description": "created by loadgen",
            "price": { "amount": price, "currency": currency },
            "category": "ELECTRONICS",
            "initial_stock": stock,
        });
        self.call(
            "products.create",
            Method::POST,
            "/api/v1/products",
            Some(body),
            None,
        )
        .await
    }

    pub async fn quote(&mut self, product: &str, quantity: u32) -> Result<Value, CallError> {
        let path = format!("/api/v1/products/{product}/quote?quantity={quantity}&tax_rate=0.08");
        self.call("products.quote", Method::GET, &path, None, None)
            .await
    }

    /// Whether the wallet exists yet (it is opened asynchronously after
    /// registration).
    /// Whether the wallet is open yet: a 404 is the expected answer until
    /// the payment service has seen the registration, not a failure.
    pub async fn has_wallet(&mut self) -> Result<bool, CallError> {
        let wallet = self
            .exchange::<Value>(
                "wallet.get",
                Method::GET,
                "/api/v1/wallet",
                None,
                None,
                true,
            )
            .await?;
        Ok(wallet.is_some())
    }

    pub async fn deposit(
        &mut self,
        amount: i64,
        currency: &str,
        key: &str,
    ) -> Result<(), CallError> {
        let body = json!({ "amount": { "amount": amount, "currency": currency } });
        self.call::<Value>(
            "wallet.deposit",
            Method::POST,
            "/api/v1/wallet/deposits",
            Some(body),
            Some(key),
        )
        .await
        .map(drop)
    }

    pub async fn place_order(
        &mut self,
        items: &[(String, u32)],
        key: &str,
    ) -> Result<OrderState, CallError> {
        let items: Vec<Value> = items
            .iter()
            .map(|(product, quantity)| json!({ "product_id": product, "quantity": quantity }))
            .collect();
        self.call(
            "orders.place",
            Method::POST,
            "/api/v1/orders",
            Some(json!({ "items": items })),
            Some(key),
        )
        .await
    }

    pub async fn order(&mut self, id: &str) -> Result<OrderState, CallError> {
        self.call(
            "orders.get",
            Method::GET,
            &format!("/api/v1/orders/{id}"),
            None,
            None,
        )
        .await
    }

    pub async fn cancel(&mut self, id: &str) -> Result<(), CallError> {
        let path = format!("/api/v1/orders/{id}/cancel");
        self.call::<Value>("orders.cancel", Method::POST, &path, None, None)
            .await
            .map(drop)
    }

    /// One timed call: the latency of each attempt is recorded under
    /// `operation`, 429s are waited out.
    async fn call<T: DeserializeOwned>(
        &mut self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, CallError> {
        self.exchange(operation, method, path, body, idempotency_key, false)
            .await?
            .ok_or(CallError::Refused {
                operation,
                status: StatusCode::NOT_FOUND,
                code: "NOT_FOUND".to_owned(),
            })
    }

    /// [`Session::call`]; with `absent_is_an_answer`, a 404 counts as a
    /// successful call that found nothing (`None`).
    async fn exchange<T: DeserializeOwned>(
        &mut self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
        absent_is_an_answer: bool,
    ) -> Result<Option<T>, CallError> {
        let transport = |source| CallError::Transport { operation, source };
        let mut attempt = 0;
        loop {
            let mut request = self
                .shop
                .client
                .request(method.clone(), format!("{}{path}", self.shop.base));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let started = Instant::now();
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    self.recorder
                        .failed(operation, "TRANSPORT", started.elapsed());
                    return Err(transport(source));
                }
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < MAX_RATE_LIMIT_RETRIES {
                attempt += 1;
                self.recorder.rate_limited(operation);
                tokio::time::sleep(retry_after(&response)).await;
                continue;
            }
            let bytes = response.bytes().await.map_err(transport)?;
            let elapsed = started.elapsed();
            if status.is_success() {
                self.recorder.succeeded(operation, elapsed);
                let text = if bytes.is_empty() {
                    b"null".as_slice()
                } else {
                    &bytes
                };
                return serde_json::from_slice(text).map(Some).map_err(|error| {
                    CallError::Refused {
                        operation,
                        status,
                        code: format!("UNREADABLE_BODY: {error}"),
                    }
                });
            }
            if absent_is_an_answer && status == StatusCode::NOT_FOUND {
                self.recorder.succeeded(operation, elapsed);
                return Ok(None);
            }
            let code = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|problem| problem.get("code")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| status.as_u16().to_string());
            self.recorder.failed(operation, &code, elapsed);
            return Err(CallError::Refused {
                operation,
                status,
                code,
            });
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}
