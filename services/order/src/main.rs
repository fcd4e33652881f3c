//! `order`: the Ferrishop order service — event-sourced orders, the saga
//! orchestrator that settles each one, and the CQRS read models queries are
//! served from. This file is wiring only.
//!
//! Reading order: [`config`] (settings) → [`domain`] (money, items, the
//! `Order` aggregate; no I/O) → [`app`] (use cases) → [`saga`] (the
//! placement and cancellation sagas) → adapters: [`store`] (event store,
//! idempotency records), [`projections`] (read models), [`inventory`]
//! (the inventory's gRPC client), [`messaging`] (outbox relay, payment
//! replies, the sales feed), [`feed`] (status changes for WatchOrder),
//! [`grpc`] (`OrderService`), [`http`] (REST); [`error`] is the one error
//! type they share.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ::messaging::{Messaging, Subscription};
use eventstore::{ProjectionConfig, ProjectionRunner};
use platform::Service;
use platform::db::Database;
use platform::grpc::GrpcServices;
use proto::ferrishop::order::v1::order_service_server::OrderServiceServer;
use tokio_util::sync::CancellationToken;

mod app;
mod config;
mod domain;
mod error;
mod feed;
mod grpc;
mod http;
mod inventory;
mod messaging;
mod projections;
mod saga;
mod store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("order", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    let database = Database::new(
        config.database_url.clone(),
        &MIGRATOR,
        config.database_max_connections,
    )
    .with_library_schema(&eventstore::MIGRATOR)
    .with_library_schema(&::saga::MIGRATOR);
    let pool = database.pool().clone();
    let brokers =
        Messaging::new(&config.messaging, "order").unwrap_or_else(|error| platform::fail(error));

    let destinations = messaging::outbox::Destinations {
        commands_exchange: config.payment_commands_exchange.clone(),
        events_topic: config.events_topic.clone(),
        status_prefix: config.status_subject_prefix.clone(),
    };
    let store = store::Store::new(
        pool.clone(),
        messaging::outbox::Announcements::new(destinations.clone()),
    );
    let inventory = inventory::Inventory::new(
        &config.inventory_grpc_url,
        config.inventory_timeout,
        config.inventory_max_in_flight as usize,
    )
    .unwrap_or_else(|error| platform::fail(error));
    let sagas = saga::Sagas::build(
        &pool,
        &saga::Participants {
            inventory: inventory.clone(),
            store: store.clone(),
        },
        &saga::Settings {
            inventory_timeout: config.inventory_timeout,
            payment_timeout: config.payment_reply_timeout,
            payment_attempts: config.payment_attempts,
            commands_exchange: config.payment_commands_exchange.clone(),
            replies_exchange: config.replies_exchange.clone(),
        },
        ::saga::EngineConfig {
            name: "order".to_owned(),
            max_concurrent: config.saga_concurrency as usize,
            lease_ttl: config.lease_ttl,
            retention: config.saga_retention(),
            ..::saga::EngineConfig::default()
        },
    )
    .unwrap_or_else(|error| platform::fail(error));
    let feed = feed::status_feed();
    let read_models = projections::orders::OrderReadModels::new(pool.clone());
    let orders = app::Orders::new(
        store,
        read_models,
        inventory,
        sagas.clone(),
        feed.clone(),
        config.consistency_wait,
    );

    let grpc = GrpcServices::new()
        .add_service(OrderServiceServer::new(grpc::OrderServiceApi::new(
            orders.clone(),
            service.shutdown_token(),
        )))
        .describe(proto::FILE_DESCRIPTOR_SET);

    let projection_config = ProjectionConfig {
        idle_interval: Duration::from_millis(25),
        lease_ttl: config.lease_ttl,
        ..ProjectionConfig::default()
    };
    let runner = |rows: projections::orders::OrderRows| {
        Arc::new(ProjectionRunner::new(
            pool.clone(),
            Arc::new(rows),
            projection_config.clone(),
        ))
    };
    let order_view = runner(projections::orders::OrderRows::view());
    let order_history = runner(projections::orders::OrderRows::history());
    let replies = Subscription::new(&config.replies_exchange, &config.consumer_group);
    let sales: Vec<Subscription> = config
        .sales_topics()
        .into_iter()
        .map(|topic| Subscription::new(topic, format!("{}.product-sales", config.consumer_group)))
        .collect();
    let publisher = messaging::outbox::RoutingPublisher::new(
        destinations,
        brokers.commands().clone(),
        brokers.events().clone(),
        brokers.notifications().clone(),
    );
    let rebuild = config.rebuild_read_models;

    service
        .http(config.http_addr, http::router(orders))
        .grpc(config.grpc_addr, grpc)
        .database(database.clone())
        .check("commands-broker", {
            let broker = brokers.commands().clone();
            move || {
                let broker = broker.clone();
                async move { broker.check().await.map_err(|error| error.to_string()) }
            }
        })
        .task("place-order-sagas", {
            let (database, engine) = (database.clone(), sagas.place.clone());
            move |cancel| {
                after_migrations(database, cancel, |cancel| async move { engine.run(cancel).await })
            }
        })
        .task("cancel-order-sagas", {
            let (database, engine) = (database.clone(), sagas.cancel.clone());
            move |cancel| {
                after_migrations(database, cancel, |cancel| async move { engine.run(cancel).await })
            }
        })
        .task("order-view-projection", {
            let database = database.clone();
            move |cancel| after_migrations(database, cancel, move |cancel| async move { order_view.rebuild_then_run(rebuild, cancel).await })
        })
        .task("order-history-projection", {
            let database = database.clone();
            move |cancel| after_migrations(database, cancel, move |cancel| async move { order_history.rebuild_then_run(rebuild, cancel).await })
        })
        .task("status-feed", {
            let database = database.clone();
            move |cancel| after_migrations(database, cancel, move |cancel| feed.run(pool, cancel))
        })
        .task("payment-replies", {
            let (database, broker) = (database.clone(), brokers.commands().clone());
            move |cancel| messaging::replies::consume(sagas, database, broker, replies, cancel)
        })
        .task("product-sales", {
            let (database, broker) = (database.clone(), brokers.events().clone());
            move |cancel| async move {
                let consumers = sales.into_iter().map(|subscription| {
                    messaging::sales::consume(database.clone(), broker.clone(), subscription, cancel.clone())
                });
                futures::future::join_all(consumers).await;
            }
        })
        .task("outbox-relay", {
            let database = database.clone();
            let relays = config.outbox_relays;
            move |cancel| messaging::outbox::relay(database, publisher, relays, cancel)
        })
        .task("fault-flags", move |cancel| async move {
            if let Err(error) = brokers.watch_faults(cancel).await {
                tracing::warn!(%error, "fault flags unavailable: the faults bucket cannot be watched");
            }
        })
        .run()
        .await
}

/// Runs `work` once the database is migrated, unless shutdown comes first.
async fn after_migrations<F, Fut>(database: Database, cancel: CancellationToken, work: F)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    if database.migrated_unless_cancelled(&cancel).await {
        work(cancel).await;
    }
}
