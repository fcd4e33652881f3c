//! Upstreams: the instances of one service, each with its own breaker, and
//! the round-robin choice among the healthy ones.
//!
//! An upstream is configured as a comma-separated list of URLs
//! (`http://user-1:8081,http://user-2:8081`), or as one name that DNS
//! resolves to several addresses (docker compose `--scale`, a Kubernetes
//! headless service). Every instance gets its own [`CircuitBreaker`]: one
//! sick replica must not take its healthy siblings out of rotation, and a
//! breaker shared by all replicas would either never open (the healthy ones
//! dilute the failures) or open for all of them.
//!
//! [`Upstream::pick`] goes round-robin (one wrapping counter) and skips every
//! instance whose breaker would reject the call, which is outlier ejection:
//! an instance that keeps failing leaves the rotation for the breaker's
//! cool-down and is then probed with a few trial calls before it fully
//! rejoins. When no instance can take the call, `pick` fails at once with
//! [`Error::NoHealthyInstance`].
//!
//! # DNS
//!
//! Re-resolution is opt-in: call [`Upstream::refresh`] (once at start) and/or
//! [`Upstream::spawn_refresh`] (periodically; 30 s, the platform's registry
//! TTL, is a good interval); a task that keeps upstreams of several client
//! types resolved holds them as [`Refresh`] trait objects. Each configured
//! host name is then replaced by one instance per address it resolves to;
//! instances that stay keep their breaker and their client, instances that
//! disappear are dropped, new ones get a client from the factory. A failed or empty resolution keeps the
//! previous instances: a DNS hiccup must not empty the pool. Without
//! re-resolution, a host name is one instance and the client resolves it
//! per connection, which suits a name with one address (a Kubernetes
//! ClusterIP service already balances behind its one virtual IP).
//!
//! A resolved instance is addressed by IP, so its requests carry the IP as
//! `Host`/`:authority`; that suits the platform's plaintext in-cluster
//! traffic, not TLS upstreams that need the name for SNI.

mod endpoint;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::retry::budget::TpsBudget;

pub use endpoint::Endpoint;

use crate::breaker::{CircuitBreaker, Permit};
use crate::clock::{Clock, TokioClock};
use crate::error::{BoxError, ConfigError, Error};
use crate::stack::UpstreamConfig;

/// Resolves a host name to addresses. [`TokioResolver`] is the real one;
/// tests substitute their own.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The system resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioResolver;

impl Resolve for TokioResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// Builds the client for one instance.
type Factory<S> = dyn Fn(&Endpoint) -> Result<S, BoxError> + Send + Sync;

/// One instance of an upstream: where it is, its breaker, its client.
pub struct Instance<S> {
    endpoint: Endpoint,
    /// Index of the configured URL this instance comes from.
    origin: usize,
    breaker: CircuitBreaker,
    service: S,
}

impl<S> Instance<S> {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The client the factory built for this instance.
    pub fn service(&self) -> &S {
        &self.service
    }
}

impl<S> fmt::Debug for Instance<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("endpoint", &self.endpoint.to_string())
            .field("state", &self.breaker.state())
            .finish()
    }
}

/// The instance [`Upstream::pick`] chose, with its breaker's permit for one
/// call: record the call's outcome on it.
#[derive(Debug)]
pub struct Pick<S> {
    pub instance: Arc<Instance<S>>,
    pub permit: Permit,
}

pub(crate) struct Shared<S> {
    pub(crate) name: Arc<str>,
    pub(crate) config: UpstreamConfig,
    /// The configured URLs.
    seeds: Vec<Endpoint>,
    instances: RwLock<Arc<[Arc<Instance<S>>]>>,
    next: AtomicUsize,
    /// The bulkhead: one semaphore for every route to this upstream.
    pub(crate) bulkhead: Arc<Semaphore>,
    /// The retry budget, shared likewise.
    pub(crate) budget: Arc<TpsBudget>,
    clock: Arc<dyn Clock>,
    resolver: Arc<dyn Resolve>,
    factory: Box<Factory<S>>,
}

/// The instances of one upstream service and everything shared by the calls
/// to it (breakers, bulkhead, retry budget); see the [module docs](self).
/// Cheap to clone; clones share all of it.
///
/// `S` is the client of one instance, a tower service built by the factory
/// given to [`UpstreamBuilder::build`]. Build the call stack with
/// [`Upstream::service`].
pub struct Upstream<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for Upstream<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Upstream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("instances", &self.instances())
            .finish()
    }
}

/// Builds an [`Upstream`].
pub struct UpstreamBuilder {
    name: Arc<str>,
    seeds: Vec<Endpoint>,
    config: UpstreamConfig,
    clock: Arc<dyn Clock>,
    resolver: Arc<dyn Resolve>,
}

