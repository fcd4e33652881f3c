//! `order` configuration: every setting is an environment variable
//! (`order --help` lists them with their defaults).
//!
//! Broker destinations and the participants' endpoints are settings rather
//! than constants so that tests (and side-by-side deployments) can give every
//! instance its own exchanges, topics and subjects; the defaults are the
//! names DESIGN.md and the payment contract use.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use messaging::MessagingArgs;
use platform::config::{CommonArgs, parse_duration, parse_positive_duration};
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "order",
    version,
    about = "Ferrishop order service: event-sourced orders, the order saga and its read models."
)]
pub struct Config {
    /// REST, /healthz, /readyz and /metrics listen here.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,

    /// gRPC (with health and reflection) listens here.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50053")]
    pub grpc_addr: SocketAddr,

    /// This service's own database; created at start if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orders",
        value_parser = platform::db::parse_url,
        hide_default_value = false
    )]
    pub database_url: PgConnectOptions,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// The inventory's gRPC endpoint(s), comma-separated: prices at
    /// placement, and the saga's ReserveStock / CommitReservation /
    /// ReleaseReservation.
    #[arg(
        long,
        env = "INVENTORY_GRPC_URL",
        default_value = "http://127.0.0.1:50055",
        value_parser = parse_endpoints
    )]
    pub inventory_grpc_url: String,

    /// How long one inventory call may take, retries included; a saga step
    /// that gets no answer within it is attempted again.
    #[arg(long, env = "INVENTORY_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub inventory_timeout: Duration,

    /// Inventory calls in flight at once; more wait (up to
    /// INVENTORY_TIMEOUT) for a free slot.
    #[arg(long, env = "INVENTORY_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub inventory_max_in_flight: u32,

    /// RabbitMQ exchange the payment service takes payment.charge /
    /// payment.refund commands from.
    #[arg(long, env = "PAYMENT_COMMANDS_EXCHANGE", default_value = payment_contract::COMMANDS_EXCHANGE)]
    pub payment_commands_exchange: String,

    /// RabbitMQ exchange the payment service sends its replies to (named in
    /// each command's reply-to header); consumed through the queue
    /// `<exchange>.<CONSUMER_GROUP>`.
    #[arg(
        long,
        env = "ORDER_REPLIES_EXCHANGE",
        default_value = "ferrishop.order.replies"
    )]
    pub replies_exchange: String,

    /// How long the saga waits for the payment service's reply before it
    /// sends the command again (same command id).
    #[arg(long, env = "PAYMENT_REPLY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub payment_reply_timeout: Duration,

    /// Sends of a payment command (the first included) before the saga gives
    /// up and compensates (the order is REJECTED with PAYMENT_TIMEOUT).
    #[arg(long, env = "PAYMENT_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub payment_attempts: u32,

    /// Kafka topic this service's integration events (order.placed,
    /// order.confirmed, order.rejected, order.cancelled) are published to.
    #[arg(
        long,
        env = "ORDER_EVENTS_TOPIC",
        default_value = "ferrishop.order.events"
    )]
    pub events_topic: String,

    /// Kafka topics the product_sales read model is built from,
    /// comma-separated; ORDER_EVENTS_TOPIC when unset.
    #[arg(long, env = "PRODUCT_SALES_TOPICS", value_delimiter = ',')]
    pub product_sales_topics: Vec<String>,

    /// Status changes are published to the NATS subject
    /// `<prefix>.<order id>.status` (a JetStream stream captures
    /// `<prefix>.>`).
    #[arg(
        long,
        env = "ORDER_STATUS_SUBJECT_PREFIX",
        default_value = "ferrishop.orders"
    )]
    pub status_subject_prefix: String,

    /// Consumer group (Kafka) and queue suffix (RabbitMQ) of this service's
    /// subscriptions: replicas share it and split the work.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order")]
    pub consumer_group: String,

    /// Sagas of each type a replica drives at once.
    #[arg(long, env = "SAGA_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub saga_concurrency: u32,

    /// How long completed and compensated sagas are kept after they
    /// finished (FAILED ones are never deleted: an operator must see them); `0`
    /// keeps them for ever.
    #[arg(long, env = "SAGA_RETENTION", default_value = "168h", value_parser = parse_duration)]
    pub saga_retention: Duration,

    /// How long a replica's claim on a saga or a projection lasts without
    /// renewal: after a crash, the work waits this long before another
    /// replica (or this one, restarted) takes it over.
    #[arg(long, env = "LEASE_TTL", default_value = "30s", value_parser = lease_ttl)]
    pub lease_ttl: Duration,

    /// Outbox relays run side by side (each takes partitions the others do
    /// not hold): more publish in parallel.
    #[arg(long, env = "OUTBOX_RELAYS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub outbox_relays: u32,

    /// How long a query given a consistency token waits for its read model
    /// to catch up before answering UNAVAILABLE; under the gateway's 5 s
    /// attempt timeout, so that callers get this answer and not a timeout.
    #[arg(long, env = "CONSISTENCY_WAIT", default_value = "3s", value_parser = parse_positive_duration)]
    pub consistency_wait: Duration,

    /// Empty the order read models (order_view, customer_order_history) at
    /// start and replay the whole event log into them — after a change to a
    /// projection, or to check that they equal a full replay. Set it on one
    /// replica.
    #[arg(
        long,
        env = "REBUILD_READ_MODELS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub rebuild_read_models: bool,

    /// Brokers: Kafka for integration events, RabbitMQ for the payment
    /// commands and replies, NATS for status notifications and the run-time
    /// fault flags.
    #[command(flatten)]
    pub messaging: MessagingArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// The saga engines' retention: `None` (kept for ever) for `0`.
    pub fn saga_retention(&self) -> Option<Duration> {
        Some(self.saga_retention).filter(|retention| !retention.is_zero())
    }

    /// The topics the product_sales read model consumes.
    pub fn sales_topics(&self) -> Vec<String> {
        let topics: Vec<String> = self
            .product_sales_topics
            .iter()
            .map(|topic| topic.trim().to_owned())
            .filter(|topic| !topic.is_empty())
            .collect();
        if topics.is_empty() {
            vec![self.events_topic.clone()]
        } else {
            topics
        }
    }
}

