//! What the traced clients share: [`ObservedClient`] opens an
//! [`Observation`] of each request it sends (the client span, the trace
//! context in the request's headers, the clock) and closes it with the
//! outcome. The HTTP client ([`crate::http_client`]) and the gRPC channel
//! ([`crate::grpc::client`]) say what they observe; this says when.

use std::fmt::{self, Display};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;
use tracing::{Instrument, Span};

/// One request in flight, as a client observes it.
pub trait Observation: Send + Sized + 'static {
    /// What the body of a response becomes: the inner service's as it is,
    /// or wrapped to observe the call until its body ends.
    type Body<B>;

    /// What a client keeps across its calls: the handles of the metric
    /// series it has recorded into.
    type Kept: Default + Send + Sync + 'static;

    /// Opens the observation of `request` and writes its trace context into
    /// the request's headers.
    fn start<B>(request: &mut Request<B>, kept: &Arc<Self::Kept>) -> Self;

    /// The span the request is sent in.
    fn span(&self) -> &Span;

    /// The inner service answered with `result`: ends the observation, or
    /// hands it to the response's body.
    fn finish<RB, E: Display>(
        self,
        result: Result<Response<RB>, E>,
    ) -> Result<Response<Self::Body<RB>>, E>;
}

/// Tower service observing, with `O`, each request it passes to `inner`.
/// Clones share what it keeps ([`Observation::Kept`]).
pub struct ObservedClient<S, O: Observation> {
    inner: S,
    kept: Arc<O::Kept>,
    observation: PhantomData<fn() -> O>,
}

impl<S, O: Observation> ObservedClient<S, O> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            kept: Arc::default(),
            observation: PhantomData,
        }
    }
}

impl<S: Clone, O: Observation> Clone for ObservedClient<S, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            kept: Arc::clone(&self.kept),
            observation: PhantomData,
        }
    }
}

impl<S: fmt::Debug, O: Observation> fmt::Debug for ObservedClient<S, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedClient")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, O, B, RB> Service<Request<B>> for ObservedClient<S, O>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Display,
    O: Observation,
    B: Send + 'static,
{
    type Response = Response<O::Body<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let observation = O::start(&mut request, &self.kept);
        Box::pin(async move {
            let result = inner
                .call(request)
                .instrument(observation.span().clone())
                .await;
            observation.finish(result)
        })
    }
}
