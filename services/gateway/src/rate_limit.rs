//! Rate limits at the edge: who may send how much, and what a client is told.
//!
//! # Buckets
//!
//! Three keyed GCRA limiters (governor), one per policy, each a token bucket
//! of `burst` requests refilled at the configured rate:
//!
//! | policy | applies to | key | default |
//! |---|---|---|---|
//! | `login` | `POST /api/v1/auth/login` | client IP | 10/min, burst 5 |
//! | `user` | requests with a verified [`Caller`] | user id | 100/s, burst 200 |
//! | `anonymous` | every other request | client IP | 100/s, burst 200 |
//!
//! A request is counted against exactly one bucket: the login route against
//! `login` (password guessing is what it guards against, so it is keyed by
//! IP even for a caller who already holds a token), an identified caller
//! against their own `user` bucket wherever they connect from (so users
//! behind one NAT do not starve each other), everyone else against their
//! IP's `anonymous` bucket. The public gRPC port checks the same limiter
//! ([`RateLimiter::check`]), so a user's budget covers REST and gRPC together.
//!
//! The client IP is the TCP peer's; with `TRUST_FORWARDED_FOR` the last
//! `X-Forwarded-For` entry instead, for deployments behind one proxy that
//! appends it (anywhere else clients could pick a fresh bucket per request).
//! The last entry is the one that proxy wrote; the ones before it are
//! whatever the client sent, so they are never trusted. IPv6
//! clients are keyed by their /64: one subscriber usually holds a whole /64,
//! and per-address keys would hand each of them 2⁶⁴ buckets.
//!
//! # Open streams
//!
//! A stream (`GET /api/v1/orders/{id}/events`, gRPC `WatchOrder` and
//! `WatchStock`) lasts as long as its client wants, and the buckets count
//! only its first request. So each client — a user, or an anonymous IP —
//! holds at most [`MAX_OPEN_STREAMS`] open at once
//! ([`RateLimiter::open_stream`]); one more is refused like a rate-limited
//! request.
//!
//! # What clients see
//!
//! A refused request gets 429 problem+json `RATE_LIMITED` with `Retry-After`
//! (whole seconds, rounded up). Every response of the REST API — allowed or
//! refused — carries the two fields of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers` (revisions 08–10, which replaced
//! the older `RateLimit-Limit`/`-Remaining`/`-Reset` trio with two
//! structured-field lists), so a client can pace itself before it is refused:
//!
//! ```text
//! RateLimit-Policy: "anonymous";q=200;w=2
//! RateLimit: "anonymous";r=57;t=2
//! ```
//!
//! - `RateLimit-Policy`: the policy's name, its quota `q` (the burst) and
//!   its window `w` in seconds (the time the quota takes to refill from
//!   empty, burst ÷ rate, rounded up). 200 per 2 s is exactly what a
//!   100/s bucket of 200 allows; 10/min with a burst of 5 reads `q=5;w=30`.
//! - `RateLimit`: the remaining quota `r` (further requests that would be
//!   admitted right now) and `t`, in seconds rounded up: on an admitted
//!   request the time until the quota is whole again, on a refusal the time
//!   until the next request can be admitted (the `Retry-After` value), since
//!   a GCRA bucket refills one request at a time rather than resetting.
//!
//! The optional `pk` (partition key) parameter is left out: it would echo
//! the client's IP or user id for no benefit to the client. The headers are
//! set on every response rather than on 429s only, which costs one small
//! header value per response and is what lets a well-behaved client never
//! see a 429.
//!
//! # Tokens not verified yet
//!
//! Checking a token's signature costs more than the rest of a proxied
//! request, and only tokens that pass are kept as verified (see
//! [`crate::auth`]). So every token check the gateway must make — a client's
//! first request with a new token, or any made-up token — counts against
//! the client IP's `anonymous` bucket before it is made
//! ([`admit_token_check`]): a flood of forged tokens gets 429s from one IP's
//! limit, not a signature check each. A request whose token was verified
//! already counts only against its user's bucket.
//!
//! Each refusal increments `ferrishop_rate_limited_total{route, limiter}`,
//! `route` being the matched route template (`unmatched` for none; the gRPC
//! method path on the gRPC port) and `limiter` the policy.
//!
//! # Memory
//!
//! A keyed limiter keeps one entry per key it has seen. [`RateLimiter::trim`]
//! (run every [`TRIM_PERIOD`] by [`RateLimiter::keep_trimmed`]) drops the
//! entries whose bucket has refilled completely — they are
//! indistinguishable from a key never seen — and returns the freed
//! capacity, so the maps hold only clients active within the last window
//! plus one trim period, however many distinct clients come and go.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{NotUntil, Quota};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::RateLimits;
use crate::error::ApiError;

