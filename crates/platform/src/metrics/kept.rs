//! Histogram handles kept with the labels they were registered under.
//!
//! `metrics::histogram!` looks its series up in the recorder at every
//! sample: it builds the labels as owned strings and hashes them with the
//! name, while one route or one client records into a handful of series
//! (a method, a status, a server) for the life of the process. What records
//! on every request keeps the handles it got instead. The handles kept are
//! those of the recorder installed when each series was first recorded
//! into (a process installs its recorder before it serves or calls).

use std::fmt;
use std::sync::RwLock;

use metrics::Histogram;

/// Series kept at most; any more are looked up in the recorder each time.
pub(crate) const LIMIT: usize = 32;

/// Histogram handles, each with its labels `K`.
pub(crate) struct KeptHistograms<K>(RwLock<Vec<(K, Histogram)>>);

impl<K> Default for KeptHistograms<K> {
    fn default() -> Self {
        Self(RwLock::new(Vec::new()))
    }
}

impl<K> KeptHistograms<K> {
    /// The handle kept under the labels `is` recognises, or else the one
    /// `register` gets from the recorder, kept under the labels it gives.
    pub(crate) fn get(
        &self,
        is: impl Fn(&K) -> bool,
        register: impl FnOnce() -> (K, Histogram),
    ) -> Histogram {
        let kept = self.0.read().ok().and_then(|kept| {
            kept.iter()
                .find(|(labels, _)| is(labels))
                .map(|(_, histogram)| histogram.clone())
        });
        if let Some(histogram) = kept {
            return histogram;
        }
        let (labels, histogram) = register();
        if let Ok(mut kept) = self.0.write()
            && kept.len() < LIMIT
            && !kept.iter().any(|(labels, _)| is(labels))
        {
            kept.push((labels, histogram.clone()));
        }
        histogram
    }
}

impl<K> KeptHistograms<K> {
    /// Series kept.
    pub(crate) fn len(&self) -> usize {
        self.0.read().map_or(0, |kept| kept.len())
    }
}

impl<K> fmt::Debug for KeptHistograms<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptHistograms")
            .field("kept", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn registering(count: &Arc<AtomicUsize>, labels: u32) -> impl FnOnce() -> (u32, Histogram) {
        let count = Arc::clone(count);
        move || {
            count.fetch_add(1, Ordering::Relaxed);
            (labels, Histogram::noop())
        }
    }

    #[test]
    fn each_series_is_registered_once_while_there_is_room() {
        let kept = KeptHistograms::default();
        let registered = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            for labels in 0..4 {
                kept.get(|kept| *kept == labels, registering(&registered, labels))
                    .record(1.0);
            }
        }
        assert_eq!(registered.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn series_beyond_the_limit_are_looked_up_each_time() {
        let kept = KeptHistograms::default();
        let registered = Arc::new(AtomicUsize::new(0));
        let series = u32::try_from(LIMIT).unwrap() + 2;
        for _ in 0..2 {
            for labels in 0..series {
                kept.get(|kept| *kept == labels, registering(&registered, labels))
                    .record(1.0);
            }
        }
        // The first LIMIT series once, the two beyond it at each sample.
        assert_eq!(registered.load(Ordering::Relaxed), LIMIT + 2 * 2);
    }
}
