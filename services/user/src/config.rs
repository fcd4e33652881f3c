//! `user` configuration: every setting is an environment variable
//! (`user --help` lists them with their defaults).
//!
//! Keys and lists are parsed here, so a malformed PEM or admin address stops
//! the binary at start (exit 2, one line naming the variable) instead of
//! failing the first login.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth::{PublicKey, SigningKey};
use clap::Parser;
use messaging::MessagingArgs;
use platform::config::CommonArgs;
use sqlx::postgres::PgConnectOptions;

use crate::domain::AdminEmails;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "user",
    version,
    about = "Ferrishop user service: accounts, login, JSON Web Tokens and their keys."
)]
pub struct Config {
    /// REST, /healthz, /readyz and /metrics listen here.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,

    /// gRPC (with health and reflection) listens here.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,

    /// This service's own database; created at start if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/users",
        value_parser = platform::db::parse_url,
        hide_default_value = false
    )]
    pub database_url: PgConnectOptions,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Comma-separated e-mail addresses whose accounts get the `admin` role.
    #[arg(long, env = "ADMIN_EMAILS", default_value = "")]
    pub admin_emails: AdminEmails,

    /// Ed25519 private key that signs access tokens, as PKCS#8 PEM
    /// (`openssl genpkey -algorithm ed25519`). Without it or
    /// JWT_SIGNING_KEY_FILE a throwaway key is generated at start: fine for
    /// development, wrong for more than one replica or across restarts.
    #[arg(
        long,
        env = "JWT_SIGNING_KEY",
        hide_env_values = true,
        conflicts_with = "jwt_signing_key_file"
    )]
    pub jwt_signing_key: Option<Secret>,

    /// File holding the signing key (PEM), e.g. a mounted secret.
    #[arg(long, env = "JWT_SIGNING_KEY_FILE")]
    pub jwt_signing_key_file: Option<PathBuf>,

    /// The key that signed tokens before the current one, still published in
    /// the JWKS during a rotation: PEM public key, or the old private key.
    #[arg(
        long,
        env = "JWT_PREVIOUS_KEY",
        hide_env_values = true,
        conflicts_with = "jwt_previous_key_file"
    )]
    pub jwt_previous_key: Option<Secret>,

    /// File holding the previous key (PEM).
    #[arg(long, env = "JWT_PREVIOUS_KEY_FILE")]
    pub jwt_previous_key_file: Option<PathBuf>,

    /// `iss` of issued access tokens; verifiers must expect the same.
    #[arg(long, env = "JWT_ISSUER", default_value = auth::DEFAULT_ISSUER)]
    pub jwt_issuer: String,

    /// `aud` of issued access tokens; verifiers must expect the same.
    #[arg(long, env = "JWT_AUDIENCE", default_value = auth::DEFAULT_AUDIENCE)]
    pub jwt_audience: String,

    /// Lifetime of an access token (e.g. `15m`).
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = "15m", value_parser = lifetime)]
    pub access_token_ttl: Duration,

    /// Lifetime of a refresh token; every refresh starts a new one (e.g. `30d`).
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = lifetime)]
    pub refresh_token_ttl: Duration,

    /// Login attempts allowed per account per minute (the burst; then one
    /// attempt per 60/N seconds).
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE", default_value = "5")]
    pub login_attempts_per_minute: NonZeroU32,

    /// Kafka topic (or broker destination) of this service's integration
    /// events.
    #[arg(
        long,
        env = "USER_EVENTS_TOPIC",
        default_value = "ferrishop.user.events"
    )]
    pub events_topic: String,

    #[command(flatten)]
    pub messaging: MessagingArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Text that must not be echoed: its `Debug` is redacted, and it is parsed
/// after clap (whose error lines quote the offending value).
#[derive(Clone)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The token keys named by the configuration.
#[derive(Debug)]
pub struct Keys {
    /// `None` when no key is configured (a development key is generated).
    pub signing: Option<Arc<SigningKey>>,
    pub previous: Option<PublicKey>,
}

impl Config {
    /// Parses the environment and reads the keys it names; like every
    /// configuration error, a bad key exits 2 with one line naming its
    /// variable (but never quoting the key).
    pub fn load() -> (Self, Keys) {
        let config: Self = platform::config::parse();
        match config.keys() {
            Ok(keys) => (config, keys),
            Err(line) => {
                eprintln!("{line}");
                std::process::exit(platform::config::EXIT_CONFIG)
            }
        }
    }

    /// Reads the configured keys; `Err` is the line to report.
    pub fn keys(&self) -> Result<Keys, String> {
        let signing = read_key(
            "JWT_SIGNING_KEY",
            self.jwt_signing_key.as_ref(),
            self.jwt_signing_key_file.as_deref(),
            SigningKey::from_pem,
        )?;
        let previous = read_key(
            "JWT_PREVIOUS_KEY",
            self.jwt_previous_key.as_ref(),
            self.jwt_previous_key_file.as_deref(),
            PublicKey::from_pem,
        )?;
        Ok(Keys {
            signing: signing.map(Arc::new),
            previous,
        })
    }
}

