//! Retries: only when safe, only when useful, never more than a budget.
//!
//! A retry turns a transient failure (a connection reset, an instance
//! restarting behind a 503) into a success the caller never notices. The
//! same retry, applied to an upstream that is down or overloaded, multiplies
//! its load by the number of attempts and keeps it down. [`RetryPolicy`] is
//! a tower [`Policy`] that allows a retry only when all of these hold:
//!
//! 1. the request may be sent twice ([`Idempotent`]); it is then copied
//!    before the first attempt ([`Replay`]), and otherwise never retried;
//! 2. the outcome is worth retrying ([`Outcome::is_retryable`](crate::Outcome::is_retryable): transport
//!    errors, timeouts, 502/503/504, gRPC `UNAVAILABLE`/`DEADLINE_EXCEEDED`);
//!    a local fail-fast rejection (no healthy instance, breaker open) is not:
//!    failing fast is its whole point;
//! 3. this request has retries left (3 by default);
//! 4. the upstream's **retry budget** has a token: tower's [`TpsBudget`],
//!    which every original call pays into and every retry withdraws from, so
//!    across all callers retries stay under a fraction (20 %) of calls, plus
//!    a small floor (10 per second) so that a quiet caller can still retry.
//!    Per-request limits alone allow a 4× load spike exactly when the
//!    upstream is weakest; the budget caps it at 1.2×.
//!
//! Between attempts the policy sleeps an exponentially growing, jittered
//! delay ([`ExponentialBackoff`]), so callers that failed together do not
//! retry together.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::Policy;
use tower::retry::backoff::{Backoff, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};

use crate::classify::{Classify, Idempotent, Replay};
use crate::error::{BoxError, ConfigError, Error, check_duration};

/// How the delay before each retry is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// No randomness: exactly the nominal delay. For tests and for a single
    /// caller; many callers without jitter retry in lockstep.
    None,
    /// A uniformly random delay between zero and the nominal delay ("full
    /// jitter"). It spreads retries the most and halves the mean wait, which
    /// is why gRPC's retry design (A6) uses it. The source material names
    /// ±15 % first and full jitter as the alternative; the default is full
    /// jitter because the retries this crate makes are exactly the
    /// synchronised kind (many callers failing on the same upstream at the
    /// same moment) that a narrow ±15 % band keeps bunched together.
    #[default]
    Full,
    /// The nominal delay ± this fraction (`0.15` is ±15 %): delays stay
    /// predictable while callers drift apart.
    Proportional(f64),
}

/// Exponential backoff settings.
///
/// `max` caps the *nominal* delay. Proportional jitter is applied after the
/// cap, so delays at the cap still differ by ±fraction: clamping after the
/// jitter (as tower's own `ExponentialBackoff` does) would put every caller
/// that has reached the cap back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The nominal delay before the first retry (100 ms).
    pub initial: Duration,
    /// Growth per retry (×2).
    pub multiplier: f64,
    /// Largest nominal delay (5 s).
    ///
    /// The source material says 10 s for HTTP clients and 5 s for gRPC. One
    /// value serves both here: with 3 retries the delays are 100, 200 and
    /// 400 ms and no cap is reached, and with more retries a cap at or above
    /// the 10 s call timeout could never be slept out before the call
    /// itself times out.
    pub max: Duration,
    /// Randomisation (full jitter).
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }
}

impl BackoffConfig {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration(
            "retry backoff initial",
            self.initial,
            Duration::from_millis(1),
            Duration::from_secs(60),
            "between 1 ms and 60 s",
        )?;
        check_duration(
            "retry backoff max",
            self.max,
            self.initial,
            Duration::from_secs(300),
            "at least the initial delay and at most 300 s",
        )?;
        if !(self.multiplier >= 1.0 && self.multiplier <= 10.0) {
            return Err(ConfigError::out_of_range(
                "retry backoff multiplier",
                "between 1 and 10",
                self.multiplier,
            ));
        }
        if let Jitter::Proportional(fraction) = self.jitter
            && !(0.0..=1.0).contains(&fraction)
        {
            return Err(ConfigError::out_of_range(
                "retry backoff jitter",
                "a fraction between 0 and 1",
                fraction,
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (0 for the first), given a
    /// uniform random number `random` in `[0, 1)`. Pure, for testing.
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let factor = self
            .multiplier
            .powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let nominal = Duration::try_from_secs_f64(self.initial.as_secs_f64() * factor)
            .unwrap_or(self.max)
            .min(self.max);
        let scale = match self.jitter {
            Jitter::None => 1.0,
            Jitter::Full => random,
            Jitter::Proportional(fraction) => 1.0 + fraction * (2.0 * random - 1.0),
        };
        Duration::try_from_secs_f64(nominal.as_secs_f64() * scale).unwrap_or(nominal)
    }
}

impl MakeBackoff for BackoffConfig {
    type Backoff = ExponentialBackoff;

    fn make_backoff(&mut self) -> ExponentialBackoff {
        ExponentialBackoff {
            config: *self,
            retries: 0,
        }
    }
}

/// One request's backoff sequence; see [`BackoffConfig`]. Implements tower's
/// [`Backoff`], so it also fits tower's other retry utilities.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    config: BackoffConfig,
    retries: u32,
}

impl Backoff for ExponentialBackoff {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> Self::Future {
        let delay = self.config.delay(self.retries, rand::random::<f64>());
        self.retries = self.retries.saturating_add(1);
        tokio::time::sleep(delay)
    }
}

/// The retry budget, shared by every call to one upstream (tower's
/// [`TpsBudget`]). The defaults are tower's, which are Finagle's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit counts (10 s; 1–60 s).
    pub ttl: Duration,
    /// Retries always allowed per second, whatever the traffic (10).
    pub min_per_sec: u32,
    /// Retries allowed as a fraction of calls (0.2: one retry per five calls).
    pub retry_ratio: f32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    /// Checks every value is usable (tower asserts on them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration(
            "retry budget ttl",
            self.ttl,
            Duration::from_secs(1),
            Duration::from_secs(60),
            "between 1 s and 60 s",
        )?;
        if !(0.0..=1000.0).contains(&self.retry_ratio) {
            return Err(ConfigError::out_of_range(
                "retry budget retry_ratio",
                "between 0 and 1000",
                self.retry_ratio,
            ));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::out_of_range(
                "retry budget min_per_sec",
                "below 2^31",
                self.min_per_sec,
            ));
        }
        Ok(())
    }

    /// The budget.
    pub fn build(&self) -> Result<TpsBudget, ConfigError> {
        self.validate()?;
        Ok(TpsBudget::new(self.ttl, self.min_per_sec, self.retry_ratio))
    }
}

