//! The composed stack, driven through tower with fake instances and tokio's
//! paused clock: retries, budget, bulkhead, timeouts, balancing, breakers.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use resilience::{
    BackoffConfig, BoxError, BreakerConfig, BudgetConfig, Endpoint, Error, Http, IDEMPOTENCY_KEY,
    Jitter, RetryConfig, RouteConfig, State, Upstream, UpstreamConfig,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// What a fake instance does with one call.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Answer 200 after this long.
    Slow(Duration),
    /// Fail like a refused connection.
    Refuse,
}

#[derive(Debug)]
struct Call {
    instance: String,
    method: Method,
    at: Instant,
}

/// Fake instances: each plays its script of replies, repeating the last.
#[derive(Clone, Default)]
struct Fakes {
    scripts: Arc<Mutex<HashMap<String, Vec<Reply>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fakes {
    fn script(&self, instance: &str, replies: &[Reply]) {
        self.scripts
            .lock()
            .unwrap()
            .insert(instance.to_owned(), replies.to_vec());
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn calls_to(&self, instance: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.instance == instance)
            .count()
    }

    fn delays(&self) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls
            .windows(2)
            .map(|pair| pair[1].at - pair[0].at)
            .collect()
    }

    fn next(&self, instance: &str, request: &Request<Bytes>) -> Reply {
        let mut calls = self.calls.lock().unwrap();
        let made = calls
            .iter()
            .filter(|call| call.instance == instance)
            .count();
        calls.push(Call {
            instance: instance.to_owned(),
            method: request.method().clone(),
            at: Instant::now(),
        });
        let scripts = self.scripts.lock().unwrap();
        let script = scripts
            .get(instance)
            .map_or(&[Reply::Status(200)][..], Vec::as_slice);
        script
            .get(made)
            .or_else(|| script.last())
            .copied()
            .unwrap_or(Reply::Status(200))
    }

    fn upstream(
        &self,
        urls: &str,
        config: UpstreamConfig,
    ) -> Upstream<
        impl Service<
            Request<Bytes>,
            Response = Response<Bytes>,
            Error = BoxError,
            Future = impl Future<Output = Result<Response<Bytes>, BoxError>> + Send,
        > + Clone
        + Send
        + Sync
        + 'static,
    > {
        let fakes = self.clone();
        Upstream::builder("user", urls)
            .unwrap()
            .config(config)
            .build(move |endpoint: &Endpoint| {
                let fakes = fakes.clone();
                let instance = endpoint.authority().to_string();
                Ok(tower::service_fn(move |request: Request<Bytes>| {
                    let reply = fakes.next(&instance, &request);
                    async move {
                        match reply {
                            Reply::Status(status) => Ok(status_response(status)),
                            Reply::Slow(delay) => {
                                tokio::time::sleep(delay).await;
                                Ok(status_response(200))
                            }
                            Reply::Refuse => Err::<_, BoxError>("connection refused".into()),
                        }
                    }
                }))
            })
            .unwrap()
    }
}

fn status_response(status: u16) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .body(Bytes::new())
        .unwrap()
}

fn request(method: Method) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri("/api/v1/things")
        .body(Bytes::new())
        .unwrap()
}