/// The route with the stricter per-IP limit.
pub const LOGIN_PATH: &str = "/api/v1/auth/login";

/// How often [`RateLimiter::keep_trimmed`] forgets idle clients.
pub const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// Refusals, labelled `route` and `limiter`.
pub const RATE_LIMITED_TOTAL: &str = "ferrishop_rate_limited_total";

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whose bucket a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// An anonymous request, by client IP.
    Anonymous(IpAddr),
    /// A request of a verified caller, by user id.
    User(Uuid),
    /// A login attempt, by client IP.
    Login(IpAddr),
}

type Keyed<K, C> = governor::RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// One policy: its bucket per key and how it is advertised.
struct Policy<K: std::hash::Hash + Eq + Clone, C: Clock> {
    name: &'static str,
    limiter: Keyed<K, C>,
    burst: u32,
    /// Time one request's worth of quota takes to come back.
    period: Duration,
    /// `RateLimit-Policy`, fixed for the policy's lifetime.
    header: HeaderValue,
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock> Policy<K, C> {
    fn new(name: &'static str, quota: Quota, clock: C) -> Self {
        let burst = quota.burst_size().get();
        let period = quota.replenish_interval();
        let window = ceil_seconds(quota.burst_size_replenished_in()).max(1);
        let header = HeaderValue::from_str(&format!("\"{name}\";q={burst};w={window}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        Self {
            name,
            limiter: governor::RateLimiter::dashmap_with_clock(quota, clock).with_middleware(),
            burst,
            period,
            header,
        }
    }

    fn check(&self, key: &K) -> Decision {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                Decision {
                    policy: self.name,
                    policy_header: self.header.clone(),
                    remaining,
                    reset: self.period.saturating_mul(used),
                    retry_after: None,
                }
            }
            Err(refusal) => {
                let wait = wait_time(&refusal, self.limiter.clock());
                Decision {
                    policy: self.name,
                    policy_header: self.header.clone(),
                    remaining: 0,
                    reset: wait,
                    retry_after: Some(wait),
                }
            }
        }
    }

    fn trim(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

fn wait_time<C: Clock>(refusal: &NotUntil<C::Instant>, clock: &C) -> Duration {
    refusal.wait_time_from(clock.now())
}

/// The outcome of one check, and what the client is told about it.
#[derive(Debug, Clone)]
pub struct Decision {
    policy: &'static str,
    policy_header: HeaderValue,
    remaining: u32,
    reset: Duration,
    retry_after: Option<Duration>,
}

impl Decision {
    /// How long to wait when the request was refused; `None` if admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The policy's name (`anonymous`, `user` or `login`).
    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// `RateLimit-Policy`.
    pub fn policy_header(&self) -> HeaderValue {
        self.policy_header.clone()
    }

    /// `RateLimit`.
    pub fn limit_header(&self) -> HeaderValue {
        // Written on every response: built by hand, without `format!`'s
        // machinery, and handed over without a copy.
        let mut numbers = itoa::Buffer::new();
        let mut value = String::with_capacity(self.policy.len() + 40);
        value.push('"');
        value.push_str(self.policy);
        value.push_str("\";r=");
        value.push_str(numbers.format(self.remaining));
        value.push_str(";t=");
        value.push_str(numbers.format(ceil_seconds(self.reset)));
        HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
    }

    /// Sets `RateLimit-Policy` and `RateLimit`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY.clone(), self.policy_header());
        headers.insert(RATELIMIT.clone(), self.limit_header());
    }

    /// Counts a refusal on `route`.
    pub fn record_refusal(&self, route: &str) {
        metrics::counter!(
            RATE_LIMITED_TOTAL,
            "route" => route.to_owned(),
            "limiter" => self.policy,
        )
        .increment(1);
    }
}

/// Whole seconds, rounded up.
fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The gateway's rate limits, shared by the REST API and the gRPC port;
/// see the [module docs](self). Clones share the buckets.
#[derive(Clone)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    inner: Arc<Limiters<C>>,
}

