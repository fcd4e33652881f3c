//! `gateway`: wiring only. The public REST and gRPC edge of Ferrishop.

use std::process::ExitCode;

use platform::Service;
use platform::grpc::GrpcServices;
use resilience::{RouteConfig, UpstreamConfig};

/// mimalloc instead of the system allocator: a proxied request makes some
/// 150 small allocations (hyper, axum, tracing, headers), and glibc's malloc
/// and free were a quarter of the gateway's instructions per request; with
/// mimalloc the whole request takes about 18% fewer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod auth;
mod config;
mod error;
mod grpc_proxy;
mod openapi;
mod rate_limit;
mod routes;
mod upstreams;

#[tokio::main]
async fn main() -> ExitCode {
    let config: config::Config = platform::config::parse();
    let service = Service::new("gateway", env!("CARGO_PKG_VERSION"), &config.common)
        .unwrap_or_else(|error| platform::fail(error));
    // Each circuit breaker sets its state gauge when it is built, below: the
    // recorder must exist by then for the series to be there before the
    // first transition (installing is idempotent; `run` finds this one).
    if let Err(error) = platform::metrics::install() {
        platform::fail(error);
    }

    let edge = &config.edge;
    let upstream_config = UpstreamConfig {
        max_in_flight: edge.upstream_max_in_flight as usize,
        breaker: resilience::BreakerConfig {
            open_for: edge.breaker_open_duration,
            ..resilience::BreakerConfig::default()
        },
        route: RouteConfig {
            attempt_timeout: edge.upstream_attempt_timeout,
            timeout: edge.upstream_timeout,
            ..RouteConfig::default()
        },
        ..UpstreamConfig::default()
    };
    let services = upstreams::Services::new(
        &config.upstreams,
        upstream_config,
        resilience::TokioResolver,
    )
    .unwrap_or_else(|error| platform::fail(error));
    let discovery = services.discovery.clone();
    let keys = auth::Keys::new(auth::KeysConfig {
        jwks_url: config.auth.jwks_url(&config.upstreams.user_url),
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        refresh_interval: config.auth.refresh_interval,
    })
    .unwrap_or_else(|error| platform::fail(error));
    let rate_limiter = rate_limit::RateLimiter::new(&config.limits);
    // Open streams (SSE on REST, forwarded streams on gRPC) end on this.
    let streams = tokio_util::sync::CancellationToken::new();
    let public_grpc = grpc_proxy::Edge::new(keys.clone(), rate_limiter.clone(), streams.clone());
    let grpc_channels = services.grpc.clone();
    let state = routes::AppState::new(routes::Shared {
        services,
        keys: keys.clone(),
        settings: routes::Settings {
            order_status_subject_prefix: config.order_status_subject_prefix.clone(),
        },
        rate_limiter: rate_limiter.clone(),
        nats: messaging::Nats::new(messaging::NatsConfig::new(&config.nats_url, "gateway")),
        shutdown: streams.clone(),
    });
    let nats = state.nats.clone();

    let reload = config.auth.reload_period;
    let dns_refresh = config.upstreams.dns_refresh;
    service
        .http(config.http_addr, routes::router(state, edge))
        .grpc(
            config.grpc_addr,
            GrpcServices::new()
                .add_service(public_grpc.order(grpc_channels.order))
                .add_service(public_grpc.inventory(grpc_channels.inventory))
                .add_service(public_grpc.payment(grpc_channels.payment))
                .add_service(public_grpc.user(grpc_channels.user))
                .describe(proto::FILE_DESCRIPTOR_SET),
        )
        .task("jwks", move |cancel| keys.keep_loaded(reload, cancel))
        .task("dns", move |cancel| {
            discovery.keep_current(dns_refresh, cancel)
        })
        .task("fault-flags", move |cancel| {
            routes::admin::watch_faults(nats, cancel)
        })
        .task("event-streams", move |cancel| async move {
            cancel.cancelled().await;
            streams.cancel();
        })
        .task("rate-limits", move |cancel| {
            rate_limiter.keep_trimmed(rate_limit::TRIM_PERIOD, cancel)
        })
        .run()
        .await
}