/// Defaults, but with deterministic backoff and breakers that stay out of
/// the way unless a test is about them.
fn config() -> UpstreamConfig {
    UpstreamConfig {
        breaker: BreakerConfig {
            consecutive_failures: 1000,
            failure_rate: None,
            ..BreakerConfig::default()
        },
        route: RouteConfig {
            retry: RetryConfig {
                max_retries: 3,
                backoff: BackoffConfig {
                    jitter: Jitter::None,
                    ..BackoffConfig::default()
                },
            },
            ..RouteConfig::default()
        },
        ..UpstreamConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn get_is_retried_on_503_three_times_with_growing_delays() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Status(503)]);
    let service = fakes.upstream("http://a:1", config()).service(Http::new());

    let response = service.oneshot(request(Method::GET)).await.unwrap();

    assert_eq!(response.status(), 503, "the last attempt's answer");
    assert_eq!(fakes.calls(), 4, "one call and three retries");
    assert_eq!(
        fakes.delays(),
        [100, 200, 400].map(Duration::from_millis).to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_hides_the_failure() {
    let fakes = Fakes::default();
    fakes.script(
        "a:1",
        &[Reply::Refuse, Reply::Status(502), Reply::Status(200)],
    );
    let service = fakes.upstream("http://a:1", config()).service(Http::new());

    let response = service.oneshot(request(Method::GET)).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(fakes.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn post_without_an_idempotency_key_is_never_retried() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Status(503)]);
    let service = fakes.upstream("http://a:1", config()).service(Http::new());

    let response = service
        .clone()
        .oneshot(request(Method::POST))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error = service.oneshot(request(Method::PATCH)).await;
    assert_eq!(error.unwrap().status(), 503);

    assert_eq!(fakes.calls(), 2, "one attempt each");
}

#[tokio::test(start_paused = true)]
async fn post_with_an_idempotency_key_is_retried_where_the_upstream_deduplicates() {
    let fakes = Fakes::default();
    fakes.script(
        "a:1",
        &[Reply::Status(503), Reply::Status(503), Reply::Status(201)],
    );
    let upstream = fakes.upstream("http://a:1", config());
    let keyed = || {
        let mut post = request(Method::POST);
        post.headers_mut()
            .insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("order-42"));
        post
    };

    // Where nothing says the key is honoured, it is one attempt.
    let response = upstream
        .service(Http::new())
        .oneshot(keyed())
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(fakes.calls(), 1);

    let deduplicating = upstream.service(Http::new().deduplicates("/api/v1/things"));
    let response = deduplicating.oneshot(keyed()).await.unwrap();

    assert_eq!(response.status(), 201);
    let calls = fakes.calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|call| call.method == Method::POST));
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_500_are_not_retried() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Status(404), Reply::Status(500)]);
    let service = fakes.upstream("http://a:1", config()).service(Http::new());

    let not_found = service.clone().oneshot(request(Method::GET)).await.unwrap();
    let server_error = service.oneshot(request(Method::GET)).await.unwrap();

    assert_eq!(not_found.status(), 404);
    assert_eq!(server_error.status(), 500);
    assert_eq!(fakes.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Status(503)]);
    let mut config = config();
    // No free floor: only the 20 % earned by calls. Each call pays 1 token,
    // a retry costs 5.
    config.retry_budget = BudgetConfig {
        min_per_sec: 0,
        retry_ratio: 0.2,
        ..BudgetConfig::default()
    };
    let service = fakes.upstream("http://a:1", config).service(Http::new());

    for _ in 0..10 {
        let response = service.clone().oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(response.status(), 503);
    }

    // Without the budget: 10 × 4 = 40 attempts. With it: 10 + 20 % of 10.
    assert_eq!(fakes.calls(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_to_another_instance() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Refuse]);
    fakes.script("b:1", &[Reply::Status(200)]);
    let service = fakes
        .upstream("http://a:1,http://b:1", config())
        .service(Http::new());

    let response = service.oneshot(request(Method::GET)).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!((fakes.calls_to("a:1"), fakes.calls_to("b:1")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_sheds_the_next_call_at_once() {
    const LIMIT: usize = 4;
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Slow(Duration::from_secs(1))]);
    let config = UpstreamConfig {
        max_in_flight: LIMIT,
        ..config()
    };
    let service = fakes.upstream("http://a:1", config).service(Http::new());

    let mut in_flight = Vec::new();
    for _ in 0..LIMIT {
        let mut caller = service.clone();
        caller.ready().await.unwrap();
        in_flight.push(tokio::spawn(caller.call(request(Method::GET))));
    }

    let started = Instant::now();
    let shed = service.clone().oneshot(request(Method::GET)).await;
    let waited = started.elapsed();

    assert!(
        matches!(&shed, Err(Error::Overloaded { upstream }) if &**upstream == "user"),
        "{shed:?}"
    );
    assert!(waited < Duration::from_millis(1), "shed after {waited:?}");
    for call in in_flight {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert!(
        service.oneshot(request(Method::GET)).await.is_ok(),
        "slots are given back"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_to_one_upstream_share_its_bulkhead() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Slow(Duration::from_secs(1))]);
    let config = UpstreamConfig {
        max_in_flight: 1,
        ..config()
    };
    let upstream = fakes.upstream("http://a:1", config);
    let slow_route = RouteConfig {
        attempt_timeout: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        ..RouteConfig::default()
    };
    let mut first = upstream.service_with(&slow_route, Http::new()).unwrap();
    first.ready().await.unwrap();
    let pending = first.call(request(Method::GET));

    let other_route = upstream.service(Http::new());
    let shed = other_route.oneshot(request(Method::GET)).await;
    assert!(matches!(shed, Err(Error::Overloaded { .. })), "{shed:?}");
    assert!(pending.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_counts_against_its_instance_and_is_retried_elsewhere() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Slow(Duration::from_secs(3600))]);
    fakes.script("b:1", &[Reply::Status(200)]);
    let mut config = config();
    config.breaker.consecutive_failures = 1;
    config.route.attempt_timeout = Duration::from_secs(1);
    let upstream = fakes.upstream("http://a:1,http://b:1", config);
    let service = upstream.service(Http::new());

    let started = Instant::now();
    let response = service.oneshot(request(Method::GET)).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1) + Duration::from_millis(100)
    );
    assert_eq!(upstream.instances()[0].breaker().state(), State::Open);
    assert_eq!(upstream.instances()[1].breaker().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_whole_call_including_retries_is_bounded_by_the_route_timeout() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Slow(Duration::from_secs(3600))]);
    let mut config = config();
    config.route.attempt_timeout = Duration::from_secs(2);
    config.route.timeout = Duration::from_secs(3);
    let service = fakes.upstream("http://a:1", config).service(Http::new());

    let started = Instant::now();
    let result = service.oneshot(request(Method::GET)).await;

    assert!(
        matches!(&result, Err(Error::Timeout { upstream }) if &**upstream == "user"),
        "{result:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(fakes.calls(), 2, "the second attempt was cut short");
}

