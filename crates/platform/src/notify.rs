//! Postgres LISTEN/NOTIFY, fanned out to a process's watchers.
//!
//! A streaming RPC (`WatchOrder`, `WatchStock`) must see changes committed
//! by any replica of its service, not only its own, so the source of truth
//! is the database: a trigger sends `pg_notify(<channel>, <payload>)` with
//! each change, which Postgres delivers when (and only if) the transaction
//! commits. Each process holds **one** listening connection however many
//! clients watch (taken from the service's pool for as long as the process
//! runs) and fans notifications out through an in-process broadcast channel;
//! each watcher filters it for what it watches.
//!
//! Notifications are hints, not a log: one sent while the connection was
//! down is lost, and a watcher that reads too slowly loses the oldest ones
//! queued for it. Both end the same way — the watcher is told to re-read
//! ([`FeedEvent::Resync`]) — which is enough when the row is the truth and a
//! watcher only reports what it finds there.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a watcher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent<T> {
    /// A change, as the notification's payload describes it.
    Changed(T),
    /// Changes may have been missed: re-read.
    Resync,
}

/// Turns a notification's payload into the feed's event value.
pub type ParsePayload<T> = fn(&str) -> Result<T, String>;

/// Fans one channel's notifications out to this process's watchers.
#[derive(Debug, Clone)]
pub struct NotifyFeed<T> {
    channel: &'static str,
    parse: ParsePayload<T>,
    sender: broadcast::Sender<FeedEvent<T>>,
}

impl<T: Clone + Send + 'static> NotifyFeed<T> {
    /// A feed of `channel`, keeping up to `capacity` events per slow watcher.
    pub fn new(channel: &'static str, capacity: usize, parse: ParsePayload<T>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            channel,
            parse,
            sender,
        }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent<T>> {
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
                    tracing::warn!(%error, channel = self.channel, retry_in_ms = delay.as_millis() as u64, "notification feed interrupted");
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
        listener.listen(self.channel).await?;
        tracing::info!(channel = self.channel, "notification feed listening");
        self.publish(FeedEvent::Resync);
        loop {
            let notification = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                notification = listener.try_recv() => notification?,
            };
            match notification {
                Some(notification) => match (self.parse)(notification.payload()) {
                    Ok(value) => self.publish(FeedEvent::Changed(value)),
                    Err(error) => {
                        tracing::error!(%error, channel = self.channel, payload = notification.payload(), "unreadable notification");
                        self.publish(FeedEvent::Resync);
                    }
                },
                // The connection dropped; the next try_recv reconnects.
                None => self.publish(FeedEvent::Resync),
            }
        }
    }

    fn publish(&self, event: FeedEvent<T>) {
        // An error only means no one is watching right now.
        let _ = self.sender.send(event);
    }
}
