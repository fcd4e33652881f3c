//! The circuit breaker as tower middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{CircuitBreaker, Permit};
use crate::classify::Classify;
use crate::error::BoxError;

/// Wraps a service in a [`CircuitBreaker`]; `classifier` decides which
/// results count as failures ([`Http`](crate::Http), [`Grpc`](crate::Grpc),
/// or a closure `Fn(Result<&Res, &BoxError>) -> Outcome`).
///
/// Every service this layer produces shares the one breaker: the breaker
/// belongs to the upstream, not to a clone of a client.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    pub fn new(breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service guarded by a circuit breaker; see [`CircuitBreakerLayer`].
///
/// While the breaker is open, `call` fails at once with
/// [`Error::CircuitOpen`](crate::Error::CircuitOpen) (boxed, as errors are
/// between tower layers) and the inner service is not called. Readiness is
/// the inner service's: an open breaker is not a reason to stall a caller in
/// `poll_ready`, it is a reason to answer it now.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// The breaker guarding this service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                ResponseFuture::admitted(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(open.into()),
        }
    }
}

pin_project! {
    /// The future of a call through a breaker: it classifies the result and
    /// records it on the breaker when the call completes. Dropped before
    /// that, it records nothing (see [`Permit`]).
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: CallState<F, C>,
    }
}

pin_project! {
    #[project = CallStateProj]
    enum CallState<F, C> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classifier: C,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    /// A call the breaker admitted: `future` is the inner call.
    pub(crate) fn admitted(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            state: CallState::Admitted {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    /// A call that fails with `error` without running.
    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            state: CallState::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            CallStateProj::Admitted {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(permit) = permit.take() {
                    permit.record(classifier.classify(result.as_ref()).is_failure());
                }
                Poll::Ready(result)
            }
            CallStateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "circuit breaker future polled after completion".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::breaker::{BreakerConfig, State};
    use crate::classify::{Http, Outcome};
    use crate::error::Error;

    fn respond_with(
        status: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone {
        tower::service_fn(move |_request: http::Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let status = u16::try_from(status.load(Ordering::SeqCst)).unwrap();
            async move {
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    }

    fn get() -> http::Request<()> {
        http::Request::new(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_5xx_fails_fast_without_calling_and_recovers_after_the_cool_down() {
        let status = Arc::new(AtomicUsize::new(503));
        let calls = Arc::new(AtomicUsize::new(0));
        let breaker = CircuitBreaker::builder("payment").build().unwrap();
        let service = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(breaker.clone(), Http::new()))
            .service(respond_with(status.clone(), calls.clone()));

        for _ in 0..5 {
            let response = service.clone().oneshot(get()).await.unwrap();
            assert_eq!(response.status(), 503);
        }
        assert_eq!(breaker.state(), State::Open);

        for _ in 0..100 {
            let error = service.clone().oneshot(get()).await.unwrap_err();
            assert!(matches!(
                error.downcast_ref::<Error>(),
                Some(Error::CircuitOpen { upstream }) if &**upstream == "payment"
            ));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "open: the upstream saw nothing"
        );

        tokio::time::advance(Duration::from_secs(30)).await;
        status.store(200, Ordering::SeqCst);
        service.clone().oneshot(get()).await.unwrap();
        assert_eq!(breaker.state(), State::HalfOpen);
        service.clone().oneshot(get()).await.unwrap();
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_three_concurrent_trials_through_and_rejects_the_rest() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let breaker = CircuitBreaker::builder("order").build().unwrap();
        let service = CircuitBreakerLayer::new(breaker.clone(), Http::new()).layer(
            tower::service_fn(move |_request: http::Request<()>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, Infallible>(http::Response::new(()))
                }
            }),
        );
        for _ in 0..5 {
            breaker.try_acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(30)).await;

        let trials: Vec<_> = (0..3)
            .map(|_| tokio::spawn(service.clone().oneshot(get())))
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let fourth = service.clone().oneshot(get()).await.unwrap_err();
        assert!(matches!(
            fourth.downcast_ref::<Error>(),
            Some(Error::CircuitOpen { .. })
        ));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the fourth never reached it"
        );

        for trial in trials {
            trial.await.unwrap().unwrap();
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test]
    async fn client_errors_never_open_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let breaker = CircuitBreaker::builder("user").build().unwrap();
        let service = CircuitBreakerLayer::new(breaker.clone(), Http::new())
            .layer(respond_with(Arc::new(AtomicUsize::new(404)), calls.clone()));
        for _ in 0..100 {
            service.clone().oneshot(get()).await.unwrap();
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 100);
    }

    #[tokio::test]
    async fn errors_and_a_custom_classifier_count_as_configured() {
        let breaker = CircuitBreaker::builder("inventory")
            .config(BreakerConfig {
                consecutive_failures: 2,
                failure_rate: None,
                ..BreakerConfig::default()
            })
            .build()
            .unwrap();
        // Only errors count; every response is fine.
        let classifier = |result: Result<&&str, &BoxError>| match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        let service = CircuitBreakerLayer::new(breaker.clone(), classifier).layer(
            tower::service_fn(|fail: bool| async move {
                if fail {
                    Err("connection refused")
                } else {
                    Ok("fine")
                }
            }),
        );
        service.clone().oneshot(true).await.unwrap_err();
        service.clone().oneshot(false).await.unwrap();
        service.clone().oneshot(true).await.unwrap_err();
        assert_eq!(breaker.state(), State::Closed);
        service.clone().oneshot(true).await.unwrap_err();
        assert_eq!(breaker.state(), State::Open);
    }
}
