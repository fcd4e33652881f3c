//! `payment` configuration: every setting is an environment variable
//! (`payment --help` lists them with their defaults).
//!
//! Broker destinations are settings rather than constants so that tests (and
//! side-by-side deployments) can give every instance its own exchange and
//! topics; the defaults are the contract's names.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use messaging::MessagingArgs;
use platform::config::{CommonArgs, parse_duration};
use sqlx::postgres::PgConnectOptions;

use crate::domain::money::{Amount, Currency};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "payment",
    version,
    about = "Ferrishop payment service: event-sourced wallets, charges and refunds."
)]
pub struct Config {
    /// REST, /healthz, /readyz and /metrics listen here.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8083")]
    pub http_addr: SocketAddr,

    /// gRPC (with health and reflection) listens here.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50054")]
    pub grpc_addr: SocketAddr,

    /// This service's own database; created at start if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/payments",
        value_parser = platform::db::parse_url,
        hide_default_value = false
    )]
    pub database_url: PgConnectOptions,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Currency of every wallet (ISO 4217).
    #[arg(long, env = "WALLET_CURRENCY", default_value = "EUR")]
    pub wallet_currency: Currency,

    /// Money put into a new wallet when its user registers, in minor units of
    /// WALLET_CURRENCY (10000 = 100.00 EUR); 0 for none.
    #[arg(long, env = "WELCOME_CREDIT", default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(0..))]
    pub welcome_credit: i64,

    /// RabbitMQ exchange the saga's payment.charge / payment.refund commands
    /// arrive on; the queue is `<exchange>.<CONSUMER_GROUP>`, its dead-letter
    /// queue `<exchange>.<CONSUMER_GROUP>.dlq`.
    #[arg(long, env = "PAYMENT_COMMANDS_EXCHANGE", default_value = payment_contract::COMMANDS_EXCHANGE)]
    pub commands_exchange: String,

    /// Commands handled at once (each on its own database transaction).
    #[arg(long, env = "PAYMENT_COMMANDS_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub commands_concurrency: u16,

    /// Processing attempts of a command before it is moved to the
    /// dead-letter queue (a command whose body cannot be read is moved at
    /// once).
    #[arg(long, env = "PAYMENT_COMMANDS_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub commands_max_attempts: u32,

    /// How long a command that failed for a passing reason (database down,
    /// injected fault) waits before it is tried again.
    #[arg(long, env = "PAYMENT_COMMANDS_RETRY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub commands_retry_delay: Duration,

    /// Kafka topic this service's integration events (payment.charged,
    /// payment.refunded, payment.declined) are published to.
    #[arg(long, env = "PAYMENT_EVENTS_TOPIC", default_value = payment_contract::EVENTS_TOPIC)]
    pub events_topic: String,

    /// Kafka topic of the user service's events; `user.registered` opens a
    /// wallet.
    #[arg(
        long,
        env = "USER_EVENTS_TOPIC",
        default_value = "ferrishop.user.events"
    )]
    pub user_events_topic: String,

    /// Consumer group (Kafka) and queue suffix (RabbitMQ) of this service's
    /// subscriptions: replicas share it and split the work.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "payment")]
    pub consumer_group: String,

    #[command(flatten)]
    pub messaging: MessagingArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Config {
    /// The welcome credit, `None` when it is zero.
    pub fn welcome_credit(&self) -> Option<Amount> {
        Amount::new(self.welcome_credit, self.wallet_currency).ok()
    }
}

#[cfg(test)]
mod tests {
    use platform::config::parse_from;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_from(std::iter::once("payment").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.http_addr.port(), 8083);
        assert_eq!(config.grpc_addr.port(), 50054);
        assert_eq!(
            config.welcome_credit(),
            Some(Amount::new(10_000, Currency::EUR).unwrap())
        );
        assert_eq!(
            parse(&["--welcome-credit", "0"]).unwrap().welcome_credit(),
            None
        );
        assert_eq!(config.commands_exchange, "ferrishop.payment.commands");
        assert_eq!(config.events_topic, "ferrishop.payment.events");
        assert_eq!(config.user_events_topic, "ferrishop.user.events");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let line = parse(&["--welcome-credit=-1"]).unwrap_err();
        assert!(line.contains("WELCOME_CREDIT"), "{line}");
        let line = parse(&["--wallet-currency", "euro"]).unwrap_err();
        assert!(line.contains("WALLET_CURRENCY"), "{line}");
        let line = parse(&["--commands-max-attempts", "0"]).unwrap_err();
        assert!(line.contains("PAYMENT_COMMANDS_MAX_ATTEMPTS"), "{line}");
    }
}
