//! Latency histograms per operation and the final report.
//!
//! Latencies go into HdrHistograms (microseconds, 3 significant digits), one
//! per operation and per shopper, merged at the end: percentiles stay exact
//! to 0.1 % whatever the number of calls, and recording costs no lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::config::ReportFormat;

/// Largest latency a histogram tracks (longer ones are clamped): 5 minutes.
const MAX_MICROS: u64 = 300_000_000;

/// One operation's calls.
#[derive(Debug, Clone)]
pub struct Operation {
    latency: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    rate_limited: u64,
}

impl Default for Operation {
    #[expect(
        clippy::expect_used,
        reason = "constant bounds that hdrhistogram accepts"
    )]
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("1 µs to 5 min at 3 significant digits is a valid range"),
            failures: BTreeMap::new(),
            rate_limited: 0,
        }
    }
}

impl Operation {
    fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    fn merge(&mut self, other: Operation) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (code, count) in other.failures {
            *self.failures.entry(code).or_default() += count;
        }
        self.rate_limited += other.rate_limited;
    }

    fn calls(&self) -> u64 {
        self.latency.len()
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn millis(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// What one shopper measured.
#[derive(Debug, Default)]
pub struct Recorder {
    operations: BTreeMap<&'static str, Operation>,
    /// Final statuses of orders (`CONFIRMED`, `REJECTED`, `CANCELLED`,
    /// `STUCK` when none came in time).
    outcomes: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn succeeded(&mut self, operation: &'static str, elapsed: Duration) {
        self.operations
            .entry(operation)
            .or_default()
            .record(elapsed);
    }

    pub fn failed(&mut self, operation: &'static str, code: &str, elapsed: Duration) {
        let stats = self.operations.entry(operation).or_default();
        stats.record(elapsed);
        *stats.failures.entry(code.to_owned()).or_default() += 1;
    }

    pub fn rate_limited(&mut self, operation: &'static str) {
        self.operations.entry(operation).or_default().rate_limited += 1;
    }

    pub fn outcome(&mut self, status: &str) {
        *self.outcomes.entry(status.to_owned()).or_default() += 1;
    }
}

/// Every shopper's measurements, merged.
#[derive(Debug, Default)]
pub struct Report {
    recorded: Recorder,
    /// How long the ordering phase ran (rates are over this).
    pub elapsed: Duration,
}

impl Report {
    pub fn merge(&mut self, recorder: Recorder) {
        for (name, operation) in recorder.operations {
            self.recorded
                .operations
                .entry(name)
                .or_default()
                .merge(operation);
        }
        for (status, count) in recorder.outcomes {
            *self.recorded.outcomes.entry(status).or_default() += count;
        }
    }

    /// Orders that reached a final status.
    pub fn completed_orders(&self) -> u64 {
        self.recorded
            .outcomes
            .iter()
            .filter(|(status, _)| status.as_str() != "STUCK")
            .map(|(_, count)| count)
            .sum()
    }

    pub fn to_json(&self) -> Value {
        let seconds = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let operations: serde_json::Map<String, Value> = self
            .recorded
            .operations
            .iter()
            .map(|(name, op)| {
                let summary = json!({
                    "calls": op.calls(),
                    "failed": op.failed(),
                    "failures": op.failures,
                    "rate_limited": op.rate_limited,
                    "per_second": op.calls() as f64 / seconds,
                    "p50_ms": op.millis(0.50),
                    "p90_ms": op.millis(0.90),
                    "p99_ms": op.millis(0.99),
                    "max_ms": op.latency.max() as f64 / 1000.0,
                });
                ((*name).to_owned(), summary)
            })
            .collect();
        json!({
            "elapsed_seconds": seconds,
            "operations": operations,
            "orders": self.recorded.outcomes,
            "orders_per_second": self.completed_orders() as f64 / seconds,
        })
    }

    pub fn print(&self, format: ReportFormat) {
        match format {
            ReportFormat::Json => println!("{}", self.to_json()),
            ReportFormat::Text => println!("{}", self.to_text()),
        }
    }

    fn to_text(&self) -> String {
        let seconds = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let mut out = format!(
            "{:<16} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}  failures\n",
            "operation", "calls", "429s", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (name, op) in &self.recorded.operations {
            let failures: Vec<String> = op
                .failures
                .iter()
                .map(|(code, count)| format!("{code}={count}"))
                .collect();
            out.push_str(&format!(
                "{:<16} {:>8} {:>7} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}\n",
                name,
                op.calls(),
                op.rate_limited,
                op.calls() as f64 / seconds,
                op.millis(0.50),
                op.millis(0.90),
                op.millis(0.99),
                op.latency.max() as f64 / 1000.0,
                failures.join(" "),
            ));
        }
        let outcomes: Vec<String> = self
            .recorded
            .outcomes
            .iter()
            .map(|(status, count)| format!("{status}={count}"))
            .collect();
        out.push_str(&format!(
            "\norders: {} in {:.1} s ({:.1}/s)  {}\n",
            self.completed_orders(),
            seconds,
            self.completed_orders() as f64 / seconds,
            outcomes.join(" ")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_cover_every_shopper() {
        let mut fast = Recorder::default();
        let mut slow = Recorder::default();
        for _ in 0..99 {
            fast.succeeded("orders.get", Duration::from_millis(2));
        }
        slow.succeeded("orders.get", Duration::from_millis(500));
        slow.failed(
            "orders.get",
            "UPSTREAM_UNAVAILABLE",
            Duration::from_millis(1),
        );
        fast.outcome("CONFIRMED");
        slow.outcome("STUCK");
        let mut report = Report {
            elapsed: Duration::from_secs(10),
            ..Report::default()
        };
        report.merge(fast);
        report.merge(slow);
        let json = report.to_json();
        let get = &json["operations"]["orders.get"];
        assert_eq!(get["calls"], 101);
        assert_eq!(get["failed"], 1);
        assert!(
            (get["p50_ms"].as_f64().unwrap() - 2.0).abs() < 0.01,
            "{get}"
        );
        assert!(get["max_ms"].as_f64().unwrap() >= 499.0, "{get}");
        assert_eq!(
            report.completed_orders(),
            1,
            "a stuck order is not completed"
        );
        assert!((json["orders_per_second"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    }
}