/// Per-request retry settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt (3); 0 disables retrying.
    pub max_retries: u32,
    /// Delays between attempts.
    pub backoff: BackoffConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: BackoffConfig::default(),
        }
    }
}

impl RetryConfig {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_retries > 10 {
            return Err(ConfigError::out_of_range(
                "retry max_retries",
                "at most 10",
                self.max_retries,
            ));
        }
        self.backoff.validate()
    }
}

/// tower [`Policy`] implementing the rules in the [module docs](self).
///
/// `P` supplies the protocol knowledge: [`Idempotent`] for requests and
/// [`Classify`] for results ([`Http`](crate::Http), [`Grpc`](crate::Grpc)).
#[derive(Debug, Clone)]
pub struct RetryPolicy<P> {
    protocol: P,
    budget: Arc<TpsBudget>,
    max_retries: u32,
    backoff: ExponentialBackoff,
    /// Retries made so far for this request. tower clones the policy for
    /// each request, so this is per request; it is 0 in the copy the
    /// service keeps.
    retries: u32,
}

impl<P> RetryPolicy<P> {
    /// A policy drawing on `budget`, which should be shared by every policy
    /// for the same upstream.
    pub fn new(protocol: P, config: &RetryConfig, budget: Arc<TpsBudget>) -> Self {
        let mut backoff = config.backoff;
        Self {
            protocol,
            budget,
            max_retries: config.max_retries,
            backoff: backoff.make_backoff(),
            retries: 0,
        }
    }
}

impl<P, Req, Res> Policy<Req, Res, BoxError> for RetryPolicy<P>
where
    P: Idempotent<Req> + Classify<Res>,
    Req: Replay,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        if let Err(error) = result
            && error
                .downcast_ref::<Error>()
                .is_some_and(Error::is_fail_fast)
        {
            return None;
        }
        if !self.protocol.classify(result.as_ref()).is_retryable() {
            return None;
        }
        if self.retries >= self.max_retries {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!("retry budget exhausted, not retrying");
            return None;
        }
        self.retries += 1;
        tracing::debug!(retry = self.retries, "retrying");
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        // tower calls this before every attempt: once on the service's own
        // copy of the policy for the original call (`retries == 0`), then on
        // the request's copy before each retry. Paying into the budget only
        // for the former makes "calls" mean original calls, retryable or not.
        if self.retries == 0 {
            self.budget.deposit();
        }
        if self.max_retries == 0 || !self.protocol.is_idempotent(request) {
            return None;
        }
        request.replay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let config = BackoffConfig {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(500),
            jitter: Jitter::None,
        };
        let delays: Vec<_> = (0..5).map(|retry| config.delay(retry, 0.5)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 500, 500]
                .map(Duration::from_millis)
                .to_vec()
        );
        // A huge retry number neither overflows nor panics.
        assert_eq!(config.delay(u32::MAX, 0.5), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        let proportional = BackoffConfig {
            jitter: Jitter::Proportional(0.15),
            ..BackoffConfig::default()
        };
        assert_eq!(proportional.delay(0, 0.0), Duration::from_millis(85));
        assert_eq!(proportional.delay(0, 0.5), Duration::from_millis(100));
        assert!(proportional.delay(0, 0.999_999) <= Duration::from_millis(115));
        // At the cap, proportional jitter still spreads callers.
        assert!(proportional.delay(20, 0.999) > proportional.max);

        let full = BackoffConfig::default();
        assert_eq!(full.delay(2, 0.0), Duration::ZERO);
        assert_eq!(full.delay(2, 0.5), Duration::from_millis(200));
        for _ in 0..1000 {
            let random = rand::random::<f64>();
            assert!(full.delay(1, random) < Duration::from_millis(200));
        }
    }

    #[test]
    fn nonsense_settings_are_rejected() {
        let bad_backoffs = [
            BackoffConfig {
                multiplier: f64::NAN,
                ..BackoffConfig::default()
            },
            BackoffConfig {
                max: Duration::from_millis(10),
                ..BackoffConfig::default()
            },
            BackoffConfig {
                jitter: Jitter::Proportional(1.5),
                ..BackoffConfig::default()
            },
        ];
        for config in bad_backoffs {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let bad_budget = BudgetConfig {
            ttl: Duration::from_millis(10),
            ..BudgetConfig::default()
        };
        assert!(bad_budget.build().is_err());
        assert!(BudgetConfig::default().build().is_ok());
    }
}
