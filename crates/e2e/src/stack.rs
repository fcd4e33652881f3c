//! The whole shop as processes: `user`, `inventory`, `payment`, `order` and,
//! last, `gateway` pointed at them.
//!
//! Each stack gets its own databases (one fresh database per service) and its
//! own topic, exchange, subject and consumer-group names, so stacks started
//! by tests running in parallel never see each other's messages. The user
//! service signs tokens with a key generated for the stack
//! ([`Stack::signing_key`]), so tests can mint tokens the gateway must
//! accept or refuse.
//!
//! Services start on port 0; the ports they bound are kept, and a service
//! stopped with [`Stack::stop`] comes back on the same addresses with
//! [`Stack::start`], so whoever points at it (the gateway, the order
//! service) finds it again.
//!
//! ```no_run
//! # async fn example() {
//! use e2e::stack::{Service, Stack};
//!
//! let stack = Stack::builder()
//!     .env(Service::Gateway, "RATE_LIMIT_LOGIN_BURST", "3")
//!     .start()
//!     .await;
//! let api = stack.api();
//! let reply = api.get("/api/v1/products").await;
//! assert_eq!(reply.status, 200);
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use auth::{Claims, SigningKey};
use nix::sys::signal::Signal;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use testkit::brokers::{kafka, nats, rabbitmq, unique_name};
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use uuid::Uuid;

use crate::api::{Api, Recorder};

/// How long a stack waits for anything asynchronous by default.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The e-mail address the stack's user service makes an administrator.
pub const ADMIN_EMAIL: &str = "admin@ferrishop.test";

/// The password [`Stack::customer`] and [`Stack::admin`] register with.
pub const PASSWORD: &str = "correct-horse-battery-staple";

/// One of the five binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    User,
    Inventory,
    Payment,
    Order,
    Gateway,
}

impl Service {
    /// Start order: upstreams before the services that call them.
    pub const ALL: [Service; 5] = [
        Service::User,
        Service::Inventory,
        Service::Payment,
        Service::Order,
        Service::Gateway,
    ];

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Order => "order",
            Service::Gateway => "gateway",
        }
    }
}

/// The broker names one stack uses.
#[derive(Debug, Clone)]
pub struct Names {
    pub user_events: String,
    pub inventory_events: String,
    pub payment_events: String,
    pub order_events: String,
    pub payment_commands: String,
    pub order_replies: String,
    pub order_status_prefix: String,
    pub payment_group: String,
    pub order_group: String,
}

impl Names {
    fn unique() -> Self {
        Self {
            user_events: unique_name("user-events"),
            inventory_events: unique_name("inventory-events"),
            payment_events: unique_name("payment-events"),
            order_events: unique_name("order-events"),
            payment_commands: unique_name("payment-commands"),
            order_replies: unique_name("order-replies"),
            order_status_prefix: unique_name("orders"),
            payment_group: unique_name("payment"),
            order_group: unique_name("order"),
        }
    }
}

/// One process of the stack, and how to start it again.
#[derive(Debug)]
pub struct Part {
    pub service: Service,
    /// Its database (`None` for the gateway).
    pub database: Option<TestDatabase>,
    pub process: Option<ServiceProcess>,
    env: Vec<(String, String)>,
    /// The addresses it bound the first time, reused on every restart.
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
}

impl Part {
    /// The running process; panics when it is stopped.
    pub fn process(&self) -> &ServiceProcess {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.service.binary()))
    }

    /// The address its HTTP server bound (known once it has started once).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
            .unwrap_or_else(|| panic!("{} never started", self.service.binary()))
    }

    /// `http://<its HTTP address>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// `http://<its gRPC address>`.
    pub fn grpc_url(&self) -> String {
        format!(
            "http://{}",
            self.grpc_addr
                .unwrap_or_else(|| panic!("{} never started", self.service.binary()))
        )
    }

    /// Whether its process is running.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The JSON log lines the running process wrote to stdout so far.
    pub fn json_lines(&self) -> Vec<Value> {
        self.process()
            .stdout_lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    async fn start(&mut self) {
        assert!(
            self.process.is_none(),
            "{} is already running",
            self.service.binary()
        );
        let mut spawn = Spawn::new(self.service.binary());
        for (key, value) in &self.env {
            spawn = spawn.env(key, value.clone());
        }
        if let Some(addr) = self.http_addr {
            spawn = spawn.env("HTTP_ADDR", addr.to_string());
        }
        if let Some(addr) = self.grpc_addr {
            spawn = spawn.env("GRPC_ADDR", addr.to_string());
        }
        let process = spawn.start().await;
        self.http_addr = process.http_addr;
        self.grpc_addr = process.grpc_addr;
        process.wait_ready(PATIENCE).await;
        self.process = Some(process);
    }

    /// Waits until a log line of the running process contains every one of
    /// `needles`.
    pub async fn wait_for_log(&self, needles: &[&str]) {
        self.process().wait_for_line(needles, PATIENCE).await;
    }

    async fn stop(&mut self, signal: Signal) {
        if let Some(mut process) = self.process.take() {
            process.signal(signal);
            process.wait(Duration::from_secs(30)).await;
        }
    }
}

