//! How often, and how far apart, a step is attempted.
//!
//! A transient failure (a participant that is down, a call that timed out,
//! a command whose reply never came) is worth trying again, but not at
//! once and not forever: exponential backoff gives a struggling participant
//! room to recover, and jitter keeps many sagas that failed together from
//! retrying in lockstep. The defaults are the platform's: 3 attempts,
//! 100 ms initial delay, ×2, at most 5 s, ±15 % jitter.
//!
//! Compensations get a larger budget ([`RetryPolicy::compensation`]):
//! giving up on one leaves the system inconsistent until an operator steps
//! in, so it is worth riding out a longer outage first.

use std::time::Duration;

/// Attempts and backoff of one step (or of its compensation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay after the first failed attempt.
    pub initial_delay: Duration,
    /// Factor applied to the delay after each further failure.
    pub multiplier: f64,
    /// Upper bound of any delay, jitter included.
    pub max_delay: Duration,
    /// Each delay is multiplied by a uniform factor in `1 ± jitter`
    /// (0.0..1.0); 0 disables jitter.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms, ×2, at most 5 s, ±15 %.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(5),
            jitter: 0.15,
        }
    }
}

impl RetryPolicy {
    /// The default budget of a compensation: 10 attempts, 200 ms, ×2, at
    /// most 30 s (about 80 s of backoff in total).
    pub fn compensation() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Duration::from_millis(200),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.15,
        }
    }

    /// One attempt, no retry.
    pub fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Whether another attempt may follow attempt number `attempt` (1-based).
    pub fn allows_another_attempt_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The pause after failed attempt number `attempt` (1-based), before
    /// jitter: `initial_delay × multiplier^(attempt-1)`, capped.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exponent);
        let seconds = self.initial_delay.as_secs_f64() * factor;
        if !seconds.is_finite() || seconds >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// The pause after failed attempt number `attempt`, jitter applied and
    /// capped at `max_delay`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 0.99);
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(rand::random_range(1.0 - jitter..=1.0 + jitter))
            .min(self.max_delay)
    }

    /// Why this policy cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.max_attempts == 0 {
            Some("max_attempts must be at least 1")
        } else if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            Some("multiplier must be a finite number ≥ 1")
        } else if !(0.0..1.0).contains(&self.jitter) {
            Some("jitter must be in 0..1")
        } else if self.initial_delay > self.max_delay {
            Some("initial_delay must not exceed max_delay")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_platform_defaults() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 3);
        assert_eq!(policy.initial_delay, Duration::from_millis(100));
        assert_eq!(policy.multiplier, 2.0);
        assert_eq!(policy.max_delay, Duration::from_secs(5));
        assert!(policy.problem().is_none());
        assert!(RetryPolicy::compensation().problem().is_none());
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..=8).map(|attempt| policy.base_delay(attempt)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(policy.base_delay(u32::MAX), policy.max_delay);
    }

    #[test]
    fn jitter_stays_within_its_band_and_the_cap() {
        let policy = RetryPolicy::default();
        for _ in 0..1000 {
            let delay = policy.delay_after(2);
            assert!(delay >= Duration::from_millis(170) && delay <= Duration::from_millis(230));
            assert!(policy.delay_after(10) <= policy.max_delay);
        }
    }

    #[test]
    fn attempts_are_counted_from_one() {
        let policy = RetryPolicy::default();
        assert!(policy.allows_another_attempt_after(1));
        assert!(policy.allows_another_attempt_after(2));
        assert!(!policy.allows_another_attempt_after(3));
        assert!(!RetryPolicy::once().allows_another_attempt_after(1));
    }

    #[test]
    fn unusable_policies_are_named() {
        assert!(
            RetryPolicy::default()
                .with_max_attempts(0)
                .problem()
                .is_some()
        );
        assert!(
            RetryPolicy::default()
                .with_multiplier(0.5)
                .problem()
                .is_some()
        );
        assert!(RetryPolicy::default().with_jitter(1.5).problem().is_some());
    }
}
