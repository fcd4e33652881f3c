//! Broker endpoints and per-test names.

use std::time::Duration;

/// A name no other test uses: `<prefix>-<uuid>`, valid as a RabbitMQ
/// queue/exchange, Kafka topic, NATS subject token and JetStream stream name
/// (only `[a-z0-9-]`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Where the `host:port` of a broker URL stands in it
/// (`scheme://[user:pass@]host:port[/...]`, or a comma-separated list of
/// `host:port`, of which the first).
pub(crate) fn authority_range(url: &str) -> std::ops::Range<usize> {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let start = url[start..].rfind('@').map_or(start, |at| start + at + 1);
    let end = url[start..]
        .find(['/', ',', '?'])
        .map_or(url.len(), |end| start + end);
    start..end
}

/// Whether `url`'s host and port accept a TCP connection within 3 s.
pub async fn reachable(url: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(&url[authority_range(url)]);
    matches!(
        tokio::time::timeout(Duration::from_secs(3), connect).await,
        Ok(Ok(_))
    )
}

/// Where a dependency is: the configured endpoint if its variable is set,
/// else the platform default if it is listening, else (feature `containers`,
/// with a Docker engine) a container started for this test process.
/// Panics with the way to start it when none of these works.
pub(crate) async fn locate(dependency: Dependency, variables: &[&str], default: &str) -> String {
    let configured = variables.iter().find_map(|name| std::env::var(name).ok());
    if let Some(url) = configured {
        if reachable(&url).await {
            return url;
        }
        panic!(
            "{dependency:?} is unreachable at {url} (from {variables:?}); start it with `make infra-up`"
        );
    }
    if reachable(default).await {
        return default.to_owned();
    }
    #[cfg(feature = "containers")]
    if crate::containers::docker_available() {
        return crate::containers::endpoint(dependency).await;
    }
    panic!("{dependency:?} is unreachable at {default}; start it with `make infra-up`");
}

/// The infrastructure a test may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Postgres,
    RabbitMq,
    Kafka,
    Nats,
}

/// RabbitMQ's URL (`AMQP_URL` or the platform default), checked reachable.
pub async fn rabbitmq() -> String {
    locate(Dependency::RabbitMq, &["AMQP_URL"], DEFAULT_AMQP_URL).await
}

/// The Kafka-compatible broker (`KAFKA_BROKERS` or the default), checked reachable.
pub async fn kafka() -> String {
    locate(Dependency::Kafka, &["KAFKA_BROKERS"], DEFAULT_KAFKA_BROKERS).await
}

/// NATS's URL (`NATS_URL` or the platform default), checked reachable.
pub async fn nats() -> String {
    locate(Dependency::Nats, &["NATS_URL"], DEFAULT_NATS_URL).await
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

    #[test]
    fn the_authority_of_each_kind_of_broker_url() {
        for (url, authority) in [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1:5672"),
            ("nats://127.0.0.1:4222", "127.0.0.1:4222"),
            ("127.0.0.1:9092,127.0.0.1:9093", "127.0.0.1:9092"),
            (
                "postgres://postgres@localhost:5432/db?sslmode=disable",
                "localhost:5432",
            ),
        ] {
            assert_eq!(&url[authority_range(url)], authority, "{url}");
        }
    }
}