impl fmt::Debug for UpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("seeds", &self.seeds)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UpstreamBuilder {
    /// Breakers, bulkhead, budget and default route settings (default:
    /// [`UpstreamConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: UpstreamConfig) -> Self {
        self.config = config;
        self
    }

    /// The clock the breakers read (default: tokio's).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The resolver used by [`Upstream::refresh`] (default: the system's).
    #[must_use]
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Validates the configuration and builds one client per configured URL
    /// with `factory`, which is kept to build clients for instances that DNS
    /// re-resolution discovers later.
    pub fn build<S, F>(self, factory: F) -> Result<Upstream<S>, ConfigError>
    where
        F: Fn(&Endpoint) -> Result<S, BoxError> + Send + Sync + 'static,
    {
        self.config.validate()?;
        let budget = self.config.retry_budget.build()?;
        let mut instances = Vec::with_capacity(self.seeds.len());
        for (origin, endpoint) in self.seeds.iter().enumerate() {
            let instance = new_instance(
                &self.name,
                &self.config,
                &self.clock,
                &factory,
                endpoint.clone(),
                origin,
            )
            .map_err(|error| ConfigError::Client {
                endpoint: endpoint.to_string(),
                reason: error.to_string(),
            })?;
            instances.push(Arc::new(instance));
        }
        Ok(Upstream {
            shared: Arc::new(Shared {
                bulkhead: Arc::new(Semaphore::new(self.config.max_in_flight)),
                budget: Arc::new(budget),
                name: self.name,
                config: self.config,
                seeds: self.seeds,
                instances: RwLock::new(instances.into()),
                next: AtomicUsize::new(0),
                clock: self.clock,
                resolver: self.resolver,
                factory: Box::new(factory),
            }),
        })
    }
}

fn new_instance<S>(
    name: &Arc<str>,
    config: &UpstreamConfig,
    clock: &Arc<dyn Clock>,
    factory: &Factory<S>,
    endpoint: Endpoint,
    origin: usize,
) -> Result<Instance<S>, BoxError> {
    let service = factory(&endpoint)?;
    let breaker = CircuitBreaker::builder(name.clone())
        .instance(endpoint.authority().as_str())
        .config(config.breaker)
        .clock(clock.clone())
        .build()?;
    Ok(Instance {
        endpoint,
        origin,
        breaker,
        service,
    })
}

// Not generic: the client type is only known once `build` gets its factory.
impl Upstream<()> {
    /// Starts building an upstream called `name` (the `upstream` label of its
    /// metrics and the name in its errors) from a comma-separated list of
    /// URLs.
    pub fn builder(name: impl Into<Arc<str>>, urls: &str) -> Result<UpstreamBuilder, ConfigError> {
        let name = name.into();
        let seeds = Endpoint::parse_list(urls)?;
        if seeds.is_empty() {
            return Err(ConfigError::NoInstances {
                upstream: name.to_string(),
            });
        }
        Ok(UpstreamBuilder {
            name,
            seeds,
            config: UpstreamConfig::default(),
            clock: Arc::new(TokioClock),
            resolver: Arc::new(TokioResolver),
        })
    }
}

impl<S> Upstream<S> {
    /// The upstream's name.
    pub fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// The current instances.
    pub fn instances(&self) -> Arc<[Arc<Instance<S>>]> {
        self.shared
            .instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Chooses the instance for one call: the next in round-robin order
    /// whose breaker admits it. Fails fast with
    /// [`Error::NoHealthyInstance`] when none does.
    pub fn pick(&self) -> Result<Pick<S>, Error> {
        let instances = self.instances();
        let count = instances.len();
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let instance = &instances[start.wrapping_add(offset) % count];
            if let Ok(permit) = instance.breaker.try_acquire() {
                return Ok(Pick {
                    instance: instance.clone(),
                    permit,
                });
            }
        }
        Err(Error::NoHealthyInstance {
            upstream: self.shared.name.clone(),
        })
    }

    /// Re-resolves every configured host name now and updates the instances
    /// (see the [module docs](self)). Returns how many instances there are.
    pub async fn refresh(&self) -> usize {
        let mut resolved: Vec<Option<Vec<SocketAddr>>> =
            Vec::with_capacity(self.shared.seeds.len());
        for seed in &self.shared.seeds {
            if seed.is_ip() {
                resolved.push(None);
                continue;
            }
            match self.shared.resolver.resolve(seed.host(), seed.port()).await {
                Ok(addresses) if !addresses.is_empty() => resolved.push(Some(addresses)),
                Ok(_) => {
                    tracing::warn!(upstream = %self.shared.name, host = seed.host(), "DNS returned no address; keeping the current instances");
                    resolved.push(None);
                }
                Err(error) => {
                    tracing::warn!(upstream = %self.shared.name, host = seed.host(), %error, "DNS resolution failed; keeping the current instances");
                    resolved.push(None);
                }
            }
        }
        self.apply(resolved)
    }