/// How to start a [`Stack`]: the test defaults plus overrides.
#[derive(Debug, Clone, Default)]
pub struct StackBuilder {
    every: Vec<(String, String)>,
    per_service: BTreeMap<Service, Vec<(String, String)>>,
}

impl StackBuilder {
    /// Sets `key` for `service`, over the stack's default.
    pub fn env(mut self, service: Service, key: &str, value: impl Into<String>) -> Self {
        self.per_service
            .entry(service)
            .or_default()
            .push((key.to_owned(), value.into()));
        self
    }

    /// Holds each order in PENDING for `delay` before its saga confirms it
    /// (the order service's `order.saga.before_confirm` fault point): time
    /// to follow the order while it is placed.
    pub fn delay_confirmation(self, delay: Duration) -> Self {
        self.env(
            Service::Order,
            "FAULTS",
            format!("order.saga.before_confirm=delay({})", delay.as_millis()),
        )
    }

    /// Sets `key` for every service (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`);
    /// [`StackBuilder::env`] still wins for its service.
    pub fn env_all(mut self, key: &str, value: impl Into<String>) -> Self {
        self.every.push((key.to_owned(), value.into()));
        self
    }

    /// Starts the five services, the gateway last, and waits until each is
    /// ready and the brokers' consumers are attached.
    pub async fn start(self) -> Stack {
        Stack::start_with(self).await
    }
}

/// The five services, running.
#[derive(Debug)]
pub struct Stack {
    pub user: Part,
    pub inventory: Part,
    pub payment: Part,
    pub order: Part,
    pub gateway: Part,
    pub names: Names,
    /// The key the user service signs access tokens with.
    pub signing_key: SigningKey,
    pub http: reqwest::Client,
    /// Every REST exchange made through [`Stack::api`] clients.
    pub recorder: Recorder,
}

impl Stack {
    /// A stack with the test defaults.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    async fn start_with(builder: StackBuilder) -> Self {
        let (amqp, brokers, nats_url) = (rabbitmq().await, kafka().await, nats().await);
        let names = Names::unique();
        let signing_key = SigningKey::generate().expect("an Ed25519 key");
        let infra = vec![
            ("AMQP_URL".to_owned(), amqp),
            ("KAFKA_BROKERS".to_owned(), brokers),
            ("NATS_URL".to_owned(), nats_url),
        ];
        let env_of = |service: Service, defaults: Vec<(&str, String)>| {
            let mut env = infra.clone();
            env.extend(defaults.into_iter().map(|(k, v)| (k.to_owned(), v)));
            let overrides = builder
                .every
                .iter()
                .chain(builder.per_service.get(&service).into_iter().flatten());
            for (key, value) in overrides {
                env.retain(|(k, _)| k != key);
                env.push((key.clone(), value.clone()));
            }
            env
        };
        let part =
            |service: Service, database: Option<TestDatabase>, mut env: Vec<(String, String)>| {
                if let Some(database) = &database
                    && !env.iter().any(|(k, _)| k == "DATABASE_URL")
                {
                    env.push(("DATABASE_URL".to_owned(), database.url.clone()));
                }
                // Stacks of parallel tests share one Postgres server (100
                // connections by default): smaller pools than production's.
                if database.is_some() && !env.iter().any(|(k, _)| k == "DATABASE_MAX_CONNECTIONS") {
                    let pool = if service == Service::Order { "8" } else { "4" };
                    env.push(("DATABASE_MAX_CONNECTIONS".to_owned(), pool.to_owned()));
                }
                Part {
                    service,
                    database,
                    process: None,
                    env,
                    http_addr: None,
                    grpc_addr: None,
                }
            };

