//! `payment`: the Ferrishop payment service — event-sourced wallets, charged
//! and refunded by the order saga over RabbitMQ with exactly-once effects.
//! This file is wiring only.
//!
//! Reading order: [`config`] (settings) → [`domain`] (money, IBANs, the
//! wallet aggregate; no I/O) → [`app`] (use cases) → adapters: [`store`]
//! (Postgres: event store, idempotency records), [`projection`] (the
//! transactions read model), [`messaging`] (saga commands and replies,
//! `user.registered`, integration events through the outbox), [`http`]
//! (REST for the gateway), [`grpc`] (`PaymentService`); [`error`] is the one
//! error type they share. The message contract with the order service is the
//! `payment-contract` crate.

use std::process::ExitCode;
use std::sync::Arc;

use ::messaging::Subscription;
use eventstore::{ProjectionConfig, ProjectionRunner};
use platform::Service;
use platform::db::Database;
use platform::grpc::GrpcServices;
use proto::ferrishop::payment::v1::payment_service_server::PaymentServiceServer;

mod app;
mod config;
mod domain;
mod error;
mod grpc;
mod http;
mod messaging;
mod projection;
mod store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/payment");

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("payment", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    let database = Database::new(
        config.database_url.clone(),
        &MIGRATOR,
        config.database_max_connections,
    )
    .with_library_schema(&eventstore::MIGRATOR);
    let brokers = ::messaging::Messaging::new(&config.messaging, "payment")
        .unwrap_or_else(|error| platform::fail(error));

    let payments = app::Payments::new(
        store::Store::new(database.pool().clone()),
        app::WalletPolicy {
            currency: config.wallet_currency,
            welcome_credit: config.welcome_credit(),
        },
        messaging::outbox::Announcements::new(&config.events_topic),
    );
    let grpc = GrpcServices::new()
        .add_service(PaymentServiceServer::new(grpc::PaymentServiceApi::new(
            payments.clone(),
        )))
        .describe(proto::FILE_DESCRIPTOR_SET);

    let commands = Subscription::new(&config.commands_exchange, &config.consumer_group)
        .with_max_attempts(config.commands_max_attempts)
        .with_retry_delay(config.commands_retry_delay)
        .with_prefetch(config.commands_concurrency);
    let user_events = Subscription::new(&config.user_events_topic, &config.consumer_group);
    let transactions = Arc::new(ProjectionRunner::new(
        database.pool().clone(),
        Arc::new(projection::WalletTransactions),
        ProjectionConfig::default(),
    ));

    service
        .http(config.http_addr, http::router(payments.clone()))
        .grpc(config.grpc_addr, grpc)
        .database(database.clone())
        .check("commands-broker", {
            let broker = brokers.commands().clone();
            move || {
                let broker = broker.clone();
                async move { broker.check().await.map_err(|error| error.to_string()) }
            }
        })
        .task("payment-commands", {
            let (payments, database) = (payments.clone(), database.clone());
            let broker = brokers.commands().clone();
            let concurrency = usize::from(config.commands_concurrency);
            move |cancel| {
                messaging::commands::consume(payments, database, broker, commands, concurrency, cancel)
            }
        })
        .task("user-events", {
            let (payments, database) = (payments.clone(), database.clone());
            let broker = brokers.events().clone();
            move |cancel| messaging::user_events::consume(payments, database, broker, user_events, cancel)
        })
        .task("outbox-relay", {
            let database = database.clone();
            let broker = brokers.events().clone();
            let topic = config.events_topic.clone();
            move |cancel| messaging::outbox::relay(database, broker, topic, cancel)
        })
        .task("transactions-projection", {
            let database = database.clone();
            move |cancel| async move {
                if database.migrated_unless_cancelled(&cancel).await {
                    transactions.run(cancel).await;
                }
            }
        })
        .task("fault-flags", move |cancel| async move {
            if let Err(error) = brokers.watch_faults(cancel).await {
                tracing::warn!(%error, "fault flags unavailable: the faults bucket cannot be watched");
            }
        })
        .run()
        .await
}
