//! `gateway` configuration: every setting is an environment variable
//! (`gateway --help` lists them with their defaults).

use std::net::SocketAddr;

use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser;
use platform::config::{CommonArgs, parse_duration, parse_positive_duration};

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
    pub auth: AuthArgs,

    #[command(flatten)]
    pub limits: RateLimits,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// NATS, for the order status notifications behind the SSE route and the
    /// fault-flag bucket behind the admin fault route.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Subject prefix of the order status notifications
    /// (`<prefix>.<order id>.status`).
    #[arg(
        long,
        env = "ORDER_STATUS_SUBJECT_PREFIX",
        default_value = "ferrishop.orders"
    )]
    pub order_status_subject_prefix: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where the services are. Each may list several instances, comma-separated.
#[derive(Debug, Clone, clap::Args)]
pub struct Upstreams {
    /// User service REST.
    #[arg(long, env = "USER_URL", default_value = "http://127.0.0.1:8081", value_parser = parse_instances)]
    pub user_url: String,
    /// Order service REST. Checked, not called: the gateway reaches the
    /// order service over gRPC (ORDER_GRPC_URL).
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8082", value_parser = parse_instances)]
    pub order_url: String,
    /// Payment service REST.
    #[arg(long, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8083", value_parser = parse_instances)]
    pub payment_url: String,
    /// Inventory service REST. Checked, not called: the gateway reaches the
    /// inventory service over gRPC (INVENTORY_GRPC_URL).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8084", value_parser = parse_instances)]
    pub inventory_url: String,
    /// User service gRPC.
    #[arg(long, env = "USER_GRPC_URL", default_value = "http://127.0.0.1:50052", value_parser = parse_instances)]
    pub user_grpc_url: String,
    /// Order service gRPC.
    #[arg(long, env = "ORDER_GRPC_URL", default_value = "http://127.0.0.1:50053", value_parser = parse_instances)]
    pub order_grpc_url: String,
    /// Payment service gRPC.
    #[arg(
        long,
        env = "PAYMENT_GRPC_URL",
        default_value = "http://127.0.0.1:50054",
        value_parser = parse_instances
    )]
    pub payment_grpc_url: String,
    /// Inventory service gRPC.
    #[arg(
        long,
        env = "INVENTORY_GRPC_URL",
        default_value = "http://127.0.0.1:50055",
        value_parser = parse_instances
    )]
    pub inventory_grpc_url: String,
    /// How often host names are resolved again: a name with several
    /// addresses (compose `--scale`, a headless Kubernetes Service) is one
    /// instance per address, balanced round-robin.
    #[arg(long, env = "UPSTREAM_DNS_REFRESH", default_value = "30s", value_parser = parse_positive_duration)]
    pub dns_refresh: Duration,
}

/// An upstream's instance list, checked as the gateway will read it (a
/// list of `http(s)://` URLs, none twice) so a typo stops the start.
fn parse_instances(urls: &str) -> Result<String, resilience::ConfigError> {
    if resilience::Endpoint::parse_list(urls)?.is_empty() {
        return Err(resilience::ConfigError::InvalidUrl {
            url: urls.to_owned(),
            reason: "no instance listed".to_owned(),
        });
    }
    Ok(urls.to_owned())
}

/// Access-token verification against the user service's keys.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Where the user service publishes its JWKS [default: the first
    /// USER_URL + /.well-known/jwks.json].
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Expected `iss` of access tokens.
    #[arg(long, env = "JWT_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    pub issuer: String,
    /// Expected `aud` of access tokens.
    #[arg(long, env = "JWT_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Least time between two JWKS fetches triggered by an unknown key id.
    #[arg(long, env = "JWKS_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_positive_duration)]
    pub refresh_interval: Duration,
    /// How often the JWKS is fetched anyway, to pick up rotations early.
    #[arg(long, env = "JWKS_RELOAD_PERIOD", default_value = "5m", value_parser = parse_positive_duration)]
    pub reload_period: Duration,
}

