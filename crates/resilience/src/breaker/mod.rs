//! Circuit breaker.
//!
//! A breaker stops sending calls to an upstream that is failing, for two
//! reasons: the caller gets its error at once instead of after a timeout
//! (fail fast, keep the caller's own threads and memory free), and the
//! upstream gets room to recover instead of a wall of requests it cannot
//! serve. tower has no breaker, so this one is written here, in two parts:
//!
//! - [`CircuitBreaker`]: the state machine alone, with no I/O and an
//!   injectable [`Clock`], so every rule is unit-tested without sleeping.
//! - [`CircuitBreakerLayer`]: the tower middleware around it.
//!
//! # States
//!
//! ```text
//!            5 consecutive failures, or
//!            failure ratio ≥ 50 % over 10 s (≥ 20 calls)
//!   Closed ───────────────────────────────────────────▶ Open
//!     ▲                                                 │  ▲
//!     │ 2 trial successes                   after 30 s  │  │ any trial
//!     │                                                 ▼  │ failure
//!     └─────────────────────────────────────────────── HalfOpen
//!                                        (≤ 3 trials in flight)
//! ```
//!
//! - **Closed** (gauge `0`): calls pass; outcomes are counted.
//! - **Open** (gauge `1`): calls are rejected with
//!   [`Error::CircuitOpen`] without reaching the
//!   upstream, for the cool-down.
//! - **HalfOpen** (gauge `2`): after the cool-down, a few trial calls probe
//!   the upstream. Enough successes close the breaker; any failure reopens it
//!   for another cool-down.
//!
//! The move from Open to HalfOpen happens on the first call after the
//! cool-down (there is no timer task), so an idle upstream's gauge stays at
//! `1` until traffic arrives to probe it. Every transition sets
//! `ferrishop_circuit_breaker_state{upstream[,server_address]}` and logs at
//! WARN.
//!
//! # Two triggers
//!
//! *Consecutive failures* catch a dead upstream quickly even at low traffic.
//! They miss a *flaky* one: 30 % errors under load almost never produce five
//! failures in a row, yet that upstream is burning every caller's latency
//! budget. The *failure ratio* over a rolling window catches that, and its
//! minimum call count keeps two failures out of three calls at 3 a.m. from
//! tripping it.
//!
//! # Half-open trials
//!
//! "At most 3 trial calls" is enforced as at most 3 trials *in flight* at
//! once. A trial that is cancelled (its caller gave up, the future was
//! dropped) gives its slot back without a verdict; with a cap on the *total*
//! number of trials instead, three cancelled trials would leave the breaker
//! half-open forever, admitting nothing.
//!
//! # Concurrency
//!
//! The state is a small struct behind a `std::sync::Mutex` that is held only
//! for a few arithmetic steps: to admit a call ([`CircuitBreaker::try_acquire`]) and to
//! record its outcome ([`Permit::record`]), never while the call runs. Each
//! state change starts a new *epoch*; an outcome from a call admitted in an
//! earlier epoch is ignored, so a slow call started before the breaker opened
//! cannot close it, and one started while it was half-open cannot count
//! against the fresh closed state.

mod layer;
mod window;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use layer::{CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};

use crate::clock::{Clock, TokioClock};
use crate::error::{ConfigError, Error, check_duration};
use window::Window;

/// The gauge every breaker reports its state to.
pub const STATE_METRIC: &str = "ferrishop_circuit_breaker_state";

/// A breaker's state, as exported by [`STATE_METRIC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Calls pass. Gauge value `0`.
    Closed = 0,
    /// Calls are rejected. Gauge value `1`.
    Open = 1,
    /// A few trial calls pass. Gauge value `2`.
    HalfOpen = 2,
}

impl State {
    /// The value of [`STATE_METRIC`] for this state.
    pub fn gauge_value(self) -> f64 {
        f64::from(self as u8)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// Opening on a failure ratio over a rolling window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// Open when failures / calls reaches this (0 < ratio ≤ 1).
    pub ratio: f64,
    /// ... and the window holds at least this many calls.
    pub minimum_calls: u32,
    /// The rolling window's length.
    pub window: Duration,
}

impl Default for FailureRate {
    /// 50 % of at least 20 calls over 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// When a breaker opens and how it recovers. The defaults are the platform's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (5).
    pub consecutive_failures: u32,
    /// Failure ratio that opens a closed breaker; `None` disables it.
    pub failure_rate: Option<FailureRate>,
    /// How long the breaker stays open before trial calls (30 s).
    pub open_for: Duration,
    /// Trial calls admitted at once while half-open (3).
    pub half_open_max_calls: u32,
    /// Trial successes that close a half-open breaker (2).
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Some(FailureRate::default()),
            open_for: Duration::from_secs(30),
            half_open_max_calls: 3,
            success_threshold: 2,
        }
    }
}

