//! `inventory` configuration: every setting is an environment variable
//! (`inventory --help` lists them with their defaults).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use messaging::MessagingArgs;
use platform::config::{CommonArgs, parse_positive_duration};
use sqlx::postgres::PgConnectOptions;

use crate::domain::money::Currency;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "inventory",
    version,
    about = "Ferrishop inventory service: catalogue, pricing and stock reservations."
)]
pub struct Config {
    /// REST, /healthz, /readyz and /metrics listen here.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,

    /// gRPC (with health and reflection) listens here.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50055")]
    pub grpc_addr: SocketAddr,

    /// This service's own database; created at start if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/inventory",
        value_parser = platform::db::parse_url,
        hide_default_value = false
    )]
    pub database_url: PgConnectOptions,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// How long a stock reservation is held when the order saga neither
    /// commits nor releases it (e.g. `15m`, `90s`).
    #[arg(long, env = "RESERVATION_TTL", default_value = "15m", value_parser = parse_positive_duration)]
    pub reservation_ttl: Duration,

    /// How often overdue reservations are looked for and expired.
    #[arg(
        long,
        env = "RESERVATION_SWEEP_INTERVAL",
        default_value = "30s",
        value_parser = parse_positive_duration
    )]
    pub reservation_sweep_interval: Duration,

    /// Currency of every price in the catalogue (ISO 4217): an order's total
    /// adds up prices of several products, so they must share one.
    #[arg(long, env = "SHOP_CURRENCY", default_value = "EUR")]
    pub shop_currency: Currency,

    /// Load the demo catalogue (about 20 products with stock) at start. Each
    /// product is added unless its SKU exists, so restarts add nothing.
    #[arg(
        long,
        env = "SEED_CATALOG",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub seed_catalog: bool,

    /// Kafka topic this service's integration events (stock reserved and
    /// released, low stock) are published to.
    #[arg(long, env = "INVENTORY_EVENTS_TOPIC", default_value = crate::messaging::TOPIC)]
    pub events_topic: String,

    /// Brokers: integration events go to Kafka (`KAFKA_BROKERS`); NATS
    /// carries the run-time fault flags.
    #[command(flatten)]
    pub messaging: MessagingArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
mod tests {
    use platform::config::parse_from;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_from(std::iter::once("inventory").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.http_addr.port(), 8084);
        assert_eq!(config.grpc_addr.port(), 50055);
        assert_eq!(config.reservation_ttl, Duration::from_secs(15 * 60));
        assert_eq!(config.shop_currency, Currency::EUR);
        assert!(!config.seed_catalog);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let line = parse(&["--reservation-ttl", "0s"]).unwrap_err();
        assert!(line.contains("RESERVATION_TTL"), "{line}");
        let line = parse(&["--shop-currency", "euro"]).unwrap_err();
        assert!(line.contains("SHOP_CURRENCY"), "{line}");
        let line = parse(&["--seed-catalog", "maybe"]).unwrap_err();
        assert!(line.contains("SEED_CATALOG"), "{line}");
    }

    #[test]
    fn seeding_takes_the_usual_spellings_of_true() {
        for yes in ["true", "1", "yes"] {
            assert!(
                parse(&["--seed-catalog", yes]).unwrap().seed_catalog,
                "{yes}"
            );
        }
    }
}