        let (user_db, inventory_db, payment_db, order_db) = tokio::join!(
            fresh_database(),
            fresh_database(),
            fresh_database(),
            fresh_database()
        );

        let mut user = part(
            Service::User,
            Some(user_db),
            env_of(
                Service::User,
                vec![
                    ("ADMIN_EMAILS", ADMIN_EMAIL.to_owned()),
                    ("JWT_SIGNING_KEY", signing_key.to_pkcs8_pem()),
                    ("USER_EVENTS_TOPIC", names.user_events.clone()),
                    ("LOGIN_ATTEMPTS_PER_MINUTE", "100".to_owned()),
                ],
            ),
        );
        let mut inventory = part(
            Service::Inventory,
            Some(inventory_db),
            env_of(
                Service::Inventory,
                vec![
                    ("SEED_CATALOG", "false".to_owned()),
                    ("INVENTORY_EVENTS_TOPIC", names.inventory_events.clone()),
                ],
            ),
        );
        let mut payment = part(
            Service::Payment,
            Some(payment_db),
            env_of(
                Service::Payment,
                vec![
                    ("PAYMENT_COMMANDS_EXCHANGE", names.payment_commands.clone()),
                    ("PAYMENT_COMMANDS_RETRY_DELAY", "200ms".to_owned()),
                    ("USER_EVENTS_TOPIC", names.user_events.clone()),
                    ("PAYMENT_EVENTS_TOPIC", names.payment_events.clone()),
                    // Kafka consumer groups are shared by every member that
                    // names them: one per stack keeps parallel tests apart.
                    ("CONSUMER_GROUP", names.payment_group.clone()),
                ],
            ),
        );
        tokio::join!(user.start(), inventory.start(), payment.start());
        let (commands, user_events) = (
            ["\"consuming\"", names.payment_commands.as_str()],
            ["\"consuming\"", names.user_events.as_str()],
        );
        tokio::join!(
            payment.wait_for_log(&commands),
            payment.wait_for_log(&user_events),
        );

        let mut order = part(
            Service::Order,
            Some(order_db),
            env_of(
                Service::Order,
                vec![
                    ("INVENTORY_GRPC_URL", inventory.grpc_url()),
                    ("PAYMENT_COMMANDS_EXCHANGE", names.payment_commands.clone()),
                    ("ORDER_REPLIES_EXCHANGE", names.order_replies.clone()),
                    ("ORDER_EVENTS_TOPIC", names.order_events.clone()),
                    (
                        "ORDER_STATUS_SUBJECT_PREFIX",
                        names.order_status_prefix.clone(),
                    ),
                    ("CONSUMER_GROUP", names.order_group.clone()),
                    ("PAYMENT_REPLY_TIMEOUT", "3s".to_owned()),
                    ("LEASE_TTL", "2s".to_owned()),
                ],
            ),
        );
        order.start().await;
        order
            .wait_for_log(&["\"consuming\"", &names.order_replies])
            .await;

        let mut gateway = part(
            Service::Gateway,
            None,
            env_of(
                Service::Gateway,
                vec![
                    ("USER_URL", user.http_url()),
                    ("PAYMENT_URL", payment.http_url()),
                    ("ORDER_URL", order.http_url()),
                    ("INVENTORY_URL", inventory.http_url()),
                    ("USER_GRPC_URL", user.grpc_url()),
                    ("PAYMENT_GRPC_URL", payment.grpc_url()),
                    ("ORDER_GRPC_URL", order.grpc_url()),
                    ("INVENTORY_GRPC_URL", inventory.grpc_url()),
                    (
                        "ORDER_STATUS_SUBJECT_PREFIX",
                        names.order_status_prefix.clone(),
                    ),
                    // Every request of a test comes from 127.0.0.1: limits
                    // meant for one client would throttle the whole test.
                    // Tests of the limits set their own.
                    ("RATE_LIMIT_LOGIN_PER_MINUTE", "6000".to_owned()),
                    ("RATE_LIMIT_LOGIN_BURST", "1000".to_owned()),
                    ("RATE_LIMIT_ANONYMOUS_PER_SECOND", "10000".to_owned()),
                    ("RATE_LIMIT_ANONYMOUS_BURST", "10000".to_owned()),
                    ("RATE_LIMIT_USER_PER_SECOND", "10000".to_owned()),
                    ("RATE_LIMIT_USER_BURST", "10000".to_owned()),
                ],
            ),
        );
        gateway.start().await;
        // The gateway is ready before it holds the user service's keys
        // (anonymous routes need none); tests use tokens at once.
        gateway.wait_for_log(&["JWKS loaded"]).await;

