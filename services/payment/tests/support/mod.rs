//! A payment binary on its own database, exchange and topics, and the
//! clients a test drives it with: the saga's side of RabbitMQ, the user
//! service's side of Kafka, and REST as the gateway calls it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use messaging::{
    Broker, CloudEvent, Kafka, KafkaConfig, OutgoingMessage, RabbitMq, RabbitMqConfig, Reply,
    Subscription,
};
use payment_contract::{ChargePayment, Money, PaymentCommand, PaymentReply, RefundPayment};
use serde_json::{Value, json};
use testkit::brokers::{kafka, rabbitmq, unique_name};
use testkit::net::{TcpProxy, delaying_proxy};
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long a test waits for anything asynchronous.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One payment binary and everything around it.
pub struct Harness {
    pub database: TestDatabase,
    pub process: ServiceProcess,
    pub exchange: String,
    pub user_topic: String,
    pub events_topic: String,
    /// Kafka consumer group and RabbitMQ queue suffix: one per test, so
    /// parallel tests never rebalance each other's consumers.
    pub group: String,
    pub rabbit: Broker,
    pub kafka: Broker,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
}

impl Harness {
    /// Starts a payment binary with a 100.00 EUR welcome credit.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a payment binary with extra environment.
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let database = fresh_database().await;
        let url = database.url.clone();
        Self::start_on(database, &url, extra).await
    }

    /// Starts a payment binary whose database connections go through a
    /// proxy the test can cut, for outages.
    pub async fn start_behind_database_link() -> (Self, TcpProxy) {
        let database = fresh_database().await;
        let (link, url) = delaying_proxy(&database.url, Duration::ZERO).await;
        (Self::start_on(database, &url, &[]).await, link)
    }

    async fn start_on(database: TestDatabase, database_url: &str, extra: &[(&str, &str)]) -> Self {
        let amqp = rabbitmq().await;
        let brokers = kafka().await;
        let exchange = unique_name("payment-commands");
        let user_topic = unique_name("user-events");
        let events_topic = unique_name("payment-events");
        let group = unique_name("payment");
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.to_owned()),
            ("AMQP_URL".into(), amqp.clone()),
            ("KAFKA_BROKERS".into(), brokers.clone()),
            ("PAYMENT_COMMANDS_EXCHANGE".into(), exchange.clone()),
            ("PAYMENT_COMMANDS_RETRY_DELAY".into(), "200ms".into()),
            ("USER_EVENTS_TOPIC".into(), user_topic.clone()),
            ("PAYMENT_EVENTS_TOPIC".into(), events_topic.clone()),
            ("WELCOME_CREDIT".into(), "10000".into()),
            ("CONSUMER_GROUP".into(), group.clone()),
        ];
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let process = spawn(&env, &exchange).await;
        let rabbit =
            RabbitMq::new(RabbitMqConfig::new(&amqp, "payment-test")).into_broker("/test/order");
        let kafka = Kafka::new(KafkaConfig::new(&brokers, "payment-test"))
            .expect("Kafka client")
            .into_broker("/ferrishop/user");
        Self {
            database,
            process,
            exchange,
            user_topic,
            events_topic,
            group,
            rabbit,
            kafka,
            http: reqwest::Client::new(),
            env,
        }
    }

    /// Stops the binary gracefully and starts it again on the same database,
    /// exchange and topics.
    pub async fn restart(&mut self) {
        let status = self.process.terminate(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "graceful stop");
        self.process = spawn(&self.env, &self.exchange).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.http_url())
    }

    // ------------------------------------------------------------ wallets

    /// Announces a new user on the user topic, as the user service does.
    pub async fn announce_user(&self, user: Uuid, message_id: &str) {
        let event = CloudEvent::new("user.registered", "/ferrishop/user")
            .with_id(message_id)
            .with_subject(user.to_string());
        let body = json!({
            "user_id": user,
            "email": format!("{user}@example.com"),
            "name": "Test User",
            "registered_at": "2025-01-01T00:00:00Z",
        });
        self.kafka
            .publish(
                OutgoingMessage::new(&self.user_topic, body.to_string())
                    .with_key(user.to_string())
                    .with_event(&event),
            )
            .await
            .expect("publish user.registered");
    }

    /// A user with a freshly opened wallet (the welcome credit on it).
    pub async fn new_customer(&self) -> Uuid {
        let user = Uuid::now_v7();
        self.announce_user(user, &Uuid::now_v7().to_string()).await;
        self.wait_for_wallet(user).await;
        user
    }

    /// Waits until `user` has a wallet; returns it.
    pub async fn wait_for_wallet(&self, user: Uuid) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let response = self.get_wallet(user).await;
            if response.0 == 200 {
                return response.1;
            }
            assert!(
                Instant::now() < deadline,
                "no wallet for {user} within {PATIENCE:?}: {response:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get_wallet(&self, user: Uuid) -> (u16, Value) {
        let response = self
            .http
            .get(self.url("/api/v1/wallet"))
            .header("x-user-id", user.to_string())
            .send()
            .await
            .expect("GET /api/v1/wallet");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn balance(&self, user: Uuid) -> i64 {
        let (status, wallet) = self.get_wallet(user).await;
        assert_eq!(status, 200, "{wallet}");
        wallet["balance"]["amount"]
            .as_i64()
            .expect("balance amount")
    }

    /// `POST /api/v1/wallet/deposits`.
    pub async fn deposit(&self, user: Uuid, key: &str, amount: i64) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/wallet/deposits"))
            .header("x-user-id", user.to_string())
            .header("idempotency-key", key)
            .json(&json!({"amount": {"amount": amount, "currency": "EUR"}}))
            .send()
            .await
            .expect("POST /api/v1/wallet/deposits")
    }

    /// `GET path` as `user`, as the gateway forwards it.
    pub async fn get_as(&self, user: Uuid, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-user-id", user.to_string())
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// `POST /api/v1/admin/wallets/{user}/{action}` as an admin.
    pub async fn admin(&self, user: Uuid, action: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/v1/admin/wallets/{user}/{action}")))
            .header("x-user-id", Uuid::now_v7().to_string())
            .header("x-user-roles", "customer,admin")
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .expect("admin call")
    }

    /// The wallet's stream, as stored: `(version, event_type, payload)`.
    pub async fn stream(&self, user: Uuid) -> Vec<(i64, String, Value)> {
        sqlx::query_as(
            "SELECT version, event_type, payload FROM es_events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(format!("wallet-{user}"))
        .fetch_all(&self.database.pool)
        .await
        .expect("read the wallet stream")
    }

    // ------------------------------------------------------------ commands

    /// Sends a command as an AMQP request and waits for its reply.
    pub async fn request(&self, command: &PaymentCommand) -> (Reply, PaymentReply) {
        let message = command_message(&self.exchange, command);
        request_reply(&self.rabbit, message, Duration::from_secs(20)).await
    }

    /// Sends a command as an AMQP request in the background; the task
    /// yields the decoded reply (waiting up to twice [`PATIENCE`]).
    pub fn request_in_background(&self, command: &PaymentCommand) -> JoinHandle<PaymentReply> {
        let rabbit = self.rabbit.clone();
        let message = command_message(&self.exchange, command);
        tokio::spawn(async move { request_reply(&rabbit, message, PATIENCE * 2).await.1 })
    }

    /// How many of the binary's log lines contain `text`.
    pub fn log_lines_with(&self, text: &str) -> usize {
        self.process
            .stdout_lines()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Publishes raw bytes on the commands exchange.
    pub async fn publish_raw(&self, message_type: &str, body: &[u8]) {
        let message = OutgoingMessage::new(&self.exchange, body.to_vec())
            .with_event(&CloudEvent::new(message_type, "/test/order"));
        self.rabbit.publish(message).await.expect("publish");
    }

    /// The dead-letter queue of the commands subscription.
    pub fn commands_subscription(&self) -> Subscription {
        Subscription::new(&self.exchange, &self.group)
    }
}

/// Sends `message` as an AMQP request and decodes the reply, failing the
/// test if none comes within `timeout`.
async fn request_reply(
    rabbit: &Broker,
    message: OutgoingMessage,
    timeout: Duration,
) -> (Reply, PaymentReply) {
    let reply = rabbit
        .request(message, timeout)
        .await
        .unwrap_or_else(|error| panic!("no reply: {error}"));
    let body: PaymentReply = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|error| panic!("reply does not decode ({error}): {reply:?}"));
    (reply, body)
}

/// A command as the saga sends it: CloudEvents type, JSON body, keyed by
/// order.
pub fn command_message(exchange: &str, command: &PaymentCommand) -> OutgoingMessage {
    OutgoingMessage::from_parts(
        exchange,
        Some(command.order_id().to_string()),
        command.headers(None),
        command.to_json().expect("encode"),
    )
}

pub fn charge(command_id: &str, order: Uuid, customer: Uuid, amount: i64) -> PaymentCommand {
    PaymentCommand::Charge(ChargePayment {
        command_id: command_id.to_owned(),
        order_id: order,
        customer_id: customer,
        amount: Money::new(amount, "EUR"),
    })
}

pub fn refund(command_id: &str, order: Uuid, customer: Uuid, amount: i64) -> PaymentCommand {
    PaymentCommand::Refund(RefundPayment {
        command_id: command_id.to_owned(),
        order_id: order,
        customer_id: customer,
        amount: Money::new(amount, "EUR"),
    })
}

async fn spawn(env: &[(String, String)], exchange: &str) -> ServiceProcess {
    let mut spawn = Spawn::new("payment");
    for (key, value) in env {
        spawn = spawn.env(key, value.clone());
    }
    let process = spawn.start().await;
    process.wait_ready(PATIENCE).await;
    // Commands can be sent once the queue is bound to the exchange.
    let deadline = Instant::now() + PATIENCE;
    while !process
        .stdout_lines()
        .iter()
        .any(|line| line.contains("\"consuming\"") && line.contains(exchange))
    {
        assert!(
            Instant::now() < deadline,
            "the commands consumer did not start: {:?}",
            process.stdout_lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process
}