/// A key from `<variable>` (PEM text) or `<variable>_FILE` (a path).
fn read_key<K>(
    variable: &str,
    pem: Option<&Secret>,
    file: Option<&Path>,
    parse: impl Fn(&str) -> Result<K, auth::KeyError>,
) -> Result<Option<K>, String> {
    let failed = |name: String, reason: String| format!("configuration error: {name}: {reason}");
    if let Some(Secret(pem)) = pem {
        return parse(pem)
            .map(Some)
            .map_err(|error| failed(variable.to_owned(), error.to_string()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let variable = format!("{variable}_FILE");
    let pem = std::fs::read_to_string(path).map_err(|error| {
        failed(
            variable.clone(),
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    parse(&pem)
        .map(Some)
        .map_err(|error| failed(variable, format!("{}: {error}", path.display())))
}

/// The longest token lifetime accepted: a year (and so an expiry time
/// every clock can represent), as for every duration setting.
const MAX_LIFETIME: Duration = platform::config::MAX_DURATION;

/// A token lifetime: the platform's durations (`500ms`, `15m`, `2h`) plus
/// days (`30d`); never zero, at most [`MAX_LIFETIME`].
fn lifetime(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().strip_suffix('d') {
        Some(days) => days
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|days| days.checked_mul(24 * 3600))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("expected a whole number of days like 30d, got {text:?}"))?,
        None => platform::config::parse_duration(text)?,
    };
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    if duration > MAX_LIFETIME {
        return Err("must be at most 366d".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use platform::config::parse_from;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_from(std::iter::once("user").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.http_addr.port(), 8081);
        assert_eq!(config.grpc_addr.port(), 50052);
        assert_eq!(config.access_token_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            config.refresh_token_ttl,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(config.login_attempts_per_minute.get(), 5);
        assert_eq!(config.events_topic, "ferrishop.user.events");
        assert!(config.keys().unwrap().signing.is_none());
        assert_eq!(config.admin_emails, AdminEmails::default());
    }

    #[test]
    fn a_bad_key_or_admin_list_names_its_variable() {
        let config = parse(&["--jwt-signing-key", "not a pem"]).unwrap();
        let line = config.keys().unwrap_err();
        assert!(line.contains("JWT_SIGNING_KEY"), "{line}");
        assert!(
            !line.contains("not a pem"),
            "secret values are not echoed: {line}"
        );
        assert!(!format!("{config:?}").contains("not a pem"));

        let config = parse(&["--jwt-previous-key-file", "/does/not/exist"]).unwrap();
        let line = config.keys().unwrap_err();
        assert!(line.contains("JWT_PREVIOUS_KEY_FILE"), "{line}");

        let line = parse(&["--admin-emails", "root@example.com,nope"]).unwrap_err();
        assert!(line.contains("ADMIN_EMAILS"), "{line}");
        let line = parse(&["--access-token-ttl", "0s"]).unwrap_err();
        assert!(line.contains("ACCESS_TOKEN_TTL"), "{line}");
    }

    #[test]
    fn keys_parse_from_pem_text_or_file() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let (signing, previous) = (
            format!("--jwt-signing-key={pem}"),
            format!("--jwt-previous-key={pem}"),
        );
        let keys = parse(&[&signing, &previous]).unwrap().keys().unwrap();
        assert_eq!(keys.signing.unwrap().kid(), key.kid());
        assert_eq!(keys.previous.unwrap().kid(), key.kid());

        let file = std::env::temp_dir().join(format!("user-config-{}.pem", uuid::Uuid::now_v7()));
        std::fs::write(&file, &pem).unwrap();
        let keys = parse(&["--jwt-signing-key-file", file.to_str().unwrap()])
            .unwrap()
            .keys()
            .unwrap();
        std::fs::remove_file(&file).ok();
        assert_eq!(keys.signing.unwrap().kid(), key.kid());
        assert!(parse(&[&signing, "--jwt-signing-key-file", "x"]).is_err());
    }

    #[test]
    fn lifetimes_take_days_and_refuse_zero_and_more_than_a_year() {
        assert_eq!(lifetime("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(lifetime("90s"), Ok(Duration::from_secs(90)));
        assert!(lifetime("0s").is_err());
        assert!(lifetime("xd").is_err());
        assert_eq!(lifetime("366d"), Ok(MAX_LIFETIME));
        for too_long in ["367d", "100000000d", "3000000000h", "213503982334601d"] {
            assert!(lifetime(too_long).is_err(), "{too_long}");
        }
    }
}
