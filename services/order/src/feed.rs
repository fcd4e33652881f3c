//! The status feed: every order status change, from every replica, as its
//! read model commits it — what `WatchOrder` streams are made of.
//!
//! The `order_view` table's trigger sends `pg_notify('order_status',
//! <order id>)` whenever a row's status (or pending cancellation) changes,
//! which Postgres delivers when — and only if — the projection's transaction
//! commits. Each process holds **one** listening connection however many
//! clients watch, and fans notifications out through an in-process broadcast
//! channel; each watcher filters it for its order and re-reads the row.
//!
//! Notifications are hints, not a log: one sent while the connection was
//! down is lost, and a watcher that reads too slowly loses the oldest ones
//! queued for it. Both end the same way — the watcher is told to re-read
//! ([`FeedEvent::Resync`]) — which is enough because the row is the truth
//! and a watcher only reports the status it finds there.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::OrderId;

/// The channel the `order_view_status_changed` trigger notifies.
const CHANNEL: &str = "order_status";

/// Notifications a watcher may fall behind by before it must re-read.
const CAPACITY: usize = 4096;

/// What a watcher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// This order's row changed.
    Changed(OrderId),
    /// Changes may have been missed: re-read.
    Resync,
}

/// Fans status notifications out to this process's watchers.
#[derive(Debug, Clone)]
pub struct StatusFeed {
    sender: broadcast::Sender<FeedEvent>,
}

impl Default for StatusFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }

    /// Listens until `cancel` fires, reconnecting with backoff (250 ms
    /// doubling to 5 s) whenever the connection fails; after every
    /// (re)connection watchers are told to resync.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(250);
        while !cancel.is_cancelled() {
            match self.listen(&pool, &cancel).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "status feed interrupted");
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
        tracing::info!(channel = CHANNEL, "status feed listening");
        self.publish(FeedEvent::Resync);
        loop {
            let notification = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                notification = listener.try_recv() => notification?,
            };
            match notification {
                Some(notification) => match OrderId::parse(notification.payload()) {
                    Ok(id) => self.publish(FeedEvent::Changed(id)),
                    Err(error) => {
                        tracing::error!(%error, "unreadable status notification");
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
