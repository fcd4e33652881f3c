//! Broker endpoints and per-test names.

use std::time::Duration;

/// A name no other test uses: `<prefix>-<uuid>`, valid as a RabbitMQ
/// queue/exchange, Kafka topic, NATS subject token and JetStream stream name
/// (only `[a-z0-9-]`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// `AMQP_URL` or the platform default.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `KAFKA_BROKERS` or the platform default.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// `NATS_URL` or the platform default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Panics with a message naming the broker unless its port accepts TCP.
pub async fn require(name: &str, url: &str) {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = authority.split(['/', ',']).next().unwrap_or(authority);
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(host_port),
    )
    .await;
    if !matches!(reachable, Ok(Ok(_))) {
        panic!("{name} is unreachable at {host_port}; start it with `make infra-up`");
    }
}

/// Checks RabbitMQ is reachable and returns its URL.
pub async fn rabbitmq() -> String {
    let url = amqp_url();
    require("RabbitMQ", &url).await;
    url
}

/// Checks the Kafka-compatible broker is reachable and returns its address.
pub async fn kafka() -> String {
    let brokers = kafka_brokers();
    require("Kafka", &brokers).await;
    brokers
}

/// Checks NATS is reachable and returns its URL.
pub async fn nats() -> String {
    let url = nats_url();
    require("NATS", &url).await;
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_broker_safe() {
        let a = unique_name("orders");
        let b = unique_name("orders");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
