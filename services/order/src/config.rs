//! `order` configuration: every setting is an environment variable
//! (`order --help` lists them with their defaults).

use std::net::SocketAddr;

use clap::Parser;
use platform::config::CommonArgs;
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
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    #[command(flatten)]
    pub common: CommonArgs,
}