struct Limiters<C: Clock> {
    anonymous: Policy<IpAddr, C>,
    user: Policy<Uuid, C>,
    login: Policy<IpAddr, C>,
    trust_forwarded_for: bool,
    /// Streams open now, per client.
    open_streams: Arc<Mutex<HashMap<StreamOwner, u32>>>,
}

/// Streams one client may hold open at once.
pub const MAX_OPEN_STREAMS: u32 = 16;

/// Whose open streams a stream counts against: a user, or an IP (its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StreamOwner {
    Client(IpAddr),
    User(Uuid),
}

/// One open stream of a client, given back when dropped (the stream ended
/// or its client went away).
#[derive(Debug)]
pub struct StreamSlot {
    open_streams: Arc<Mutex<HashMap<StreamOwner, u32>>>,
    owner: StreamOwner,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .open_streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.owner) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.owner);
            }
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("RateLimiter")
            .field("anonymous", &inner.anonymous.header)
            .field("user", &inner.user.header)
            .field("login", &inner.login.header)
            .field("trust_forwarded_for", &inner.trust_forwarded_for)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// The limits of `config`, on the monotonic clock.
    pub fn new(config: &RateLimits) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// The limits of `config` on `clock` (tests use governor's fake clock).
    pub fn with_clock(config: &RateLimits, clock: C) -> Self {
        let per_second =
            |rate: NonZeroU32, burst: NonZeroU32| Quota::per_second(rate).allow_burst(burst);
        let login = Quota::per_minute(config.login_per_minute).allow_burst(config.login_burst);
        Self {
            inner: Arc::new(Limiters {
                anonymous: Policy::new(
                    "anonymous",
                    per_second(config.anonymous_per_second, config.anonymous_burst),
                    clock.clone(),
                ),
                user: Policy::new(
                    "user",
                    per_second(config.user_per_second, config.user_burst),
                    clock.clone(),
                ),
                login: Policy::new("login", login, clock),
                trust_forwarded_for: config.trust_forwarded_for,
                open_streams: Arc::default(),
            }),
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A slot for one more long-lived stream of `subject` (SSE, a watch),
    /// or `None` when it holds [`MAX_OPEN_STREAMS`] already: a stream
    /// outlives the request the buckets counted, so they do not bound how
    /// many a client keeps open.
    pub fn open_stream(&self, subject: Subject) -> Option<StreamSlot> {
        let owner = match subject {
            Subject::User(id) => StreamOwner::User(id),
            Subject::Anonymous(ip) | Subject::Login(ip) => StreamOwner::Client(bucket_of(ip)),
        };
        let mut open = self
            .inner
            .open_streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(owner).or_insert(0);
        if *count >= MAX_OPEN_STREAMS {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            open_streams: Arc::clone(&self.inner.open_streams),
            owner,
        })
    }

    /// Counts one request against `subject`'s bucket.
    pub fn check(&self, subject: Subject) -> Decision {
        match subject {
            Subject::Anonymous(ip) => self.inner.anonymous.check(&bucket_of(ip)),
            Subject::User(id) => self.inner.user.check(&id),
            Subject::Login(ip) => self.inner.login.check(&bucket_of(ip)),
        }
    }

    /// The client's IP: the last `X-Forwarded-For` entry when trusted and
    /// present, else the peer's; the unspecified address when neither is
    /// known (such requests then share one bucket).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let forwarded = || {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()?
                .to_str()
                .ok()?
                .rsplit(',')
                .next()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        };
        self.inner
            .trust_forwarded_for
            .then(forwarded)
            .flatten()
            .or(peer.map(|peer| peer.ip()))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    /// Forgets clients whose buckets are full again; see the
    /// [module docs](self#memory).
    pub fn trim(&self) {
        let inner = &self.inner;
        inner.anonymous.trim();
        inner.user.trim();
        inner.login.trim();
    }

    /// Clients currently remembered, over all policies.
    pub fn tracked_keys(&self) -> usize {
        let inner = &self.inner;
        inner.anonymous.len() + inner.user.len() + inner.login.len()
    }

    /// Trims every `period` until `cancel` fires.
    pub async fn keep_trimmed(self, period: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {
                    self.trim();
                    tracing::trace!(keys = self.tracked_keys(), "rate limit buckets trimmed");
                }
            }
        }
    }

    /// Whose bucket a REST request is counted against.
    fn subject_of(&self, request: &Request) -> Subject {
        if request.method() == Method::POST && request.uri().path() == LOGIN_PATH {
            Subject::Login(self.request_ip(request))
        } else if let Some(caller) = request.extensions().get::<Caller>() {
            Subject::User(caller.user_id)
        } else {
            Subject::Anonymous(self.request_ip(request))
        }
    }

    /// [`client_ip`](Self::client_ip) of a REST request.
    fn request_ip(&self, request: &Request) -> IpAddr {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        self.client_ip(request.headers(), peer)
    }
}

