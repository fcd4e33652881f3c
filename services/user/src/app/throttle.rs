//! Per-account login throttling.
//!
//! The gateway limits requests per client, which does nothing against a
//! botnet guessing one account's password from many addresses. So login
//! attempts are also limited per e-mail address: a generic cell rate
//! algorithm (governor) with a burst of N attempts refilled at N per minute.
//! After the burst, each further attempt waits for the next cell (one every
//! 60/N seconds), and the 429 says how long in `Retry-After`. Every attempt
//! counts, successful or not, so throttling cannot be used to learn whether
//! a password was right.
//!
//! The state is in memory, per replica: with R replicas an attacker gets at
//! most R times the budget, which still caps guessing at a few hundred
//! attempts per hour. Idle entries are dropped periodically
//! ([`LoginThrottle::forget_idle`]) so the map does not grow with every
//! address ever tried.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::domain::Email;

type Limiter<C> =
    RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Login attempts allowed per account.
pub struct LoginThrottle<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
}

impl<C: Clock> std::fmt::Debug for LoginThrottle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("tracked_accounts", &self.limiter.len())
            .finish()
    }
}

impl LoginThrottle {
    /// `per_minute` attempts at once, refilled at that rate.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: Clock> LoginThrottle<C> {
    pub fn with_clock(per_minute: NonZeroU32, clock: C) -> Self {
        Self {
            limiter: RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock),
        }
    }

    /// Takes one attempt for `email`, or says how long to wait for the next.
    pub fn attempt(&self, email: &Email) -> Result<(), Duration> {
        self.limiter
            .check_key(&email.as_str().to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Drops accounts whose budget is full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn tracked_accounts(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn email(text: &str) -> Email {
        Email::parse(text).unwrap()
    }

    #[test]
    fn a_burst_then_one_attempt_per_refill_interval() {
        let clock = FakeRelativeClock::default();
        let five = NonZeroU32::new(5).unwrap();
        let throttle = LoginThrottle::with_clock(five, clock.clone());
        let ann = email("ann@example.com");
        for attempt in 1..=5 {
            assert_eq!(throttle.attempt(&ann), Ok(()), "attempt {attempt}");
        }
        let wait = throttle.attempt(&ann).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12));

        // Other accounts are unaffected.
        assert_eq!(throttle.attempt(&email("bob@example.com")), Ok(()));

        clock.advance(Duration::from_secs(6));
        assert_eq!(throttle.attempt(&ann), Err(Duration::from_secs(6)));
        clock.advance(Duration::from_secs(6));
        assert_eq!(throttle.attempt(&ann), Ok(()));
        assert!(
            throttle.attempt(&ann).is_err(),
            "one cell refilled, one spent"
        );
    }

    #[test]
    fn idle_accounts_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let throttle = LoginThrottle::with_clock(NonZeroU32::new(5).unwrap(), clock.clone());
        assert_eq!(throttle.attempt(&email("ann@example.com")), Ok(()));
        assert_eq!(throttle.tracked_accounts(), 1);
        clock.advance(Duration::from_secs(60));
        throttle.forget_idle();
        assert_eq!(throttle.tracked_accounts(), 0);
    }
}