    /// Replaces the instances of every seed that resolved (`Some`), keeping
    /// the others' as they are. Clients for new instances are built before
    /// the lock is taken, so calls are never held up by the factory.
    fn apply(&self, resolved: Vec<Option<Vec<SocketAddr>>>) -> usize {
        let shared = &self.shared;
        let current = self.instances();
        let mut next: Vec<Arc<Instance<S>>> = Vec::new();
        for (origin, (seed, addresses)) in shared.seeds.iter().zip(resolved).enumerate() {
            let Some(addresses) = addresses else {
                next.extend(current.iter().filter(|i| i.origin == origin).cloned());
                continue;
            };
            for address in addresses {
                let endpoint = match seed.at(address) {
                    Ok(endpoint) => endpoint,
                    Err(error) => {
                        tracing::warn!(upstream = %shared.name, %error, "unusable resolved address");
                        continue;
                    }
                };
                if next.iter().any(|i| i.endpoint == endpoint) {
                    continue;
                }
                if let Some(existing) = current.iter().find(|i| i.endpoint == endpoint) {
                    next.push(existing.clone());
                    continue;
                }
                let built = new_instance(
                    &shared.name,
                    &shared.config,
                    &shared.clock,
                    &*shared.factory,
                    endpoint,
                    origin,
                );
                match built {
                    Ok(instance) => next.push(Arc::new(instance)),
                    Err(error) => {
                        tracing::warn!(upstream = %shared.name, %address, %error, "cannot build a client for a resolved instance");
                    }
                }
            }
        }
        let unchanged = next.len() == current.len()
            && next
                .iter()
                .zip(current.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        // An empty result means every address was unusable: keep what works.
        if unchanged || next.is_empty() {
            return current.len();
        }
        let endpoints: Vec<String> = next.iter().map(|i| i.endpoint.to_string()).collect();
        tracing::info!(upstream = %shared.name, instances = ?endpoints, "upstream instances changed");
        let count = next.len();
        let retired: Vec<_> = current
            .iter()
            .filter(|old| !next.iter().any(|new| Arc::ptr_eq(old, new)))
            .cloned()
            .collect();
        *shared
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next.into();
        for gone in retired {
            gone.breaker.retire();
        }
        count
    }
}

/// An [`Upstream`] whatever its client type, so that one task can keep
/// several resolved.
pub trait Refresh: Send + Sync {
    /// [`Upstream::refresh`]: re-resolves now, returns the instance count.
    fn refresh(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>>;
}

impl<S: Send + Sync + 'static> Refresh for Upstream<S> {
    fn refresh(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>> {
        Box::pin(Upstream::refresh(self))
    }
}

impl<S: Send + Sync + 'static> Upstream<S> {
    /// Spawns a task that calls [`refresh`](Self::refresh) every `every`,
    /// starting now. The task ends by itself once every clone of this
    /// upstream has been dropped.
    pub fn spawn_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared<S>> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                Upstream { shared }.refresh().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::breaker::State;
    use crate::stack::UpstreamConfig;

    /// Each instance's "client" is just its endpoint.
    fn upstream(urls: &str) -> Upstream<String> {
        Upstream::builder("user", urls)
            .unwrap()
            .build(|endpoint: &Endpoint| Ok(endpoint.to_string()))
            .unwrap()
    }

    fn picks(upstream: &Upstream<String>, times: usize) -> Vec<String> {
        (0..times)
            .map(|_| {
                let pick = upstream.pick().unwrap();
                pick.permit.success();
                pick.instance.service().clone()
            })
            .collect()
    }

    fn trip(instance: &Instance<String>) {
        for _ in 0..5 {
            instance.breaker().try_acquire().unwrap().failure();
        }
        assert_eq!(instance.breaker().state(), State::Open);
    }

    #[tokio::test]
    async fn round_robin_over_three_instances() {
        let upstream = upstream("http://a:1,http://b:1,http://c:1");
        assert_eq!(
            picks(&upstream, 6),
            [
                "http://a:1",
                "http://b:1",
                "http://c:1",
                "http://a:1",
                "http://b:1",
                "http://c:1"
            ]
        );
    }