impl BreakerConfig {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(ConfigError::out_of_range(
                "breaker consecutive_failures",
                "at least 1",
                self.consecutive_failures,
            ));
        }
        if self.half_open_max_calls == 0 {
            return Err(ConfigError::out_of_range(
                "breaker half_open_max_calls",
                "at least 1",
                self.half_open_max_calls,
            ));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::out_of_range(
                "breaker success_threshold",
                "at least 1",
                self.success_threshold,
            ));
        }
        check_duration(
            "breaker open_for",
            self.open_for,
            Duration::from_millis(1),
            Duration::from_secs(24 * 3600),
            "between 1 ms and 24 h",
        )?;
        if let Some(rate) = self.failure_rate {
            if !(rate.ratio > 0.0 && rate.ratio <= 1.0) {
                return Err(ConfigError::out_of_range(
                    "breaker failure_rate.ratio",
                    "in (0, 1]",
                    rate.ratio,
                ));
            }
            if rate.minimum_calls == 0 {
                return Err(ConfigError::out_of_range(
                    "breaker failure_rate.minimum_calls",
                    "at least 1",
                    rate.minimum_calls,
                ));
            }
            check_duration(
                "breaker failure_rate.window",
                rate.window,
                Duration::from_millis(10),
                Duration::from_secs(3600),
                "between 10 ms and 1 h",
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Phase {
    Closed {
        consecutive_failures: u32,
        window: Option<Window>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
    },
}

#[derive(Debug)]
struct Machine {
    phase: Phase,
    /// Bumped on every transition; see the module docs.
    epoch: u64,
}

struct Shared {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    upstream: Arc<str>,
    instance: Option<Arc<str>>,
    machine: Mutex<Machine>,
}

/// A circuit breaker; see the [module docs](self). Clones share one state.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("upstream", &self.shared.upstream)
            .field("instance", &self.shared.instance)
            .field("state", &self.state())
            .finish()
    }
}

/// Builds a [`CircuitBreaker`].
#[derive(Debug)]
pub struct CircuitBreakerBuilder {
    upstream: Arc<str>,
    instance: Option<Arc<str>>,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
}

impl CircuitBreakerBuilder {
    /// The rules (default: [`BreakerConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// The instance this breaker guards, when the upstream has several: it
    /// becomes the gauge's `instance` label.
    #[must_use]
    pub fn instance(mut self, instance: impl Into<Arc<str>>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The clock (default: [`TokioClock`]).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A closed breaker; its gauge is set to `0` at once so the series exists
    /// before the first transition.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        let now = self.clock.now();
        let breaker = CircuitBreaker {
            shared: Arc::new(Shared {
                machine: Mutex::new(Machine {
                    phase: closed(&self.config, now),
                    epoch: 0,
                }),
                config: self.config,
                clock: self.clock,
                upstream: self.upstream,
                instance: self.instance,
            }),
        };
        breaker.publish(State::Closed);
        Ok(breaker)
    }
}

fn closed(config: &BreakerConfig, now: Instant) -> Phase {
    Phase::Closed {
        consecutive_failures: 0,
        window: config
            .failure_rate
            .map(|rate| Window::new(now, rate.window)),
    }
}

