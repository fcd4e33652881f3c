//! The composed stack, and the settings of an upstream and of a route.
//!
//! [`Upstream::service`] builds, from the outside in:
//!
//! ```text
//! Resilient          typed errors: BoxError → resilience::Error
//!  └ LoadShed        bulkhead full → Overloaded at once, never a queue
//!    └ ConcurrencyLimit   the bulkhead: ≤ max_in_flight calls, all routes
//!      └ Timeout     the whole call, retries and backoff included (10 s)
//!        └ Retry     budgeted, idempotent-only, backoff + jitter
//!          └ Balance round-robin over instances whose breaker admits
//!            └ CircuitBreaker (per instance)
//!              └ Timeout   one attempt (5 s)
//!                └ the instance's client
//! ```
//!
//! Why this order:
//!
//! - **Load shedding and the bulkhead outermost**, so a permit is held for
//!   the whole life of a call, backoff sleeps and retries included: the
//!   bulkhead bounds the work (tasks, sockets, memory) this process has
//!   committed to the upstream, and a call waiting to retry is such work.
//!   A bulkhead inside the retry layer would let retries queue behind it
//!   and would shed retries of calls that had already been admitted.
//! - **The overall timeout outside the retry layer**, so the caller's wait
//!   is bounded no matter how attempts and backoff add up; a per-attempt
//!   timeout alone allows four attempts × 5 s plus backoff.
//! - **Retry outside the balancer and the breakers**, so each retry picks
//!   anew and goes to another instance, and a breaker sees every attempt
//!   (an open breaker makes the balancer skip its instance rather than
//!   fail the call).
//! - **The per-attempt timeout inside the breaker**, so a hung instance
//!   produces a timeout its breaker counts as a failure; a timeout outside
//!   could only cancel the attempt, and a cancellation counts as nothing.
//!
//! Everything per upstream (breakers, bulkhead semaphore, retry budget) lives
//! in the [`Upstream`] and is shared by every stack built from it, so routes
//! with different timeouts ([`Upstream::service_with`]) still share one
//! bulkhead and one set of breakers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::Service;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::retry::Retry;
use tower::timeout::Timeout;

use crate::balance::Balance;
use crate::breaker::BreakerConfig;
use crate::error::{BoxError, ConfigError, Error, check_duration};
use crate::retry::{BudgetConfig, RetryConfig, RetryPolicy};
use crate::upstream::Upstream;

/// Settings of one upstream, shared by every route to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// Each instance's circuit breaker.
    pub breaker: BreakerConfig,
    /// The bulkhead: calls in flight to this upstream, across all routes
    /// (64); the next one fails fast with [`Error::Overloaded`].
    ///
    /// The platform's source material says 10. That suits a client making
    /// its own calls, not a gateway multiplexing every user onto one
    /// upstream: by Little's law, 10 in flight at a healthy 20 ms per call
    /// caps the upstream at 500 calls/s per gateway replica, and a load test
    /// would measure the bulkhead instead of the service. 64 allows 3 200/s
    /// at 20 ms while still bounding what a hung upstream can hold: 64
    /// tasks for at most the overall timeout.
    pub max_in_flight: usize,
    /// The retry budget shared by all calls to this upstream.
    pub retry_budget: BudgetConfig,
    /// Route settings used by [`Upstream::service`].
    pub route: RouteConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            breaker: BreakerConfig::default(),
            max_in_flight: 64,
            retry_budget: BudgetConfig::default(),
            route: RouteConfig::default(),
        }
    }
}

impl UpstreamConfig {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.breaker.validate()?;
        if self.max_in_flight == 0 || self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::out_of_range(
                "max_in_flight",
                "at least 1 and at most tokio's Semaphore::MAX_PERMITS",
                self.max_in_flight,
            ));
        }
        self.retry_budget.validate()?;
        self.route.validate()
    }
}

/// Settings of one route (a group of calls with the same latency
/// expectations) to an upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteConfig {
    /// Limit on one attempt (5 s, the platform's per-call timeout).
    pub attempt_timeout: Duration,
    /// Limit on the whole call, retries and backoff included (10 s). The
    /// source material's 10 s for HTTP clients, applied where it belongs:
    /// to what the caller waits for in total.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryConfig,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            retry: RetryConfig::default(),
        }
    }
}

impl RouteConfig {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration(
            "attempt_timeout",
            self.attempt_timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
            "between 1 ms and 1 h",
        )?;
        check_duration(
            "timeout",
            self.timeout,
            self.attempt_timeout,
            Duration::from_secs(3600),
            "at least attempt_timeout and at most 1 h",
        )?;
        self.retry.validate()
    }
}

type Stack<S, P> = LoadShed<ConcurrencyLimit<Timeout<Retry<RetryPolicy<P>, Balance<S, P>>>>>;

/// The full stack for one upstream; see the [module docs](self). Build it
/// with [`Upstream::service`].
///
/// `P` is the protocol: [`Http`](crate::Http), [`Grpc`](crate::Grpc), or
/// anything implementing [`Classify`](crate::Classify) and
/// [`Idempotent`](crate::Idempotent). Requests must be [`Replay`](crate::Replay)
/// (e.g. `http::Request<Bytes>`) for retries to be possible.
pub struct Resilient<S, P> {
    inner: Stack<S, P>,
    upstream: Arc<str>,
}

impl<S, P: Clone> Clone for Resilient<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            upstream: self.upstream.clone(),
        }
    }
}

impl<S, P> std::fmt::Debug for Resilient<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilient")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl<S> Upstream<S> {
    /// The stack for this upstream with its default route settings
    /// ([`UpstreamConfig::route`]).
    pub fn service<P: Clone>(&self, protocol: P) -> Resilient<S, P> {
        self.build_stack(protocol, &self.shared.config.route)
    }

    /// The stack for a route with its own settings; it shares this
    /// upstream's breakers, bulkhead and retry budget with every other.
    pub fn service_with<P: Clone>(
        &self,
        route: &RouteConfig,
        protocol: P,
    ) -> Result<Resilient<S, P>, ConfigError> {
        route.validate()?;
        Ok(self.build_stack(protocol, route))
    }

    fn build_stack<P: Clone>(&self, protocol: P, route: &RouteConfig) -> Resilient<S, P> {
        let shared = &self.shared;
        let policy = RetryPolicy::new(protocol.clone(), &route.retry, shared.budget.clone());
        let balance = Balance::new(self.clone(), protocol, route.attempt_timeout);
        let retry = Retry::new(policy, balance);
        let inner = LoadShed::new(ConcurrencyLimit::with_semaphore(
            Timeout::new(retry, route.timeout),
            shared.bulkhead.clone(),
        ));
        Resilient {
            inner,
            upstream: shared.name.clone(),
        }
    }
}

impl<S, P, Req> Service<Req> for Resilient<S, P>
where
    Stack<S, P>: Service<Req, Error = BoxError>,
{
    type Response = <Stack<S, P> as Service<Req>>::Response;
    type Error = Error;
    type Future = ResponseFuture<<Stack<S, P> as Service<Req>>::Future>;

    /// Always ready: when the bulkhead is full, load shedding makes the call
    /// itself fail with [`Error::Overloaded`] rather than making the caller
    /// wait here.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| Error::from_boxed(&self.upstream, error))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
            upstream: self.upstream.clone(),
        }
    }
}

pin_project! {
    /// The future of a call through [`Resilient`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        upstream: Arc<str>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl<F, Res> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Res, BoxError>>,
{
    type Output = Result<Res, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(result.map_err(|error| Error::from_boxed(this.upstream, error)))
    }
}
