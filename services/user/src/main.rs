//! `user`: wiring only. Ferrishop user service: accounts, login, JSON Web
//! Tokens and their keys.
//!
//! Reading order: `config` (settings) → `domain` (rules, no I/O) → `app`
//! (use cases) → adapters: `http` (REST for the gateway), `grpc` (reads for
//! the gateway and other services), `store` (Postgres), `messaging`
//! (outbox → Kafka); `error` is the one error type they share.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use platform::Service;
use platform::db::Database;
use platform::grpc::GrpcServices;
use proto::ferrishop::user::v1::user_service_server::UserServiceServer;

mod app;
mod config;
mod domain;
mod error;
mod grpc;
mod http;
mod messaging;
mod store;

use app::App;
use app::passwords::Passwords;
use app::throttle::LoginThrottle;
use app::tokens::{TokenSettings, Tokens};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/user");

/// How often idle throttle entries and long-expired refresh tokens go:
/// often, since a flood of logins for made-up addresses adds an entry each.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long expired refresh tokens are kept (for audit) before deletion.
const EXPIRED_TOKEN_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

#[tokio::main]
async fn main() -> ExitCode {
    let (config, keys) = config::Config::load();
    let service = Service::new("user", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));

    let database = Database::new(
        config.database_url.clone(),
        &MIGRATOR,
        config.database_max_connections,
    )
    .with_library_schema(&eventstore::MIGRATOR);
    let messaging = ::messaging::Messaging::new(&config.messaging, "user")
        .unwrap_or_else(|error| platform::fail(error));

    let signing_key = keys.signing.unwrap_or_else(|| {
        let key = auth::SigningKey::generate().unwrap_or_else(|error| platform::fail(error));
        tracing::warn!(
            kid = key.kid(),
            "no JWT_SIGNING_KEY or JWT_SIGNING_KEY_FILE: signing with a generated key; \
             tokens will not survive a restart or verify across replicas"
        );
        Arc::new(key)
    });
    let tokens = Tokens::new(
        signing_key,
        keys.previous,
        TokenSettings {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
        },
    );
    let passwords = Passwords::new()
        .await
        .unwrap_or_else(|error| platform::fail(error));
    let app = Arc::new(App::new(
        store::Store::new(database.pool().clone()),
        passwords,
        tokens,
        LoginThrottle::per_minute(config.login_attempts_per_minute),
        config.admin_emails.clone(),
        messaging::Announcements::new(&config.events_topic),
    ));

    let grpc = GrpcServices::new()
        .add_service(UserServiceServer::new(grpc::UserServiceApi::new(
            app.clone(),
        )))
        .describe(proto::FILE_DESCRIPTOR_SET);

    let relay_database = database.clone();
    let events = messaging.events().clone();
    let events_topic = config.events_topic.clone();
    let sweeper = app.clone();
    service
        .http(config.http_addr, http::router(app))
        .grpc(config.grpc_addr, grpc)
        .database(database)
        .task("outbox-relay", move |cancel| {
            messaging::relay(relay_database, events, events_topic, cancel)
        })
        .task("fault-flags", move |cancel| async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                watched = messaging.watch_faults(cancel.clone()) => {
                    if let Err(error) = watched {
                        tracing::warn!(%error, "fault flags unavailable: the faults bucket cannot be watched");
                    }
                }
            }
        })
        .task("sweeper", move |cancel| async move {
            sweeper
                .sweep_periodically(SWEEP_INTERVAL, EXPIRED_TOKEN_GRACE, cancel)
                .await;
        })
        .run()
        .await
}
