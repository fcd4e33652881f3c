//! The innermost layer of a stack: one attempt, on one instance.
//!
//! tower's own `balance` module balances by load (power of two choices over
//! a `Discover` stream) and knows nothing of circuit breakers, so it cannot
//! express "round-robin over the instances whose breaker admits the call".
//! [`Balance`] does exactly that, per call:
//!
//! 1. [`Upstream::pick`] chooses the instance and takes a permit from its
//!    breaker (or fails fast with `NoHealthyInstance`);
//! 2. the instance's client runs the request under tower's
//!    [`Timeout`] (the per-attempt timeout), so a hung
//!    instance produces a timeout that its breaker counts, instead of a
//!    cancellation that it could not;
//! 3. the breaker records the classified outcome.
//!
//! Because the retry layer sits above this one, every retry is a new pick:
//! it goes to the next healthy instance, not back to the one that failed.

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;
use tower::timeout::Timeout;
use tower::util::{Oneshot, ServiceExt};

use crate::breaker::ResponseFuture;
use crate::classify::Classify;
use crate::error::BoxError;
use crate::upstream::Upstream;

/// See the [module docs](self).
pub struct Balance<S, P> {
    upstream: Upstream<S>,
    classifier: P,
    attempt_timeout: Duration,
}

impl<S, P: Clone> Clone for Balance<S, P> {
    fn clone(&self) -> Self {
        Self {
            upstream: self.upstream.clone(),
            classifier: self.classifier.clone(),
            attempt_timeout: self.attempt_timeout,
        }
    }
}

impl<S, P: std::fmt::Debug> std::fmt::Debug for Balance<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance")
            .field("upstream", self.upstream.name())
            .field("classifier", &self.classifier)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

impl<S, P> Balance<S, P> {
    pub fn new(upstream: Upstream<S>, classifier: P, attempt_timeout: Duration) -> Self {
        Self {
            upstream,
            classifier,
            attempt_timeout,
        }
    }
}

impl<S, P, Req> Service<Req> for Balance<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<Oneshot<Timeout<S>, Req>, P>;

    /// Always ready: which instance serves a call is decided in `call`, and
    /// that instance's own readiness is awaited inside the call's future
    /// (under the attempt's permit, so a half-open trial slot is held only
    /// while it is in use).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.upstream.pick() {
            Ok(pick) => {
                let client = Timeout::new(pick.instance.service().clone(), self.attempt_timeout);
                ResponseFuture::admitted(
                    client.oneshot(request),
                    pick.permit,
                    self.classifier.clone(),
                )
            }
            Err(no_healthy_instance) => ResponseFuture::rejected(no_healthy_instance.into()),
        }
    }
}