/// IPv4 (also when IPv4-mapped) by address, IPv6 by /64.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Counts the request, refuses it with 429 when over the limit, else runs
/// `next`; sets the `RateLimit-Policy` / `RateLimit` headers on the
/// response either way. The edge middleware ([`crate::routes`]) runs this
/// after [`crate::auth::identify`], which has put the [`Caller`] (if any) in
/// the request's extensions.
pub async fn admit<C>(limiter: &RateLimiter<C>, request: Request, next: Next) -> Response
where
    C: Clock + Send + Sync + 'static,
{
    let decision = limiter.check(limiter.subject_of(&request));
    let mut response = match decision.retry_after() {
        None => next.run(request).await,
        Some(retry_after) => refuse(&decision, &request, retry_after),
    };
    decision.write_headers(response.headers_mut());
    response
}

/// Counts a token check against the client IP's `anonymous` bucket before
/// it is made (see [Tokens not verified yet](self#tokens-not-verified-yet));
/// returns the 429 to send when over the limit. [`crate::auth::identify`]
/// calls this for a token it has not verified yet, before checking it.
pub fn admit_token_check<C>(limiter: &RateLimiter<C>, request: &Request) -> Option<Response>
where
    C: Clock + Send + Sync + 'static,
{
    let decision = limiter.check(Subject::Anonymous(limiter.request_ip(request)));
    let retry_after = decision.retry_after()?;
    let mut response = refuse(&decision, request, retry_after);
    decision.write_headers(response.headers_mut());
    Some(response)
}

