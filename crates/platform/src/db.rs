//! The service's own Postgres database.
//!
//! A binary must start and answer `/healthz` even when its database is not
//! there yet (compose starts everything at once; Kubernetes restarts Postgres
//! under running pods). So the pool is created lazily — no I/O at start — and
//! a bootstrap task creates the database if it is missing and runs the
//! service's migrations, retrying with exponential backoff until it succeeds.
//! Readiness stays false until then, and code that needs a migrated schema
//! (consumers, relays, sagas) waits on [`Database::migrated`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why the database could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the URL names no database")]
    NoDatabaseName,
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Parses a `DATABASE_URL` that must name a database; a clap `value_parser`,
/// so a bad URL stops the binary at start like any other bad setting.
pub fn parse_url(url: &str) -> Result<PgConnectOptions, String> {
    let options = PgConnectOptions::from_str(url).map_err(|error| error.to_string())?;
    if options.get_database().is_none() {
        return Err(DbError::NoDatabaseName.to_string());
    }
    Ok(options)
}

/// A lazily connected pool plus the state of its bootstrap.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    max_connections: u32,
    options: PgConnectOptions,
    migrators: Vec<&'static Migrator>,
    state: Arc<watch::Sender<BootstrapState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BootstrapState {
    Pending(String),
    Migrated,
}

impl Database {
    /// Creates the pool without connecting.
    pub fn new(
        options: PgConnectOptions,
        migrator: &'static Migrator,
        max_connections: u32,
    ) -> Self {
        let options = options.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options.clone());
        let (state, _) = watch::channel(BootstrapState::Pending("not connected yet".into()));
        Self {
            pool,
            max_connections,
            options,
            migrators: vec![migrator],
            state: Arc::new(state),
        }
    }

    /// Runs a library's own migration set (e.g. the event store's tables,
    /// kept in its own history table) before the service's migrations.
    pub fn with_library_schema(mut self, migrator: &'static Migrator) -> Self {
        let service_migrator_index = self.migrators.len() - 1;
        self.migrators.insert(service_migrator_index, migrator);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Resolves once the database exists and its migrations are applied.
    pub async fn migrated(&self) {
        let mut state = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = state
            .wait_for(|state| *state == BootstrapState::Migrated)
            .await;
    }

    /// Waits for the migrations; `false` when `cancel` fired first (the
    /// service is stopping, and work waiting for the schema should not start).
    pub async fn migrated_unless_cancelled(&self, cancel: &CancellationToken) -> bool {
        cancel.run_until_cancelled(self.migrated()).await.is_some()
    }

    /// Whether the database exists and its migrations are applied.
    pub fn is_migrated(&self) -> bool {
        *self.state.borrow() == BootstrapState::Migrated
    }

    /// Readiness: migrated and answering a round trip.
    pub async fn check(&self) -> Result<(), String> {
        if let BootstrapState::Pending(reason) = &*self.state.borrow() {
            return Err(reason.clone());
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    /// Creates the database if needed and migrates it, retrying with
    /// exponential backoff (250 ms doubling to 5 s) until it succeeds or
    /// `cancel` fires. From then on the pool's size is recorded
    /// ([`crate::metrics::watch_pool`]) until `cancel` fires.
    pub async fn bootstrap(self, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.try_bootstrap().await {
                Ok(()) => {
                    self.state.send_replace(BootstrapState::Migrated);
                    tracing::info!(database = self.name(), "database ready, migrations applied");
                    tokio::spawn(crate::metrics::watch_pool(
                        self.name().to_owned(),
                        self.pool.clone(),
                        self.max_connections,
                        cancel,
                    ));
                    return;
                }
                Err(error) => {
                    tracing::warn!(database = self.name(), %error, retry_in_ms = delay.as_millis() as u64, "database not ready");
                    self.state
                        .send_replace(BootstrapState::Pending(error.to_string()));
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn name(&self) -> &str {
        self.options.get_database().unwrap_or_default()
    }

    async fn try_bootstrap(&self) -> Result<(), DbError> {
        ensure_database_exists(&self.options).await?;
        for migrator in &self.migrators {
            migrator.run(&self.pool).await?;
        }
        Ok(())
    }
}

/// Whether a statement that failed with `error` may succeed if tried again:
/// the database is unavailable ([`is_unavailable`]), or Postgres reported a
/// serialization failure, deadlock or lock timeout. Anything else (a
/// constraint a use case did not anticipate, a type mismatch) is a bug, and
/// retrying will not help.
pub fn is_transient(error: &sqlx::Error) -> bool {
    is_unavailable(error)
        || matches!(error, sqlx::Error::Database(database) if database
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01" | "55P03")))
}

/// The current time at the microsecond precision Postgres keeps, so a time
/// answered now and the same time read back later are equal.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
}

/// Whether `error` says the database could not be reached or is going away
/// (the pool or connection failed, Postgres is shutting down or starting, a
/// connection exception): nothing about the statement or its data, so it is
/// worth waiting for rather than counting against the work that ran into it.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            matches!(code.as_ref(), "57P01" | "57P02" | "57P03") || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Creates the database named by `options` through the server's `postgres`
/// database when it does not exist. Concurrent creators are fine: losing the
/// race (`duplicate_database`) counts as success.
pub async fn ensure_database_exists(options: &PgConnectOptions) -> Result<(), DbError> {
    let name = options
        .get_database()
        .ok_or(DbError::NoDatabaseName)?
        .to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(error.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity_failures_are_transient_and_bugs_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("id".into())));
    }

    /// What Postgres itself reports, by SQLSTATE: a conflict is worth another
    /// try, a server going away is worth waiting for, a bug is neither.
    #[tokio::test]
    async fn postgres_errors_are_told_apart_by_their_code() {
        let server = testkit::postgres::server_url().await;
        let Ok(mut connection) = PgConnection::connect(&server).await else {
            panic!("no Postgres at {server}");
        };
        let mut raised = async |code: &str| {
            let statement =
                format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$");
            // The codes are the fixed list below.
            let statement = sqlx::AssertSqlSafe(statement);
            match sqlx::raw_sql(statement).execute(&mut connection).await {
                Err(error) => error,
                Ok(_) => panic!("{code} was not raised"),
            }
        };
        for (code, transient, unavailable) in [
            ("40001", true, false),
            ("40P01", true, false),
            ("57P01", true, true),
            ("08006", true, true),
            ("23505", false, false),
            ("42703", false, false),
        ] {
            let error = raised(code).await;
            assert_eq!(is_transient(&error), transient, "{code}: {error}");
            assert_eq!(is_unavailable(&error), unavailable, "{code}: {error}");
        }
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
