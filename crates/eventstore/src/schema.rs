//! The crate's tables, shipped as its own migration set.
//!
//! Every service database that uses this crate needs `es_events`,
//! `es_snapshots`, `outbox`, `inbox` and `projection_checkpoints`. Copying the
//! SQL into each service's `migrations/<svc>/` folder would let the copies
//! drift; running two `sqlx::migrate!` sets against one `_sqlx_migrations`
//! table breaks instead, because each set sees the other's versions as
//! "applied but missing" (and version numbers collide).
//!
//! So this set records itself in its **own** history table,
//! `_eventstore_migrations`. The two histories never meet: the service's
//! migrator needs no `ignore_missing`, version numbers are free on both sides,
//! and a checksum mismatch in one set cannot block the other. Both runs take
//! sqlx's per-database advisory lock, so replicas starting together apply
//! each migration once. A service runs [`migrate`] before its own migrator
//! (its own tables may reference ours, never the other way round).

use std::sync::LazyLock;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Name of the table recording which of this crate's migrations ran.
pub const MIGRATIONS_TABLE: &str = "_eventstore_migrations";

/// The crate's migrations, recorded in [`MIGRATIONS_TABLE`].
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
});

/// Creates or upgrades the crate's tables. Idempotent and safe to call from
/// several replicas at once.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
