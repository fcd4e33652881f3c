//! A fresh Postgres database per test, dropped when the test ends.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::brokers::{Dependency, locate};

/// The server tests create their databases on: `TEST_DATABASE_URL` or
/// `DATABASE_URL` when set, else the platform default (or a container, see
/// [`crate::brokers::rabbitmq`] for the order of preference).
pub async fn server_url() -> String {
    locate(
        Dependency::Postgres,
        &["TEST_DATABASE_URL", "DATABASE_URL"],
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
    .await
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of this database.
    pub url: String,
    /// Its name, `test_<uuid>`.
    pub name: String,
    /// A small pool connected to it.
    pub pool: PgPool,
    admin: PgConnectOptions,
}

/// Creates an empty database with a unique name.
pub async fn fresh_database() -> TestDatabase {
    let server = server_url().await;
    let admin: PgConnectOptions = server
        .parse::<PgConnectOptions>()
        .expect("TEST_DATABASE_URL/DATABASE_URL is not a valid Postgres URL")
        .database("postgres");
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let mut connection = PgConnection::connect_with(&admin)
        .await
        .unwrap_or_else(|error| {
            panic!("Postgres is unreachable at {server} ({error}); start it with `make infra-up`")
        });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut connection)
        .await
        .expect("CREATE DATABASE failed");
    connection.close().await.ok();
    let options = admin.clone().database(&name);
    let url = options.to_url_lossy().to_string();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("cannot connect to the new test database");
    TestDatabase {
        url,
        name,
        pool,
        admin,
    }
}

impl TestDatabase {
    /// The URL of a database on the same server that does not exist yet, for
    /// tests of a service's own database creation.
    pub fn sibling_url(&self, name: &str) -> String {
        self.admin.clone().database(name).to_url_lossy().to_string()
    }
}

/// A database name reserved for one test but not created: for tests of a
/// service that creates its own database. Dropped (if it exists) at the end.
#[derive(Debug)]
pub struct ReservedDatabase {
    /// Connection URL of the database-to-be.
    pub url: String,
    pub name: String,
    admin: PgConnectOptions,
}

/// Reserves a unique database name on the test server.
pub async fn reserved_database() -> ReservedDatabase {
    let admin: PgConnectOptions = server_url()
        .await
        .parse::<PgConnectOptions>()
        .expect("TEST_DATABASE_URL/DATABASE_URL is not a valid Postgres URL")
        .database("postgres");
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let url = admin.clone().database(&name).to_url_lossy().to_string();
    ReservedDatabase { url, name, admin }
}

impl ReservedDatabase {
    /// The same database reached through another port (e.g. a proxy).
    pub fn url_via_port(&self, port: u16) -> String {
        self.admin
            .clone()
            .port(port)
            .database(&self.name)
            .to_url_lossy()
            .to_string()
    }
}

impl Drop for ReservedDatabase {
    fn drop(&mut self) {
        drop_database(self.admin.clone(), self.name.clone());
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database(self.admin.clone(), self.name.clone());
    }
}

fn drop_database(admin: PgConnectOptions, name: String) {
    {
        // Drop cannot await; a short-lived thread with its own runtime can.
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(mut connection) = PgConnection::connect_with(&admin).await {
                        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                            .execute(&mut connection)
                            .await;
                    }
                });
            }
        });
        let _ = dropping.join();
    }
}
