//! `inventory`: the Ferrishop inventory service — catalogue, pricing and
//! oversell-proof stock reservations over gRPC. This file is wiring only; the
//! service reads top-down from [`config`] through [`domain`] and [`app`] to
//! the adapters ([`grpc`], [`store`], [`feed`], [`messaging`]).

use std::process::ExitCode;

use platform::Service;
use platform::db::Database;
use platform::grpc::GrpcServices;
use proto::ferrishop::inventory::v1::inventory_service_server::InventoryServiceServer;

mod app;
mod config;
mod domain;
mod error;
mod feed;
mod grpc;
mod messaging;
mod seed;
mod store;
mod tasks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/inventory");

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("inventory", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    let database = Database::new(
        config.database_url,
        &MIGRATOR,
        config.database_max_connections,
    )
    .with_library_schema(&eventstore::MIGRATOR);
    let brokers = ::messaging::Messaging::new(&config.messaging, "inventory")
        .unwrap_or_else(|error| platform::fail(error));

    let feed = feed::stock_feed();
    let inventory = app::Inventory::new(
        store::Store::new(database.pool().clone(), &config.events_topic),
        feed.clone(),
        config.reservation_ttl,
    );
    let api = grpc::InventoryServiceApi::new(
        inventory.clone(),
        config.shop_currency,
        service.shutdown_token(),
    );
    let grpc = GrpcServices::new()
        .add_service(InventoryServiceServer::new(api))
        .describe(proto::FILE_DESCRIPTOR_SET);

    let mut service = service
        .http(config.http_addr, axum::Router::new())
        .grpc(config.grpc_addr, grpc)
        .database(database.clone())
        .task("stock-feed", {
            let pool = database.pool().clone();
            move |cancel| feed.run(pool, cancel)
        })
        .task("reservation-sweeper", {
            let (inventory, database) = (inventory.clone(), database.clone());
            let interval = config.reservation_sweep_interval;
            move |cancel| tasks::sweep_reservations(inventory, database, interval, cancel)
        })
        .task("outbox-relay", {
            let database = database.clone();
            let broker = brokers.events().clone();
            let topic = config.events_topic.clone();
            move |cancel| messaging::relay(database, broker, topic, cancel)
        })
        .task("fault-flags", move |cancel| async move {
            if let Err(error) = brokers.watch_faults(cancel).await {
                tracing::warn!(%error, "fault flags unavailable: the faults bucket cannot be watched");
            }
        });
    if config.seed_catalog {
        let catalog =
            seed::catalog(config.shop_currency).unwrap_or_else(|error| platform::fail(error));
        service = service.task("seed-catalog", move |cancel| {
            tasks::seed_catalog(inventory, database, catalog, cancel)
        });
    }
    service.run().await
}
