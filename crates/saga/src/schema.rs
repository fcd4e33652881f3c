//! The crate's tables, shipped as its own migration set.
//!
//! Every service that runs sagas needs `saga_instances` and `saga_step_log`
//! next to the event store's `outbox` (commands leave through it). The set
//! records itself in its **own** history table, `_saga_migrations`, for the
//! reasons the event store gives in `eventstore::schema`: two `sqlx::migrate!`
//! sets sharing `_sqlx_migrations` see each other's versions as "applied but
//! missing", and copies of the SQL in every service would drift.
//!
//! Run it after [`eventstore::migrate`] (the engine writes to its outbox)
//! and before the service's own migrations:
//!
//! ```ignore
//! let database = Database::new(options, &SERVICE_MIGRATOR, 10)
//!     .with_library_schema(&eventstore::MIGRATOR)
//!     .with_library_schema(&saga::MIGRATOR);
//! ```

use std::sync::LazyLock;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Name of the table recording which of this crate's migrations ran.
pub const MIGRATIONS_TABLE: &str = "_saga_migrations";

/// The crate's migrations, recorded in [`MIGRATIONS_TABLE`].
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
});

/// Creates or upgrades the crate's tables. Idempotent and safe to call from
/// several replicas at once. The event store's tables must exist first.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
