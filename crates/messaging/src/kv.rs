//! NATS KV buckets, and the watcher that drives fault points from one.
//!
//! Fault injection has to be switchable at run time on every instance of every
//! service at once, without restarts: the admin route writes
//! `payment.charge = error(0.5)` into the `ferrishop-faults` bucket and each
//! process's [`watch_faults`] arms its local fault point within milliseconds.
//! A KV bucket fits because a watcher first receives the current value of
//! every key (a process started later sees faults armed earlier) and then
//! every change, and because a delete is itself an entry, so disarming
//! reaches processes that were disconnected at the time once they reconnect
//! and re-read the latest state.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use platform::faults::{self, FaultAction};
use tokio_util::sync::CancellationToken;

use crate::error::{MessagingError, MessagingSystem, Result};
use crate::nats::Nats;

const SYSTEM: MessagingSystem = MessagingSystem::Nats;

/// The bucket every service watches for fault flags.
pub const FAULTS_BUCKET: &str = "ferrishop-faults";

/// A NATS KV bucket.
#[derive(Clone)]
pub struct KeyValue {
    store: kv::Store,
    bucket: String,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl Nats {
    /// Opens `bucket`, creating it (history 5) if it does not exist.
    ///
    /// The bucket's stream is created directly, with the settings async-nats'
    /// `create_key_value` would use, because that call first reads the
    /// account info, whose shape async-nats 0.51 cannot parse from NATS 2.9
    /// servers (Debian's), failing the whole creation.
    pub async fn key_value(&self, bucket: &str) -> Result<KeyValue> {
        let js = self.jetstream().await?;
        let open = |error: &dyn std::fmt::Display| {
            MessagingError::broker(SYSTEM, bucket, "open KV bucket", error)
        };
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                js.get_or_create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 5,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: 1,
                    ..stream::Config::default()
                })
                .await
                .map_err(|e| open(&e))?;
                js.get_key_value(bucket).await.map_err(|e| open(&e))?
            }
        };
        Ok(KeyValue {
            store,
            bucket: bucket.to_owned(),
        })
    }
}

impl KeyValue {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The async-nats store, for anything not wrapped here.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Sets `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64> {
        self.store
            .put(key, value.into())
            .await
            .map_err(|e| self.failed(key, "put", e))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.failed(key, "get", e))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.store
            .delete(key)
            .await
            .map_err(|e| self.failed(key, "delete", e))
    }

    fn failed(
        &self,
        key: &str,
        operation: &'static str,
        error: impl std::fmt::Display,
    ) -> MessagingError {
        MessagingError::broker(SYSTEM, &format!("{}/{key}", self.bucket), operation, error)
    }
}

/// Arms and disarms `platform::faults` points from `bucket` until `cancel`
/// fires: key = point name, value = action text (`error(0.5)`, `delay(200)`,
/// `abort`); a deleted or purged key disarms its point. A value that does not
/// parse disarms the point and is logged. Re-watches with backoff when the
/// watch breaks, re-reading the current state each time.
pub async fn watch_faults(bucket: &KeyValue, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        match bucket.store.watch_with_history(">").await {
            Ok(mut entries) => loop {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    next = entries.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        delay = Duration::from_millis(250);
                        apply_fault_entry(&entry.key, entry.operation, &entry.value);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, bucket = bucket.bucket(), "fault flag watch failed");
                        break;
                    }
                    None => break,
                }
            },
            Err(error) => {
                tracing::warn!(%error, bucket = bucket.bucket(), "cannot watch fault flags");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(4));
    }
}

fn apply_fault_entry(point: &str, operation: Operation, value: &[u8]) {
    match operation {
        Operation::Put => {
            let text = String::from_utf8_lossy(value);
            match text.parse::<FaultAction>() {
                Ok(action) => {
                    tracing::warn!(fault.point = point, fault.action = %action, "fault point armed");
                    faults::set(point, Some(action));
                }
                Err(error) => {
                    tracing::error!(fault.point = point, value = %text, %error, "invalid fault action; point disarmed");
                    faults::set(point, None);
                }
            }
        }
        Operation::Delete | Operation::Purge => {
            tracing::info!(fault.point = point, "fault point disarmed");
            faults::set(point, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_arm_and_disarm_points() {
        let point = "messaging.tests.kv_entry";
        apply_fault_entry(point, Operation::Put, b"error(1)");
        assert!(faults::inject(point).await.is_err());
        apply_fault_entry(point, Operation::Delete, b"");
        assert!(faults::inject(point).await.is_ok());
        apply_fault_entry(point, Operation::Put, b"error(1)");
        apply_fault_entry(point, Operation::Put, b"explode");
        assert!(faults::inject(point).await.is_ok());
    }
}