    #[tokio::test]
    async fn an_instance_with_an_open_breaker_is_skipped() {
        let upstream = upstream("http://a:1,http://b:1,http://c:1");
        trip(&upstream.instances()[1]);
        let chosen = picks(&upstream, 30);
        assert!(!chosen.iter().any(|c| c == "http://b:1"));
        assert!(chosen.iter().any(|c| c == "http://a:1"));
        assert!(chosen.iter().any(|c| c == "http://c:1"));
    }

    #[tokio::test]
    async fn all_open_fails_fast_with_no_healthy_instance() {
        let upstream = upstream("http://a:1,http://b:1,http://c:1");
        for instance in upstream.instances().iter() {
            trip(instance);
        }
        assert!(matches!(
            upstream.pick(),
            Err(Error::NoHealthyInstance { upstream }) if &*upstream == "user"
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_instance_rejoins_after_its_trials_succeed() {
        let upstream = upstream("http://a:1,http://b:1");
        trip(&upstream.instances()[0]);
        assert!(picks(&upstream, 4).iter().all(|c| c == "http://b:1"));
        tokio::time::advance(Duration::from_secs(30)).await;
        let chosen = picks(&upstream, 8);
        assert!(chosen.iter().filter(|c| *c == "http://a:1").count() >= 3);
        assert_eq!(upstream.instances()[0].breaker().state(), State::Closed);
    }

    #[derive(Clone, Default)]
    struct FakeDns(Arc<Mutex<HashMap<String, io::Result<Vec<SocketAddr>>>>>);

    impl FakeDns {
        fn set(&self, host: &str, answer: io::Result<Vec<&str>>) {
            let answer =
                answer.map(|addresses| addresses.iter().map(|a| a.parse().unwrap()).collect());
            self.0.lock().unwrap().insert(host.to_owned(), answer);
        }
    }

    impl Resolve for FakeDns {
        fn resolve(
            &self,
            host: &str,
            _port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
            let answer = match self.0.lock().unwrap().get(host) {
                Some(Ok(addresses)) => Ok(addresses.clone()),
                Some(Err(error)) => Err(io::Error::new(error.kind(), error.to_string())),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
            };
            Box::pin(async move { answer })
        }
    }

    fn endpoints(upstream: &Upstream<String>) -> Vec<String> {
        upstream
            .instances()
            .iter()
            .map(|i| i.service().clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn dns_refresh_follows_the_records_and_keeps_breakers_of_instances_that_stay() {
        let dns = FakeDns::default();
        let upstream = Upstream::builder("user", "http://user:8081,http://10.0.0.1:8081")
            .unwrap()
            .config(UpstreamConfig::default())
            .resolver(dns.clone())
            .build(|endpoint: &Endpoint| Ok(endpoint.to_string()))
            .unwrap();
        // Before any resolution the name is one instance.
        assert_eq!(
            endpoints(&upstream),
            ["http://user:8081", "http://10.0.0.1:8081"]
        );

        dns.set("user", Ok(vec!["10.0.0.5:8081", "10.0.0.6:8081"]));
        assert_eq!(upstream.refresh().await, 3);
        assert_eq!(
            endpoints(&upstream),
            [
                "http://10.0.0.5:8081",
                "http://10.0.0.6:8081",
                "http://10.0.0.1:8081"
            ]
        );
        trip(&upstream.instances()[1]);

        // A failure or an empty answer keeps what there is.
        dns.set("user", Err(io::Error::other("SERVFAIL")));
        assert_eq!(upstream.refresh().await, 3);
        dns.set("user", Ok(vec![]));
        assert_eq!(upstream.refresh().await, 3);

        // Scale-up: 10.0.0.6 stays (with its open breaker), 10.0.0.5 goes, 10.0.0.7 comes.
        dns.set("user", Ok(vec!["10.0.0.6:8081", "10.0.0.7:8081"]));
        let handle = upstream.spawn_refresh(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            endpoints(&upstream),
            [
                "http://10.0.0.6:8081",
                "http://10.0.0.7:8081",
                "http://10.0.0.1:8081"
            ]
        );
        assert_eq!(upstream.instances()[0].breaker().state(), State::Open);

        dns.set("user", Ok(vec!["10.0.0.8:8081"]));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            endpoints(&upstream),
            ["http://10.0.0.8:8081", "http://10.0.0.1:8081"]
        );

        // The task ends with the upstream.
        drop(upstream);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(handle.is_finished());
    }

    #[test]
    fn an_empty_list_or_a_failing_factory_is_a_configuration_error() {
        assert!(matches!(
            Upstream::builder("user", " , "),
            Err(ConfigError::NoInstances { .. })
        ));
        let failed = Upstream::builder("user", "http://a:1")
            .unwrap()
            .build(|_: &Endpoint| Err::<(), BoxError>("no TLS roots".into()));
        assert!(matches!(failed, Err(ConfigError::Client { .. })));
    }
}
