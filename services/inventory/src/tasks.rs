//! Background work, run by the platform's `Service` next to the servers and
//! stopped at shutdown: the reservation sweeper and catalogue seeding. Each
//! waits until the database is migrated before it starts.

use std::time::Duration;

use platform::db::Database;
use tokio_util::sync::CancellationToken;

use crate::app::Inventory;
use crate::domain::product::NewProduct;

/// Reservations expired per sweep round; a backlog takes several rounds
/// back to back.
const SWEEP_BATCH: u32 = 100;

/// Expires overdue reservations every `interval` until `cancel` fires.
pub async fn sweep_reservations(
    inventory: Inventory,
    database: Database,
    interval: Duration,
    cancel: CancellationToken,
) {
    if !database.migrated_unless_cancelled(&cancel).await {
        return;
    }
    loop {
        match inventory.expire_overdue(SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(expired) => {
                tracing::info!(expired, "expired overdue reservations");
                // A full batch: there may be more waiting.
                if expired == SWEEP_BATCH as usize && !cancel.is_cancelled() {
                    continue;
                }
            }
            Err(error) => tracing::warn!(%error, "reservation sweep failed"),
        }
        if !sleep(interval, &cancel).await {
            return;
        }
    }
}

/// Adds the demo catalogue, retrying with backoff until it succeeds once.
pub async fn seed_catalog(
    inventory: Inventory,
    database: Database,
    catalog: Vec<NewProduct>,
    cancel: CancellationToken,
) {
    if !database.migrated_unless_cancelled(&cancel).await {
        return;
    }
    let mut delay = Duration::from_millis(250);
    loop {
        match inventory.seed(catalog.clone()).await {
            Ok(added) => {
                tracing::info!(added, total = catalog.len(), "demo catalogue seeded");
                return;
            }
            Err(error) => tracing::warn!(%error, "seeding the catalogue failed"),
        }
        if !sleep(delay, &cancel).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Sleeps; `false` if shutdown came first.
async fn sleep(duration: Duration, cancel: &CancellationToken) -> bool {
    cancel
        .run_until_cancelled(tokio::time::sleep(duration))
        .await
        .is_some()
}
