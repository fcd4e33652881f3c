//! `order`: wiring only. Ferrishop order service: event-sourced orders, the order saga and its read models.

use std::process::ExitCode;

use platform::Service;
use platform::db::Database;
use platform::grpc::GrpcServices;
use proto::ferrishop::order::v1::order_service_server::OrderServiceServer;

mod config;
// The use cases and adapters built on the domain come next.
#[allow(dead_code)]
mod domain;
mod grpc;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("order", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    let database = Database::new(
        config.database_url,
        &MIGRATOR,
        config.database_max_connections,
    );

    let grpc = GrpcServices::new()
        .add_service(OrderServiceServer::new(grpc::OrderServiceApi))
        .describe(proto::FILE_DESCRIPTOR_SET);

    let bootstrap = database.clone();
    let check = database.clone();
    service
        .http(config.http_addr, axum::Router::new())
        .grpc(config.grpc_addr, grpc)
        .check("database", move || {
            let database = check.clone();
            async move { database.check().await }
        })
        .task("database-bootstrap", move |cancel| {
            bootstrap.bootstrap(cancel)
        })
        .run()
        .await
}