#[tokio::test(start_paused = true)]
async fn five_failures_eject_the_only_instance_and_calls_then_fail_fast_unretried() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Status(503)]);
    let mut config = config();
    config.breaker = BreakerConfig::default();
    let upstream = fakes.upstream("http://a:1", config);
    let service = upstream.service(Http::new());

    for _ in 0..5 {
        let response = service
            .clone()
            .oneshot(request(Method::POST))
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }
    assert_eq!(upstream.instances()[0].breaker().state(), State::Open);

    let started = Instant::now();
    for _ in 0..20 {
        let result = service.clone().oneshot(request(Method::GET)).await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, Error::NoHealthyInstance { .. }),
            "{error:?}"
        );
        assert!(error.is_fail_fast());
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no backoff: nothing retried"
    );
    assert_eq!(fakes.calls(), 5, "the upstream saw nothing more");

    // After the cool-down, trials reach it again, and two successes close it.
    fakes.script("a:1", &[Reply::Status(200)]);
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..2 {
        let response = service.clone().oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(upstream.instances()[0].breaker().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_become_typed_upstream_errors() {
    let fakes = Fakes::default();
    fakes.script("a:1", &[Reply::Refuse]);
    let service = fakes.upstream("http://a:1", config()).service(Http::new());

    let error = service.oneshot(request(Method::GET)).await.unwrap_err();

    assert!(matches!(&error, Error::Upstream { .. }), "{error:?}");
    assert_eq!(error.to_string(), "call to user failed: connection refused");
    assert_eq!(fakes.calls(), 4);
}

#[test]
fn invalid_route_settings_are_refused() {
    let fakes = Fakes::default();
    let upstream = fakes.upstream("http://a:1", config());
    let route = RouteConfig {
        attempt_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        ..RouteConfig::default()
    };
    assert!(upstream.service_with(&route, Http::new()).is_err());
}
