//! Use cases: what the service does, independent of how it is called.
//!
//! [`Inventory`] is the service's application layer. Its methods take domain
//! values (already parsed by an adapter), apply the domain rules under the
//! database locks they need, and return domain values or an
//! [`InventoryError`](crate::error::InventoryError). Commands, which change
//! state, are in [`commands`]; queries, which never do, in [`queries`].

use std::time::Duration;

use crate::feed::StockFeed;
use crate::store::Store;

pub mod commands;
pub mod queries;

/// The inventory application.
#[derive(Debug, Clone)]
pub struct Inventory {
    store: Store,
    feed: StockFeed,
    reservation_ttl: Duration,
}

impl Inventory {
    pub fn new(store: Store, feed: StockFeed, reservation_ttl: Duration) -> Self {
        Self {
            store,
            feed,
            reservation_ttl,
        }
    }
}
