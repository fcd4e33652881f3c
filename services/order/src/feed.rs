//! The status feed: every order status change, from every replica, as its
//! read model commits it — what `WatchOrder` streams are made of.
//!
//! The `order_view` table's trigger sends `pg_notify('order_status',
//! <order id>)` whenever a row's status (or pending cancellation) changes;
//! [`platform::notify`] fans it out. A watcher filters the feed for its order
//! and re-reads the row, which is the truth.

use platform::notify::NotifyFeed;

use crate::domain::ids::OrderId;

/// The channel the `order_view_status_changed` trigger notifies.
const CHANNEL: &str = "order_status";

/// Notifications a watcher may fall behind by before it must re-read.
const CAPACITY: usize = 4096;

/// What a watcher receives: this order's row changed, or re-read.
pub type FeedEvent = platform::notify::FeedEvent<OrderId>;

/// Fans status notifications out to this process's watchers.
pub type StatusFeed = NotifyFeed<OrderId>;

/// The status feed of this process's database.
pub fn status_feed() -> StatusFeed {
    NotifyFeed::new(CHANNEL, CAPACITY, |payload| {
        OrderId::parse(payload).map_err(|error| error.to_string())
    })
}
