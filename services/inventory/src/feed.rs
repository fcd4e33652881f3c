//! The stock feed: every stock change, from every replica, as it commits.
//!
//! `WatchStock` must see changes made by any replica of the service, not only
//! its own, so the source of truth is the database: a trigger on the `stock`
//! table sends a `pg_notify('inventory_stock', <level as JSON>)` with each
//! change, which Postgres delivers when (and only if) the transaction commits.
//! Each process holds **one** listening connection, however many clients are
//! watching — taken from the service's pool for as long as the process runs,
//! so one of `DATABASE_MAX_CONNECTIONS` serves the feed — and fans
//! notifications out through an in-process broadcast channel; every watcher
//! filters it for its product.
//!
//! The price: Postgres serialises the commits of notifying transactions (a
//! global lock held while they commit) — small next to the per-product row
//! lock every reservation already queues on, and it buys cross-replica
//! watching without another broker.
//!
//! Notifications are a hint, not a log: one sent while the listening
//! connection was down is lost, and a watcher that reads too slowly loses the
//! oldest ones queued for it. Both cases end the same way — the watcher is
//! told to re-read the current level ([`FeedEvent::Resync`]) — which is
//! enough because a stock level is a snapshot: the latest one supersedes
//! every one before it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::product::ProductId;
use crate::domain::stock::{Stock, StockLevel};

/// The notification channel written by the `stock_changed` trigger.
const CHANNEL: &str = "inventory_stock";

/// Notifications a watcher may fall behind by before it must re-read.
const CAPACITY: usize = 1024;

/// What a watcher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// A product's stock changed to this level.
    Changed(StockLevel),
    /// Changes may have been missed: re-read the current level.
    Resync,
}

/// Fans stock notifications out to the watchers of this process.
#[derive(Debug, Clone)]
pub struct StockFeed {
    sender: broadcast::Sender<FeedEvent>,
}

impl Default for StockFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl StockFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }

    /// Listens until `cancel` fires, reconnecting with backoff (250 ms
    /// doubling to 5 s) whenever the connection fails. After every
    /// (re)connection watchers are told to resync, since anything sent while
    /// no one listened is gone.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(250);
        while !cancel.is_cancelled() {
            match self.listen(&pool, &cancel).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "stock feed interrupted");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen(&self, pool: &PgPool, cancel: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        tracing::info!(channel = CHANNEL, "stock feed listening");
        self.publish(FeedEvent::Resync);
        loop {
            let notification = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                notification = listener.try_recv() => notification?,
            };
            match notification {
                Some(notification) => match parse(notification.payload()) {
                    Ok(level) => self.publish(FeedEvent::Changed(level)),
                    Err(error) => {
                        tracing::error!(%error, payload = notification.payload(), "unreadable stock notification");
                        self.publish(FeedEvent::Resync);
                    }
                },
                // The connection dropped; the next try_recv reconnects.
                None => self.publish(FeedEvent::Resync),
            }
        }
    }

    fn publish(&self, event: FeedEvent) {
        // An error only means no one is watching right now.
        let _ = self.sender.send(event);
    }
}

/// The trigger's payload.
#[derive(Debug, Deserialize)]
struct Payload {
    product_id: Uuid,
    on_hand: i64,
    reserved: i64,
    version: i64,
    updated_at: DateTime<Utc>,
}

fn parse(payload: &str) -> Result<StockLevel, String> {
    let payload: Payload = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    Ok(StockLevel {
        product_id: ProductId::from_uuid(payload.product_id),
        stock: Stock::new(payload.on_hand, payload.reserved).map_err(|e| e.to_string())?,
        version: payload.version,
        updated_at: payload.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_trigger_payload() {
        // As json_build_object renders a row in a session with a +02 offset.
        let level = parse(
            r#"{"product_id" : "0192f0c1-8c7e-7c3a-9a52-3c1e2a9b8f10", "on_hand" : 10, "reserved" : 3, "version" : 4, "updated_at" : "2026-05-01T12:00:00.123456+02:00"}"#,
        )
        .unwrap();
        assert_eq!(level.stock.available(), 7);
        assert_eq!(level.version, 4);
        assert_eq!(
            level.updated_at.to_rfc3339(),
            "2026-05-01T10:00:00.123456+00:00"
        );
    }

    #[test]
    fn refuses_inconsistent_levels() {
        let payload = r#"{"product_id":"0192f0c1-8c7e-7c3a-9a52-3c1e2a9b8f10","on_hand":1,"reserved":3,"version":1,"updated_at":"2026-05-01T12:00:00Z"}"#;
        assert!(parse(payload).is_err());
    }
}