impl CircuitBreaker {
    /// Starts building a breaker for `upstream` (its gauge's `upstream` label
    /// and the name in its errors).
    pub fn builder(upstream: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            upstream: upstream.into(),
            instance: None,
            config: BreakerConfig::default(),
            clock: Arc::new(TokioClock),
        }
    }

    /// The upstream's name.
    pub fn upstream(&self) -> &Arc<str> {
        &self.shared.upstream
    }

    /// The current state. Pure: an open breaker whose cool-down has passed
    /// still reports `Open` until a call moves it to half-open.
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Whether a call would be admitted now, without admitting one: closed,
    /// open past its cool-down, or half-open with a free trial slot.
    pub fn is_available(&self) -> bool {
        let now = self.shared.clock.now();
        match self.lock().phase {
            Phase::Closed { .. } => true,
            Phase::Open { until } => now >= until,
            Phase::HalfOpen { in_flight, .. } => in_flight < self.shared.config.half_open_max_calls,
        }
    }

    /// Asks to make one call. The returned [`Permit`] must be given the
    /// call's outcome ([`Permit::record`]); dropping it instead means "no
    /// verdict" (the call was cancelled).
    pub fn try_acquire(&self) -> Result<Permit, Error> {
        let now = self.shared.clock.now();
        let mut machine = self.lock();
        match &mut machine.phase {
            Phase::Closed { .. } => {}
            Phase::Open { until } => {
                if now < *until {
                    return Err(self.rejection());
                }
                self.transition(&mut machine, State::Open, now, State::HalfOpen);
                if let Phase::HalfOpen { in_flight, .. } = &mut machine.phase {
                    *in_flight = 1;
                }
            }
            Phase::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.shared.config.half_open_max_calls {
                    return Err(self.rejection());
                }
                *in_flight += 1;
            }
        }
        Ok(Permit {
            breaker: self.clone(),
            epoch: machine.epoch,
            settled: false,
        })
    }

    fn rejection(&self) -> Error {
        Error::CircuitOpen {
            upstream: self.shared.upstream.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // Nothing in a critical section can panic half-way through a state
        // change, so a poisoned lock still guards a consistent state.
        self.shared
            .machine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a finished call admitted in `epoch`.
    fn settle(&self, epoch: u64, verdict: Option<bool>) {
        let now = self.shared.clock.now();
        let config = &self.shared.config;
        let mut machine = self.lock();
        if machine.epoch != epoch {
            return;
        }
        match (&mut machine.phase, verdict) {
            (Phase::Closed { .. }, None) | (Phase::Open { .. }, _) => {}
            (
                Phase::Closed {
                    consecutive_failures,
                    window,
                },
                Some(failed),
            ) => {
                if failed {
                    *consecutive_failures += 1;
                } else {
                    *consecutive_failures = 0;
                }
                let mut ratio_tripped = false;
                if let (Some(window), Some(rate)) = (window.as_mut(), config.failure_rate) {
                    window.record(now, failed);
                    let (calls, failures) = window.totals(now);
                    ratio_tripped = failed
                        && calls >= rate.minimum_calls
                        && f64::from(failures) >= rate.ratio * f64::from(calls);
                }
                if *consecutive_failures >= config.consecutive_failures || ratio_tripped {
                    self.transition(&mut machine, State::Closed, now, State::Open);
                }
            }
            (Phase::HalfOpen { in_flight, .. }, None) => {
                *in_flight = in_flight.saturating_sub(1);
            }
            (Phase::HalfOpen { .. }, Some(true)) => {
                self.transition(&mut machine, State::HalfOpen, now, State::Open);
            }
            (
                Phase::HalfOpen {
                    in_flight,
                    successes,
                },
                Some(false),
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= config.success_threshold {
                    self.transition(&mut machine, State::HalfOpen, now, State::Closed);
                }
            }
        }
    }

    fn transition(&self, machine: &mut Machine, from: State, now: Instant, to: State) {
        machine.epoch = machine.epoch.wrapping_add(1);
        machine.phase = match to {
            State::Closed => closed(&self.shared.config, now),
            State::Open => Phase::Open {
                until: now + self.shared.config.open_for,
            },
            State::HalfOpen => Phase::HalfOpen {
                in_flight: 0,
                successes: 0,
            },
        };
        tracing::warn!(
            upstream = %self.shared.upstream,
            instance = self.shared.instance.as_deref().unwrap_or(""),
            from = %from,
            to = %to,
            "circuit breaker {to}",
        );
        self.publish(to);
    }

    fn publish(&self, state: State) {
        let upstream = self.shared.upstream.clone();
        let gauge = match &self.shared.instance {
            Some(instance) => {
                // Not `instance`: Prometheus gives that label the scrape target's address.
                metrics::gauge!(STATE_METRIC, "upstream" => upstream, "server_address" => instance.clone())
            }
            None => metrics::gauge!(STATE_METRIC, "upstream" => upstream),
        };
        gauge.set(state.gauge_value());
    }

    /// Sets the gauge back to closed, for an instance that is going away
    /// (its series would otherwise keep its last value).
    pub(crate) fn retire(&self) {
        self.publish(State::Closed);
    }
}

/// Leave to make one call through a [`CircuitBreaker`].
///
/// Record the outcome with [`record`](Permit::record). A permit dropped
/// without a verdict — the call's future was cancelled — frees its half-open
/// trial slot and counts as nothing: a caller hanging up says nothing about
/// the upstream.
#[must_use = "a permit records nothing unless given the call's outcome"]
pub struct Permit {
    breaker: CircuitBreaker,
    epoch: u64,
    settled: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("upstream", &self.breaker.shared.upstream)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Permit {
    /// Records whether the call failed (in the breaker's sense: see
    /// [`Outcome::is_failure`](crate::Outcome::is_failure)).
    pub fn record(mut self, failed: bool) {
        self.settled = true;
        self.breaker.settle(self.epoch, Some(failed));
    }

    /// Records a success.
    pub fn success(self) {
        self.record(false);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(true);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.epoch, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;

    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn consecutive_only() -> BreakerConfig {
        BreakerConfig {
            failure_rate: None,
            ..BreakerConfig::default()
        }
    }

    fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::builder("inventory")
            .config(config)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        (breaker, clock)
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker.try_acquire().unwrap().failure();
        }
    }

    fn open(breaker: &CircuitBreaker) {
        fail(breaker, 5);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn five_consecutive_failures_open_it_and_a_success_resets_the_count() {
        let (breaker, _) = breaker(consecutive_only());
        fail(&breaker, 4);
        breaker.try_acquire().unwrap().success();
        fail(&breaker, 4);
        assert_eq!(breaker.state(), State::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), State::Open);
        assert!(matches!(
            breaker.try_acquire(),
            Err(Error::CircuitOpen { upstream }) if &*upstream == "inventory"
        ));
    }

    #[test]
    fn open_rejects_until_the_cool_down_then_admits_trials() {
        let (breaker, clock) = breaker(consecutive_only());
        open(&breaker);
        clock.advance(COOL_DOWN - Duration::from_millis(1));
        assert!(breaker.try_acquire().is_err());
        assert!(!breaker.is_available());
        clock.advance(Duration::from_millis(1));
        assert!(breaker.is_available());
        let trial = breaker.try_acquire().unwrap();
        assert_eq!(breaker.state(), State::HalfOpen);
        drop(trial);
    }

    #[test]
    fn half_open_admits_at_most_three_trials_at_once_and_two_successes_close_it() {
        let (breaker, clock) = breaker(consecutive_only());
        open(&breaker);
        clock.advance(COOL_DOWN);
        let trials: Vec<_> = (0..3).map(|_| breaker.try_acquire().unwrap()).collect();
        assert!(breaker.try_acquire().is_err(), "a fourth concurrent trial");
        let mut trials = trials.into_iter();
        trials.next().unwrap().success();
        assert_eq!(breaker.state(), State::HalfOpen);
        // The freed slot admits another trial.
        let fourth = breaker.try_acquire().unwrap();
        trials.next().unwrap().success();
        assert_eq!(breaker.state(), State::Closed);
        // Trials from the half-open epoch no longer count.
        fourth.failure();
        trials.next().unwrap().failure();
        fail(&breaker, 4);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn any_failure_in_half_open_reopens_it_for_a_full_cool_down() {
        let (breaker, clock) = breaker(consecutive_only());
        open(&breaker);
        clock.advance(COOL_DOWN);
        let first = breaker.try_acquire().unwrap();
        let second = breaker.try_acquire().unwrap();
        first.success();
        second.failure();
        assert_eq!(breaker.state(), State::Open);
        clock.advance(COOL_DOWN - Duration::from_millis(1));
        assert!(breaker.try_acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(breaker.try_acquire().is_ok());
    }

    #[test]
    fn cancelled_trials_give_their_slot_back() {
        let (breaker, clock) = breaker(consecutive_only());
        open(&breaker);
        clock.advance(COOL_DOWN);
        for _ in 0..10 {
            let trials: Vec<_> = (0..3).map(|_| breaker.try_acquire().unwrap()).collect();
            drop(trials);
        }
        assert_eq!(breaker.state(), State::HalfOpen);
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().success();
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_slow_call_from_before_the_opening_cannot_close_it() {
        let (breaker, _) = breaker(consecutive_only());
        let slow = breaker.try_acquire().unwrap();
        open(&breaker);
        slow.success();
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn failure_ratio_over_the_window_opens_it_without_consecutive_failures() {
        let config = BreakerConfig {
            failure_rate: Some(FailureRate {
                ratio: 0.5,
                minimum_calls: 20,
                window: Duration::from_secs(10),
            }),
            ..BreakerConfig::default()
        };
        let (breaker, clock) = breaker(config);
        // Alternate success and failure: never two failures in a row.
        for call in 0..19 {
            breaker.try_acquire().unwrap().record(call % 2 == 1);
            clock.advance(Duration::from_millis(100));
        }
        assert_eq!(
            breaker.state(),
            State::Closed,
            "below the minimum call count"
        );
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), State::Open, "10 failures of 20 calls");
    }

    #[test]
    fn failures_that_leave_the_window_stop_counting() {
        let config = BreakerConfig {
            failure_rate: Some(FailureRate {
                ratio: 0.5,
                minimum_calls: 4,
                window: Duration::from_secs(10),
            }),
            ..BreakerConfig::default()
        };
        let (breaker, clock) = breaker(config);
        fail(&breaker, 3);
        clock.advance(Duration::from_secs(11));
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(
            breaker.state(),
            State::Closed,
            "1 failure of 4 calls in the window"
        );
    }

    #[test]
    fn invalid_configuration_is_an_error_not_a_panic() {
        let bad = [
            BreakerConfig {
                consecutive_failures: 0,
                ..BreakerConfig::default()
            },
            BreakerConfig {
                half_open_max_calls: 0,
                ..BreakerConfig::default()
            },
            BreakerConfig {
                open_for: Duration::ZERO,
                ..BreakerConfig::default()
            },
            BreakerConfig {
                failure_rate: Some(FailureRate {
                    ratio: f64::NAN,
                    ..FailureRate::default()
                }),
                ..BreakerConfig::default()
            },
        ];
        for config in bad {
            assert!(CircuitBreaker::builder("x").config(config).build().is_err());
        }
    }

    #[test]
    fn every_transition_sets_the_state_gauge() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let gauge = || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find_map(|(key, _, _, value)| {
                    let key = key.key();
                    let labels: Vec<_> = key
                        .labels()
                        .map(|label| (label.key().to_owned(), label.value().to_owned()))
                        .collect();
                    (key.name() == STATE_METRIC
                        && labels
                            == [
                                ("upstream".to_owned(), "inventory".to_owned()),
                                ("server_address".to_owned(), "10.0.0.7:50055".to_owned()),
                            ])
                    .then_some(value)
                })
        };
        metrics::with_local_recorder(&recorder, || {
            let clock = ManualClock::new();
            let breaker = CircuitBreaker::builder("inventory")
                .instance("10.0.0.7:50055")
                .config(consecutive_only())
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap();
            assert_eq!(gauge(), Some(DebugValue::Gauge(0.0.into())));
            open(&breaker);
            assert_eq!(gauge(), Some(DebugValue::Gauge(1.0.into())));
            clock.advance(COOL_DOWN);
            let trial = breaker.try_acquire().unwrap();
            assert_eq!(gauge(), Some(DebugValue::Gauge(2.0.into())));
            trial.success();
            breaker.try_acquire().unwrap().success();
            assert_eq!(gauge(), Some(DebugValue::Gauge(0.0.into())));
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed,
        Fail,
        Cancel,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            3 => Just(Op::Succeed),
            3 => Just(Op::Fail),
            1 => Just(Op::Cancel),
            2 => (0_u64..40_000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// For any interleaving of admissions, outcomes, cancellations and
        /// waits: nothing is admitted while open before the cool-down has
        /// passed, half-open never has more than 3 trials in flight, and the
        /// gauge value always names one of the three states.
        #[test]
        fn never_admits_while_open_before_the_cool_down(ops in proptest::collection::vec(op(), 1..300)) {
            let (breaker, clock) = breaker(BreakerConfig {
                failure_rate: Some(FailureRate { ratio: 0.5, minimum_calls: 4, window: Duration::from_secs(10) }),
                ..BreakerConfig::default()
            });
            let mut permits: Vec<(Permit, State)> = Vec::new();
            let mut opened_at: Option<Instant> = None;
            let mut state = breaker.state();
            for op in ops {
                let before = state;
                match op {
                    Op::Acquire => {
                        let admitted = breaker.try_acquire();
                        if before == State::Open {
                            let since = opened_at.expect("open has an opening time");
                            prop_assert_eq!(admitted.is_ok(), clock.now() >= since + COOL_DOWN);
                        }
                        if let Ok(permit) = admitted {
                            permits.push((permit, breaker.state()));
                        }
                    }
                    Op::Succeed => if let Some((permit, _)) = permits.pop() { permit.success() },
                    Op::Fail => if let Some((permit, _)) = permits.pop() { permit.failure() },
                    Op::Cancel => drop(permits.pop()),
                    Op::Wait(millis) => clock.advance(Duration::from_millis(millis)),
                }
                state = breaker.state();
                prop_assert!([0.0, 1.0, 2.0].contains(&state.gauge_value()));
                if state == State::Open && before != State::Open {
                    opened_at = Some(clock.now());
                }
                if state == State::HalfOpen {
                    let trials = permits.iter().filter(|(_, admitted_in)| *admitted_in == State::HalfOpen).count();
                    prop_assert!(trials <= 3, "{} trials in flight", trials);
                } else {
                    // Trials of an epoch that ended no longer hold a slot.
                    for (_, admitted_in) in &mut permits {
                        if *admitted_in == State::HalfOpen { *admitted_in = state; }
                    }
                }
            }
        }
    }
}