/// A lease of at least a second: renewals run at half of it.
fn lease_ttl(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration < Duration::from_secs(1) => Err("must be at least 1s".to_owned()),
        duration => Ok(duration),
    }
}

/// Comma-separated `http://host:port` endpoints.
fn parse_endpoints(text: &str) -> Result<String, String> {
    resilience::Endpoint::parse_list(text)
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use platform::config::parse_from;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_from(std::iter::once("order").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.http_addr.port(), 8082);
        assert_eq!(config.grpc_addr.port(), 50053);
        assert_eq!(config.inventory_grpc_url, "http://127.0.0.1:50055");
        assert_eq!(
            config.payment_commands_exchange,
            "ferrishop.payment.commands"
        );
        assert_eq!(config.events_topic, "ferrishop.order.events");
        assert_eq!(config.sales_topics(), vec!["ferrishop.order.events"]);
        assert_eq!(config.status_subject_prefix, "ferrishop.orders");
        assert_eq!(config.payment_attempts, 3);
        assert_eq!(
            config.saga_retention(),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn a_saga_retention_of_zero_keeps_finished_sagas() {
        assert_eq!(
            parse(&["--saga-retention", "0"]).unwrap().saga_retention(),
            None
        );
        assert_eq!(
            parse(&["--saga-retention", "36h"])
                .unwrap()
                .saga_retention(),
            Some(Duration::from_secs(36 * 3600))
        );
        let line = parse(&["--saga-retention", "a week"]).unwrap_err();
        assert!(line.contains("SAGA_RETENTION"), "{line}");
    }

    #[test]
    fn sales_topics_default_to_the_events_topic() {
        let config = parse(&["--events-topic", "t1"]).unwrap();
        assert_eq!(config.sales_topics(), vec!["t1"]);
        let config = parse(&["--product-sales-topics", "a, b"]).unwrap();
        assert_eq!(config.sales_topics(), vec!["a", "b"]);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let line = parse(&["--inventory-grpc-url", "not a url"]).unwrap_err();
        assert!(line.contains("INVENTORY_GRPC_URL"), "{line}");
        let line = parse(&["--payment-reply-timeout", "0s"]).unwrap_err();
        assert!(line.contains("PAYMENT_REPLY_TIMEOUT"), "{line}");
        let line = parse(&["--payment-attempts", "0"]).unwrap_err();
        assert!(line.contains("PAYMENT_ATTEMPTS"), "{line}");
        let line = parse(&["--lease-ttl", "10ms"]).unwrap_err();
        assert!(line.contains("LEASE_TTL"), "{line}");
    }
}
