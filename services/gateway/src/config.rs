//! `gateway` configuration: every setting is an environment variable
//! (`gateway --help` lists them with their defaults).

use std::net::SocketAddr;

use clap::Parser;
use platform::config::CommonArgs;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Ferrishop gateway: the public REST and gRPC edge."
)]
pub struct Config {
    /// Public REST, /healthz, /readyz and /metrics listen here.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Public gRPC (with health and reflection) listens here.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    #[command(flatten)]
    pub upstreams: Upstreams,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where the services are. Each may list several instances, comma-separated.
#[derive(Debug, Clone, clap::Args)]
pub struct Upstreams {
    /// User service REST.
    #[arg(long, env = "USER_URL", default_value = "http://127.0.0.1:8081")]
    pub user_url: String,
    /// Order service REST.
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8082")]
    pub order_url: String,
    /// Payment service REST.
    #[arg(long, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8083")]
    pub payment_url: String,
    /// Inventory service REST.
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8084")]
    pub inventory_url: String,
    /// User service gRPC.
    #[arg(long, env = "USER_GRPC_URL", default_value = "http://127.0.0.1:50052")]
    pub user_grpc_url: String,
    /// Order service gRPC.
    #[arg(long, env = "ORDER_GRPC_URL", default_value = "http://127.0.0.1:50053")]
    pub order_grpc_url: String,
    /// Payment service gRPC.
    #[arg(
        long,
        env = "PAYMENT_GRPC_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub payment_grpc_url: String,
    /// Inventory service gRPC.
    #[arg(
        long,
        env = "INVENTORY_GRPC_URL",
        default_value = "http://127.0.0.1:50055"
    )]
    pub inventory_grpc_url: String,
}