        Self {
            user,
            inventory,
            payment,
            order,
            gateway,
            names,
            signing_key,
            http: reqwest::Client::new(),
            recorder: Recorder::default(),
        }
    }

    pub fn part(&self, service: Service) -> &Part {
        match service {
            Service::User => &self.user,
            Service::Inventory => &self.inventory,
            Service::Payment => &self.payment,
            Service::Order => &self.order,
            Service::Gateway => &self.gateway,
        }
    }

    fn part_mut(&mut self, service: Service) -> &mut Part {
        match service {
            Service::User => &mut self.user,
            Service::Inventory => &mut self.inventory,
            Service::Payment => &mut self.payment,
            Service::Order => &mut self.order,
            Service::Gateway => &mut self.gateway,
        }
    }

    /// Sets (`Some`) or removes (`None`) `key` in `service`'s environment
    /// for its next [`Stack::start_again`] — e.g. a fault point armed for
    /// one run and gone in the next.
    pub fn set_env(&mut self, service: Service, key: &str, value: Option<&str>) {
        let env = &mut self.part_mut(service).env;
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Stops `service` gracefully (SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self, service: Service) {
        self.part_mut(service).stop(Signal::SIGTERM).await;
    }

    /// Kills `service` (SIGKILL): no shutdown, nothing flushed.
    pub async fn kill(&mut self, service: Service) {
        self.part_mut(service).stop(Signal::SIGKILL).await;
    }

    /// Starts a stopped `service` again, on its database and addresses.
    pub async fn start_again(&mut self, service: Service) {
        self.part_mut(service).start().await;
        let names = self.names.clone();
        match service {
            Service::Gateway => self.gateway.wait_for_log(&["JWKS loaded"]).await,
            Service::Payment => {
                self.payment
                    .wait_for_log(&["\"consuming\"", &names.payment_commands])
                    .await;
            }
            Service::Order => {
                self.order
                    .wait_for_log(&["\"consuming\"", &names.order_replies])
                    .await;
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------- clients

    /// The gateway's public REST base URL, e.g. `http://127.0.0.1:41234`.
    pub fn gateway_url(&self) -> String {
        self.gateway.http_url()
    }

    /// The gateway's public gRPC URL.
    pub fn gateway_grpc_url(&self) -> String {
        self.gateway.grpc_url()
    }

    /// An anonymous REST client of the gateway, recording every exchange.
    pub fn api(&self) -> Api {
        Api::new(self.http.clone(), self.gateway_url()).recording(self.recorder.clone())
    }

    /// What `service`'s `/metrics` exposes now, in the Prometheus text
    /// format.
    pub async fn metrics(&self, service: Service) -> String {
        scrape(&self.http, &self.part(service).http_url()).await
    }

    // --------------------------------------------------------------- users

    /// Registers `email` through the gateway (201) and logs in; returns a
    /// client carrying the access token.
    pub async fn register_and_login(&self, email: &str, name: &str) -> Session {
        self.register_and_login_with(email, name, |request| request)
            .await
    }

    /// [`Stack::register_and_login`], the registration request finished by
    /// `finish` first (e.g. a `traceparent` or `x-request-id` of the
    /// test's own).
    pub async fn register_and_login_with(
        &self,
        email: &str,
        name: &str,
        finish: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Session {
        let api = self.api();
        let request = api
            .request(Method::POST, "/api/v1/users")
            .json(&json!({"email": email, "password": PASSWORD, "name": name}));
        let reply = api.send(finish(request)).await;
        assert_eq!(reply.status, 201, "register {email}: {reply}");
        let user_id: Uuid = reply.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("registration answered no id: {reply}"));
        let token = self.login(email).await;
        Session {
            user_id,
            email: email.to_owned(),
            api: api.with_token(&token),
            token,
        }
    }

    /// Logs `email` in with [`PASSWORD`]; returns the access token.
    pub async fn login(&self, email: &str) -> String {
        let reply = self
            .api()
            .post(
                "/api/v1/auth/login",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(reply.status, 200, "login {email}: {reply}");
        reply.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login answered no token: {reply}"))
            .to_owned()
    }

    /// A new customer with a unique address.
    pub async fn customer(&self) -> Session {
        self.customer_with(|request| request).await
    }

    /// [`Stack::customer`], the registration request finished by `finish`
    /// first.
    pub async fn customer_with(
        &self,
        finish: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Session {
        let email = format!("{}@example.com", unique_name("customer"));
        self.register_and_login_with(&email, "Test Customer", finish)
            .await
    }

    /// The administrator ([`ADMIN_EMAIL`]), registered on first use.
    pub async fn admin(&self) -> Session {
        let reply = self
            .api()
            .post(
                "/api/v1/users",
                &json!({"email": ADMIN_EMAIL, "password": PASSWORD, "name": "Admin"}),
            )
            .await;
        assert!(
            reply.status == 201 || reply.status == 409,
            "register the admin: {reply}"
        );
        let token = self.login(ADMIN_EMAIL).await;
        let claims = self.decode(&token);
        assert!(claims.is_admin(), "{ADMIN_EMAIL} is no admin: {claims:?}");
        Session {
            user_id: claims.sub,
            email: ADMIN_EMAIL.to_owned(),
            api: self.api().with_token(&token),
            token,
        }
    }

    /// The claims of a token this stack issued (signature not checked).
    pub fn decode(&self, token: &str) -> Claims {
        let payload = token
            .split('.')
            .nth(1)
            .unwrap_or_else(|| panic!("not a JWT: {token}"));
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .expect("a base64url JWT payload");
        serde_json::from_slice(&bytes).expect("Ferrishop claims")
    }

    /// Claims as the user service issues them for `user`, valid for 15 min.
    pub fn claims(&self, user: Uuid, roles: &[&str]) -> Claims {
        let now = unix_now();
        Claims {
            sub: user,
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            iat: now,
            exp: now + 900,
            iss: auth::DEFAULT_ISSUER.to_owned(),
            aud: auth::DEFAULT_AUDIENCE.to_owned(),
            jti: Uuid::now_v7(),
        }
    }

    /// `claims` signed with the stack's key: a token the gateway accepts
    /// unless the claims themselves are wrong.
    pub fn sign(&self, claims: &Claims) -> String {
        self.signing_key.sign(claims).expect("sign a token")
    }

    // ------------------------------------------------------------- catalogue

    /// Creates a product through the gateway as `admin`; returns its JSON.
    pub async fn product(&self, admin: &Session, price: i64, stock: u32) -> Value {
        let sku = unique_name("SKU").to_uppercase();
        let reply = admin
            .api
            .post(
                "/api/v1/products",
                &json!({
                    "sku": sku,
                    "name": format!("Product {}", &sku[sku.len() - 8..]),
                    "description": "A product made by a test",
                    "price": {"amount": price, "currency": "EUR"},
                    "category": "BOOKS",
                    "initial_stock": stock,
                }),
            )
            .await;
        assert_eq!(reply.status, 201, "create a product: {reply}");
        reply.body
    }

    // --------------------------------------------------------------- wallet

    /// Waits until `session`'s wallet exists (it is opened when the payment
    /// service sees `user.registered`) and returns it.
    pub async fn wallet(&self, session: &Session) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let reply = session.api.get("/api/v1/wallet").await;
            if reply.status == 200 {
                return reply.body;
            }
            assert!(
                Instant::now() < deadline,
                "no wallet for {} within {PATIENCE:?}: {reply}",
                session.email
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // --------------------------------------------------------------- orders

    /// Polls `GET /api/v1/orders/{id}` until the order has `status`.
    pub async fn wait_for_order(&self, session: &Session, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let reply = session.api.get(&format!("/api/v1/orders/{id}")).await;
            if reply.status == 200 && reply.body["status"] == status {
                return reply.body;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} not {status} within {PATIENCE:?}: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A logged-in user and a gateway client carrying their token.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: Uuid,
    pub email: String,
    pub token: String,
    pub api: Api,
}

/// GETs `<base>/metrics` (`base` being a process's `http://` URL) and
/// returns the Prometheus text it exposes.
pub async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let url = format!("{base}/metrics");
    let response = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    assert_eq!(response.status(), 200, "GET {url}");
    response
        .text()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: body: {error}"))
}

/// Seconds since the Unix epoch, as JWT times are written.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