/// Rate limits (GCRA, via governor): a sustained rate and a burst on top.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimits {
    /// Requests per second per client IP on anonymous routes.
    #[arg(long, env = "RATE_LIMIT_ANONYMOUS_PER_SECOND", default_value = "100")]
    pub anonymous_per_second: NonZeroU32,
    /// Burst per client IP on anonymous routes.
    #[arg(long, env = "RATE_LIMIT_ANONYMOUS_BURST", default_value = "200")]
    pub anonymous_burst: NonZeroU32,
    /// Requests per second per user on authenticated routes.
    #[arg(long, env = "RATE_LIMIT_USER_PER_SECOND", default_value = "100")]
    pub user_per_second: NonZeroU32,
    /// Burst per user on authenticated routes.
    #[arg(long, env = "RATE_LIMIT_USER_BURST", default_value = "200")]
    pub user_burst: NonZeroU32,
    /// Login attempts per minute per client IP.
    #[arg(long, env = "RATE_LIMIT_LOGIN_PER_MINUTE", default_value = "10")]
    pub login_per_minute: NonZeroU32,
    /// Login burst per client IP.
    #[arg(long, env = "RATE_LIMIT_LOGIN_BURST", default_value = "5")]
    pub login_burst: NonZeroU32,
    /// Take the client IP from the last `X-Forwarded-For` entry (only behind
    /// one proxy that appends it; otherwise clients could pick their own
    /// bucket).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_forwarded_for: bool,
}

/// Edge behaviour: CORS, upstream call limits.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Origins allowed by CORS, comma-separated; `*` allows any; empty
    /// disables CORS.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Limit on one upstream attempt.
    #[arg(long, env = "UPSTREAM_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_attempt_timeout: Duration,
    /// Limit on a whole upstream call, retries included.
    #[arg(long, env = "UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Calls in flight per upstream; beyond, calls fail fast with 503.
    #[arg(long, env = "UPSTREAM_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub upstream_max_in_flight: u32,
    /// How long an upstream instance's circuit breaker stays open before it
    /// lets trial calls through (half-open).
    #[arg(long, env = "BREAKER_OPEN_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub breaker_open_duration: Duration,
}

impl AuthArgs {
    /// The JWKS URL: configured, or derived from the user service's first URL.
    pub fn jwks_url(&self, user_url: &str) -> String {
        self.jwks_url.clone().unwrap_or_else(|| {
            let first = user_url.split(',').next().unwrap_or(user_url).trim();
            format!("{}{}", first.trim_end_matches('/'), auth::JWKS_PATH)
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn every_upstream_list_is_checked_at_start() {
        for (flag, value) in [
            ("--order-url", "order:8082"),
            ("--inventory-url", " , "),
            ("--user-url", "http://user:8081,http://user:8081"),
            ("--payment-grpc-url", "ftp://payment:50054"),
            ("--inventory-grpc-url", "http://inventory:50055/v1"),
        ] {
            let refused = Config::try_parse_from(["gateway", flag, value]).map(drop);
            assert_eq!(
                refused.map_err(|error| error.kind()),
                Err(ErrorKind::ValueValidation),
                "{flag} {value:?}"
            );
        }
        let listed = "http://order-1:8082, http://order-2:8082";
        let config = Config::try_parse_from(["gateway", "--order-url", listed]);
        assert_eq!(
            config.map(|config| config.upstreams.order_url).ok(),
            Some(listed.to_owned())
        );
    }

    #[test]
    fn jwks_periods_are_never_zero() {
        for flag in ["--refresh-interval", "--reload-period"] {
            let refused = Config::try_parse_from(["gateway", flag, "0s"]).map(drop);
            assert_eq!(
                refused.map_err(|error| error.kind()),
                Err(ErrorKind::ValueValidation),
                "{flag}"
            );
        }
    }
}