/// The 429 for a refused request, counted and logged.
fn refuse(decision: &Decision, request: &Request, retry_after: Duration) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    decision.record_refusal(route);
    tracing::info!(
        limiter = decision.policy(),
        route,
        retry_after = ?retry_after,
        "rate limited"
    );
    ApiError::RateLimited { retry_after }.into_response()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::middleware;
    use axum::routing::{get, post};
    use governor::clock::FakeRelativeClock;
    use http::{StatusCode, header};
    use tower::ServiceExt;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// 1/s with a burst of 3 everywhere; logins 6/min with a burst of 2.
    fn config() -> RateLimits {
        RateLimits {
            anonymous_per_second: nz(1),
            anonymous_burst: nz(3),
            user_per_second: nz(1),
            user_burst: nz(3),
            login_per_minute: nz(6),
            login_burst: nz(2),
            trust_forwarded_for: false,
        }
    }

    #[test]
    fn a_client_holds_at_most_its_share_of_open_streams() {
        let limiter = RateLimiter::new(&config());
        let user = Subject::User(Uuid::now_v7());
        let slots: Vec<_> = (0..MAX_OPEN_STREAMS)
            .map(|_| limiter.open_stream(user).expect("a slot"))
            .collect();
        assert!(limiter.open_stream(user).is_none(), "one too many");

        // Others are not affected; an address counts by its /64.
        assert!(limiter.open_stream(Subject::User(Uuid::now_v7())).is_some());
        let ip = |last: u16| {
            Subject::Anonymous(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 0, 1, 0, 0, 0, last,
            )))
        };
        let held: Vec<_> = (0..MAX_OPEN_STREAMS)
            .map(|n| limiter.open_stream(ip(n as u16)).expect("a slot"))
            .collect();
        assert!(limiter.open_stream(ip(999)).is_none(), "same /64");

        // A stream that ends gives its slot back.
        drop(slots);
        assert!(limiter.open_stream(user).is_some());
        drop(held);
        assert!(limiter.open_stream(ip(1)).is_some());
    }

    fn app(limiter: RateLimiter<FakeRelativeClock>) -> Router {
        async fn limit(
            State(limiter): State<RateLimiter<FakeRelativeClock>>,
            request: Request,
            next: Next,
        ) -> Response {
            admit(&limiter, request, next).await
        }
        Router::new()
            .route("/api/v1/products/{id}", get(|| async { "ok" }))
            .route(LOGIN_PATH, post(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(limiter, limit))
    }

    fn request(method: Method, path: &str, ip: [u8; 4], caller: Option<Uuid>) -> Request {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
        if let Some(user_id) = caller {
            request.extensions_mut().insert(Caller {
                user_id,
                roles: vec![],
            });
        }
        request
    }

    async fn send(app: &Router, request: Request) -> Response {
        app.clone().oneshot(request).await.unwrap()
    }

    fn product(ip: [u8; 4], caller: Option<Uuid>) -> Request {
        request(Method::GET, "/api/v1/products/42", ip, caller)
    }

    #[tokio::test]
    async fn within_the_burst_every_request_passes_and_learns_its_budget() {
        let app = app(RateLimiter::with_clock(
            &config(),
            FakeRelativeClock::default(),
        ));
        for remaining in (0..3).rev() {
            let response = send(&app, product([10, 0, 0, 1], None)).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()[&RATELIMIT_POLICY],
                "\"anonymous\";q=3;w=3"
            );
            let limit = response.headers()[&RATELIMIT].to_str().unwrap();
            assert!(
                limit.starts_with(&format!("\"anonymous\";r={remaining};t=")),
                "{limit}"
            );
        }
    }

    #[tokio::test]
    async fn a_burst_over_the_limit_is_refused_with_429_and_retry_after() {
        let clock = FakeRelativeClock::default();
        let app = app(RateLimiter::with_clock(&config(), clock.clone()));
        for _ in 0..3 {
            assert_eq!(
                send(&app, product([10, 0, 0, 1], None)).await.status(),
                StatusCode::OK
            );
        }
        let refused = send(&app, product([10, 0, 0, 1], None)).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = refused.headers();
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(headers[&RATELIMIT_POLICY], "\"anonymous\";q=3;w=3");
        assert_eq!(headers[&RATELIMIT], "\"anonymous\";r=0;t=1");
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "RATE_LIMITED");
        assert_eq!(problem["status"], 429);

        // Another client is not affected; the first is admitted again once
        // one request's worth of quota has come back.
        assert_eq!(
            send(&app, product([10, 0, 0, 2], None)).await.status(),
            StatusCode::OK
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            send(&app, product([10, 0, 0, 1], None)).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn users_have_buckets_of_their_own_wherever_they_connect_from() {
        let app = app(RateLimiter::with_clock(
            &config(),
            FakeRelativeClock::default(),
        ));
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        for _ in 0..3 {
            assert_eq!(
                send(&app, product([10, 0, 0, 1], Some(alice)))
                    .await
                    .status(),
                StatusCode::OK
            );
        }
        // Alice is out of quota, from any address.
        let refused = send(&app, product([10, 0, 0, 9], Some(alice))).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[&RATELIMIT], "\"user\";r=0;t=1");
        // Bob behind the same NAT, and anonymous requests from there, are not.
        let response = send(&app, product([10, 0, 0, 1], Some(bob))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[&RATELIMIT_POLICY], "\"user\";q=3;w=3");
        assert_eq!(
            send(&app, product([10, 0, 0, 1], None)).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn login_is_stricter_and_counted_apart() {
        let clock = FakeRelativeClock::default();
        let app = app(RateLimiter::with_clock(&config(), clock.clone()));
        let login = || request(Method::POST, LOGIN_PATH, [10, 0, 0, 1], None);
        for _ in 0..2 {
            assert_eq!(send(&app, login()).await.status(), StatusCode::OK);
        }
        let refused = send(&app, login()).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        // 6 per minute: one attempt comes back every 10 s.
        assert_eq!(refused.headers()[header::RETRY_AFTER], "10");
        assert_eq!(refused.headers()[&RATELIMIT_POLICY], "\"login\";q=2;w=20");
        assert_eq!(refused.headers()[&RATELIMIT], "\"login\";r=0;t=10");
        // The same IP still browses: its anonymous bucket is untouched.
        assert_eq!(
            send(&app, product([10, 0, 0, 1], None)).await.status(),
            StatusCode::OK
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            send(&app, login()).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(send(&app, login()).await.status(), StatusCode::OK);
    }

    #[test]
    fn refusals_are_counted_by_route_and_limiter() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let app = app(RateLimiter::with_clock(
            &config(),
            FakeRelativeClock::default(),
        ));
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                for _ in 0..5 {
                    send(&app, product([10, 0, 0, 1], None)).await;
                }
            });
        });
        let counted: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == RATE_LIMITED_TOTAL)
            .map(|(key, _, _, value)| {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|label| format!("{}={}", label.key(), label.value()))
                    .collect();
                (labels, value)
            })
            .collect();
        assert_eq!(
            counted,
            vec![(
                vec![
                    "route=/api/v1/products/{id}".to_owned(),
                    "limiter=anonymous".to_owned()
                ],
                DebugValue::Counter(2)
            )]
        );
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(&config(), clock.clone());
        for n in 0..100u8 {
            limiter.check(Subject::Anonymous(IpAddr::from([10, 0, 1, n])));
            limiter.check(Subject::User(Uuid::now_v7()));
        }
        limiter.check(Subject::Login(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(limiter.tracked_keys(), 201);
        limiter.trim();
        assert_eq!(limiter.tracked_keys(), 201, "buckets still refilling");
        clock.advance(Duration::from_secs(3));
        limiter.check(Subject::Anonymous(IpAddr::from([10, 0, 2, 1])));
        limiter.trim();
        // The login bucket takes 10 s to refill; the fresh client stays.
        assert_eq!(limiter.tracked_keys(), 2);
        // An entry goes one replenish period after its bucket is whole.
        clock.advance(Duration::from_secs(17));
        limiter.trim();
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn client_ips_are_grouped_and_forwarded_for_only_when_trusted() {
        let peer = SocketAddr::from(([192, 0, 2, 1], 1234));
        // The client claimed 10.0.0.1; the proxy appended what it saw.
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 203.0.113.7"),
        );
        let untrusting = RateLimiter::with_clock(&config(), FakeRelativeClock::default());
        assert_eq!(
            untrusting.client_ip(&headers, Some(peer)),
            IpAddr::from([192, 0, 2, 1])
        );
        let trusting = RateLimiter::with_clock(
            &RateLimits {
                trust_forwarded_for: true,
                ..config()
            },
            FakeRelativeClock::default(),
        );
        assert_eq!(
            trusting.client_ip(&headers, Some(peer)),
            IpAddr::from([203, 0, 113, 7])
        );
        // A proxy that adds its own header line instead of appending.
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.9"));
        assert_eq!(
            trusting.client_ip(&headers, Some(peer)),
            IpAddr::from([198, 51, 100, 9])
        );
        assert_eq!(
            trusting.client_ip(&HeaderMap::new(), None),
            IpAddr::from(Ipv4Addr::UNSPECIFIED)
        );

        // One /64 is one client; a mapped IPv4 address is that IPv4 address.
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_of(a), bucket_of(b));
        assert_ne!(bucket_of(a), bucket_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(bucket_of(mapped), IpAddr::from([192, 0, 2, 1]));
    }
}
