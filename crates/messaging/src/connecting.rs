//! Connection attempts that outlive their callers.
//!
//! A caller waiting for a connection may give up: a readiness check has a
//! deadline, a request gets cancelled. An attempt running in the caller's
//! future would be cancelled with it, and against a broker slower to answer
//! than the callers' deadlines every attempt would start over and none
//! would finish: the service would never connect. Here an attempt runs in a
//! task of its own, and every caller that comes while it runs waits for that
//! same attempt, so a broker that is down costs one attempt at a time,
//! whatever the number of callers.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::task::AbortHandle;

use crate::error::MessagingError;

/// An attempt under way, as every caller waiting for it sees it: the
/// connection, or the reason the broker could not be reached.
pub(crate) type Attempt<T> = Shared<BoxFuture<'static, Result<T, String>>>;

/// The connection attempt of one client, if one is under way.
pub(crate) struct ConnectAttempts<T> {
    in_flight: Mutex<Option<(Attempt<T>, AbortHandle)>>,
}

impl<T> Default for ConnectAttempts<T> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(None),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> ConnectAttempts<T> {
    /// The attempt under way, or `attempt`, started now in a task of its own.
    pub(crate) fn join<F>(&self, attempt: impl FnOnce() -> F) -> Attempt<T>
    where
        F: Future<Output = Result<T, MessagingError>> + Send + 'static,
    {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((attempt, task)) = in_flight.as_ref()
            && !task.is_finished()
        {
            return attempt.clone();
        }
        let task = tokio::spawn(attempt());
        let abort = task.abort_handle();
        let attempt = task
            .map(|joined| match joined {
                Ok(Ok(connection)) => Ok(connection),
                Ok(Err(MessagingError::Unreachable { reason, .. })) => Err(reason),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(format!("the connection attempt ended: {error}")),
            })
            .boxed()
            .shared();
        *in_flight = Some((attempt.clone(), abort));
        attempt
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::error::MessagingSystem;

    /// An attempt that takes `delay`, counting how many were started.
    fn slow(
        started: &Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, MessagingError>> {
        let started = Arc::clone(started);
        move || {
            async move {
                let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                Ok(u32::try_from(number).unwrap_or(u32::MAX))
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_give_up_do_not_cancel_the_attempt() {
        let attempts = ConnectAttempts::default();
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let waited = tokio::time::timeout(
                Duration::from_millis(100),
                attempts.join(slow(&started, Duration::from_millis(350))),
            )
            .await;
            if let Ok(connected) = waited {
                assert_eq!(connected, Ok(1));
                assert_eq!(started.load(Ordering::SeqCst), 1);
                return;
            }
        }
        panic!("not connected after five callers of 100 ms each");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_attempt_and_a_finished_one_is_not_reused() {
        let attempts = ConnectAttempts::default();
        let started = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..10)
            .map(|_| attempts.join(slow(&started, Duration::from_millis(50))))
            .collect();
        for outcome in futures::future::join_all(callers).await {
            assert_eq!(outcome, Ok(1));
        }
        let next = attempts
            .join(slow(&started, Duration::from_millis(50)))
            .await;
        assert_eq!(next, Ok(2));
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_reported_by_its_reason() {
        let attempts = ConnectAttempts::<u32>::default();
        let outcome = attempts
            .join(|| async {
                Err(MessagingError::Unreachable {
                    system: MessagingSystem::Nats,
                    endpoint: "nats://127.0.0.1:1".into(),
                    reason: "connection refused".into(),
                })
            })
            .await;
        assert_eq!(outcome, Err("connection refused".to_owned()));
    }
}
