//! The stock feed: every stock change, from every replica, as it commits.
//!
//! A trigger on the `stock` table sends `pg_notify('inventory_stock', <level
//! as JSON>)` with each change; [`platform::notify`] fans it out, and every
//! watcher filters it for its product. A missed notification is harmless: a
//! stock level is a snapshot, the latest one supersedes every one before it.
//!
//! The price: Postgres serialises the commits of notifying transactions (a
//! global lock held while they commit) — small next to the per-product row
//! lock every reservation already queues on, and it buys cross-replica
//! watching without another broker.

use chrono::{DateTime, Utc};
use platform::notify::NotifyFeed;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::product::ProductId;
use crate::domain::stock::{Stock, StockLevel};

/// The notification channel written by the `stock_changed` trigger.
const CHANNEL: &str = "inventory_stock";

/// Notifications a watcher may fall behind by before it must re-read.
const CAPACITY: usize = 1024;

/// What a watcher receives: a product's new stock level, or re-read.
pub type FeedEvent = platform::notify::FeedEvent<StockLevel>;

/// Fans stock notifications out to the watchers of this process.
pub type StockFeed = NotifyFeed<StockLevel>;

/// The stock feed of this process's database.
pub fn stock_feed() -> StockFeed {
    NotifyFeed::new(CHANNEL, CAPACITY, parse)
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
