//! A rolling count of calls and failures over the last `window` of time.
//!
//! The window is split into a fixed number of buckets, each labelled with the
//! absolute slot (time since the window's origin divided by the bucket width)
//! it counts for. A bucket whose label is older than the window is stale and
//! is reset the next time its index comes round. Memory is constant, a
//! record is O(1), a sum is O(buckets), and there is no timer to run: the
//! window ages as time passes, whether or not calls arrive.

use std::time::{Duration, Instant};

/// How many buckets a window is divided into. Ten gives a resolution of a
/// tenth of the window, which is what the trigger needs: it reacts to a
/// failure *ratio*, not to the exact instant a call left the window.
pub(crate) const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Window {
    origin: Instant,
    width: Duration,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    /// A window of `length` starting at `now`. `length` must be at least
    /// [`BUCKETS`] nanoseconds (configuration validation guarantees far more).
    pub(crate) fn new(now: Instant, length: Duration) -> Self {
        Self {
            origin: now,
            width: (length / BUCKETS).max(Duration::from_nanos(1)),
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn record(&mut self, now: Instant, failed: bool) {
        let slot = self.slot(now);
        let bucket = &mut self.buckets[(slot % u64::from(BUCKETS)) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        if failed {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// Calls and failures recorded within the window ending at `now`.
    pub(crate) fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.slot(now);
        self.buckets
            .iter()
            .filter(|bucket| bucket.slot <= current && current - bucket.slot < u64::from(BUCKETS))
            .fold((0_u32, 0_u32), |(calls, failures), bucket| {
                (
                    calls.saturating_add(bucket.calls),
                    failures.saturating_add(bucket.failures),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_happened_within_the_window_only() {
        let start = Instant::now();
        let mut window = Window::new(start, Duration::from_secs(10));
        window.record(start, true);
        window.record(start + Duration::from_secs(3), false);
        window.record(start + Duration::from_secs(9), true);
        assert_eq!(window.totals(start + Duration::from_secs(9)), (3, 2));

        // 10 s on, the first bucket has aged out.
        assert_eq!(window.totals(start + Duration::from_secs(10)), (2, 1));
        // The slot of the first bucket comes round again and is reset.
        window.record(start + Duration::from_secs(10), false);
        assert_eq!(window.totals(start + Duration::from_secs(10)), (3, 1));
        // Long idle: everything is stale.
        assert_eq!(window.totals(start + Duration::from_secs(60)), (0, 0));
    }
}
