//! Time, injectable.
//!
//! The circuit breaker's rules are all about time (a cool-down, a rolling
//! failure window), and tests of time-based rules that sleep are slow and
//! flaky. So the breaker reads the time through [`Clock`]:
//!
//! - [`TokioClock`] (the default) reads tokio's clock, which is the real
//!   monotonic clock in production and follows `tokio::time::pause`/`advance`
//!   in tests, so tower-level tests with paused time see a consistent world
//!   (tower's `Timeout` and `TpsBudget` read the same clock).
//! - [`ManualClock`] only moves when told to, for pure state-machine tests
//!   that run without a runtime.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A source of monotonic time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// tokio's clock: real time, or paused/advanced time under
/// `tokio::time::pause`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that stands still until [`advance`](ManualClock::advance)d.
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock stopped at the current instant.
    pub fn new() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        other.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), start + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = TokioClock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(TokioClock.now() - start, Duration::from_secs(5));
    }
}
