//! The public gRPC port: the services' public methods, forwarded.
//!
//! # Why a generic proxy
//!
//! The gateway does not implement `OrderService` & co. itself (decode each
//! request, call the service's client, re-encode the answer). It forwards
//! the raw HTTP/2 gRPC call — request frames, response frames, trailers —
//! to the service's channel, after deciding from the method path alone
//! whether and as whom it may pass. That is:
//!
//! - **faithful**: messages, status codes, `x-error-code` metadata and rich
//!   error details reach the client byte for byte, streams (`ListProducts`,
//!   `WatchStock`, `WatchOrder`) flow message by message as the service
//!   sends them, and a field added to a proto needs no gateway change;
//! - **cheap**: no protobuf decoding or re-encoding, the request message
//!   read once (by the channel, before the call takes an upstream slot, and
//!   kept so that an idempotent call can be retried), the response body
//!   streamed through untouched;
//! - **safe by default**: only the methods in each service's allow-list
//!   pass. A method added to a proto is refused at the gateway until it is
//!   listed here with its audience.
//!
//! The price is that the gateway cannot look inside a request. Nothing
//! here needs to: every user-facing RPC takes its caller from the
//! `x-user-id` metadata the gateway sets (DESIGN.md), never from a request
//! field, and the services enforce ownership themselves (another user's
//! order is NOT_FOUND; `GetUser` of someone else is NOT_FOUND for a
//! non-admin, see `user.proto`).
//!
//! # Rules per call
//!
//! 1. The path must be exactly `/<service>/<method>` with the method
//!    allow-listed: an internal method (`ReserveStock`, `BatchGetUsers`,
//!    ...) is `PERMISSION_DENIED`, anything else `UNIMPLEMENTED`.
//! 2. Auth, as on REST: a bearer token in the `authorization` metadata is
//!    verified with the same [`Keys`]; a bad one is `UNAUTHENTICATED` even
//!    on anonymous methods, a missing one on any method but the catalogue
//!    reads. Admin methods want the `admin` role (`PERMISSION_DENIED`).
//! 3. The rate limit, the REST API's own [`RateLimiter`] (so REST and gRPC
//!    share one budget per user or IP): per user with a caller, else per
//!    peer IP. A refusal is `RESOURCE_EXHAUSTED` with `x-error-code:
//!    RATE_LIMITED`, `retry-after` and the `ratelimit`/`ratelimit-policy`
//!    metadata, and a `google.rpc.RetryInfo` detail.
//! 4. Identity: the client's `x-user-id` / `x-user-roles` are dropped, the
//!    verified caller's set in their place; the token itself stays at the
//!    edge. `x-request-id` is kept or generated. The client's
//!    `grpc-timeout` is not forwarded: the gateway's own timeouts bound the
//!    upstream call, so a client's short deadline never counts as the
//!    upstream failing.
//! 5. A watch (`WatchStock`, `WatchOrder`) holds one of the caller's open
//!    streams while it lasts; beyond [`MAX_OPEN_STREAMS`] it is
//!    `RESOURCE_EXHAUSTED` with `x-error-code: RATE_LIMITED`.
//!
//! Every refusal is a trailers-only response (`Status::into_http`), like a
//! tonic handler's error. When the gateway shuts down, the streams it is
//! forwarding end with `UNAVAILABLE` in their trailers ([`EndsOnShutdown`]):
//! tonic's graceful shutdown waits for open streams, and a watch stream
//! never ends by itself. The upstream is the one the REST routes use
//! ([`GrpcChannels`](crate::upstreams::GrpcChannels)), so breakers,
//! bulkheads and retries of idempotent methods apply to both.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use bytes::Bytes;
use http::{HeaderMap, header::AUTHORIZATION};
use http_body::Frame;
use proto::ferrishop::{inventory, order, payment, user};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Service, ServiceExt};

use crate::auth::{Caller, Keys, Presented, TokenError, vouch_for};
use crate::rate_limit::{
    Decision, MAX_OPEN_STREAMS, RATELIMIT, RATELIMIT_POLICY, RateLimiter, StreamSlot, Subject,
};
use crate::upstreams::GrpcUpstream;

/// Who may call a method through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a caller with a valid token is still identified.
    Anonymous,
    /// A verified caller.
    User,
    /// A verified caller with the `admin` role.
    Admin,
    /// Nobody: service-to-service only.
    Internal,
}

/// A service exposed on the public port: its name and allow-list.
pub trait PublicService: Send + Sync + 'static {
    /// The full gRPC service name, e.g. `ferrishop.order.v1.OrderService`.
    const NAME: &'static str;
    /// Every method of the service with its audience; methods not listed
    /// are answered `UNIMPLEMENTED`.
    const METHODS: &'static [(&'static str, Access)];
}

/// `ferrishop.order.v1.OrderService`: the caller's orders; sagas for admins.
#[derive(Debug)]
pub enum OrderApi {}

impl PublicService for OrderApi {
    const NAME: &'static str = order::v1::order_service_server::SERVICE_NAME;
    const METHODS: &'static [(&'static str, Access)] = &[
        ("PlaceOrder", Access::User),
        ("GetOrder", Access::User),
        ("ListOrders", Access::User),
        ("CancelOrder", Access::User),
        ("WatchOrder", Access::User),
        ("ListSagas", Access::Admin),
    ];
}

/// `ferrishop.inventory.v1.InventoryService`: catalogue reads for anyone,
/// catalogue changes for admins; the saga's reservation calls never.
#[derive(Debug)]
pub enum InventoryApi {}

impl PublicService for InventoryApi {
    const NAME: &'static str = inventory::v1::inventory_service_server::SERVICE_NAME;
    const METHODS: &'static [(&'static str, Access)] = &[
        ("GetProduct", Access::Anonymous),
        ("ListProducts", Access::Anonymous),
        ("Quote", Access::Anonymous),
        ("WatchStock", Access::Anonymous),
        ("CreateProduct", Access::Admin),
        ("Restock", Access::Admin),
        ("ReserveStock", Access::Internal),
        ("CommitReservation", Access::Internal),
        ("ReleaseReservation", Access::Internal),
    ];
}

/// `ferrishop.payment.v1.PaymentService`: the caller's own wallet.
#[derive(Debug)]
pub enum PaymentApi {}

impl PublicService for PaymentApi {
    const NAME: &'static str = payment::v1::payment_service_server::SERVICE_NAME;
    const METHODS: &'static [(&'static str, Access)] = &[
        ("GetAccount", Access::User),
        ("Deposit", Access::User),
        ("ListTransactions", Access::User),
    ];
}

/// `ferrishop.user.v1.UserService`: the caller's own profile. `GetUser`
/// always carries the caller's `x-user-id`, so the user service answers a
/// non-admin's request for anyone else with NOT_FOUND; without it the
/// service would take the call for an internal one that may read any user,
/// which is why no method here is ever forwarded anonymously.
#[derive(Debug)]
pub enum UserApi {}

impl PublicService for UserApi {
    const NAME: &'static str = user::v1::user_service_server::SERVICE_NAME;
    const METHODS: &'static [(&'static str, Access)] = &[
        ("GetUser", Access::User),
        ("BatchGetUsers", Access::Internal),
    ];
}

/// What every proxied call is checked against: token keys and rate limits;
/// and when its response must end: at shutdown.
#[derive(Debug, Clone)]
pub struct Edge {
    keys: Keys,
    limiter: RateLimiter,
    shutdown: CancellationToken,
}

impl Edge {
    pub fn new(keys: Keys, limiter: RateLimiter, shutdown: CancellationToken) -> Self {
        Self {
            keys,
            limiter,
            shutdown,
        }
    }

    /// The proxy of `P`, forwarding to `upstream`.
    pub fn proxy<P: PublicService, S>(&self, upstream: S) -> Proxy<P, S> {
        Proxy {
            upstream,
            edge: self.clone(),
            service: PhantomData,
        }
    }

    pub fn order(&self, upstream: GrpcUpstream) -> Proxy<OrderApi> {
        self.proxy(upstream)
    }

    pub fn inventory(&self, upstream: GrpcUpstream) -> Proxy<InventoryApi> {
        self.proxy(upstream)
    }

    pub fn payment(&self, upstream: GrpcUpstream) -> Proxy<PaymentApi> {
        self.proxy(upstream)
    }

    pub fn user(&self, upstream: GrpcUpstream) -> Proxy<UserApi> {
        self.proxy(upstream)
    }

    /// Applies the rules of the [module docs](self) to a call of `P`;
    /// returns the request to forward, or the status to answer with.
    async fn admit<P: PublicService>(
        &self,
        mut request: http::Request<Body>,
    ) -> Result<(http::Request<Body>, Subject), Status> {
        let path = request.uri().path().to_owned();
        // Exactly `/<service>/<method>`: nothing before or between.
        let method = path
            .strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(P::NAME))
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or_default();
        let access = P::METHODS
            .iter()
            .find(|(name, _)| *name == method)
            .map(|(_, access)| *access)
            .ok_or_else(|| {
                Status::unimplemented(format!("{} has no method {method:?}", P::NAME))
            })?;
        if access == Access::Internal {
            return Err(refusal(
                Code::PermissionDenied,
                "FORBIDDEN",
                format!("{path} is not part of the public API"),
            ));
        }

        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let caller = self.identify(request.headers(), peer, &path).await?;
        match (access, &caller) {
            (Access::Anonymous, _) => {}
            (_, None) => {
                return Err(refusal(
                    Code::Unauthenticated,
                    "UNAUTHENTICATED",
                    format!("{path} needs a bearer token in the authorization metadata"),
                ));
            }
            (Access::Admin, Some(caller)) if !caller.is_admin() => {
                return Err(refusal(
                    Code::PermissionDenied,
                    "FORBIDDEN",
                    format!("{path} needs the {:?} role", auth::ADMIN_ROLE),
                ));
            }
            _ => {}
        }

        let subject = match &caller {
            Some(caller) => Subject::User(caller.user_id),
            None => Subject::Anonymous(self.limiter.client_ip(request.headers(), peer)),
        };
        let decision = self.limiter.check(subject);
        if let Some(retry_after) = decision.retry_after() {
            return Err(rate_limited(&decision, &path, retry_after));
        }

        set_identity(request.headers_mut(), caller.as_ref());
        // The gateway's own timeouts bound the upstream call. A client's
        // deadline forwarded would expire there as the gateway's failure,
        // counted against the upstream's breaker; the client's cancellation
        // ends the call as well.
        request.headers_mut().remove("grpc-timeout");
        Ok((request, subject))
    }

    /// A slot for the stream `method` opens if it is a watch (which lasts
    /// as long as the client wants), `None` for other methods; refused when
    /// the caller holds all its open streams.
    fn stream_slot(&self, method: &str, subject: Subject) -> Result<Option<StreamSlot>, Status> {
        if !WATCHES.contains(&method) {
            return Ok(None);
        }
        self.limiter.open_stream(subject).map(Some).ok_or_else(|| {
            refusal(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                format!("at most {MAX_OPEN_STREAMS} streams open at once"),
            )
        })
    }

    /// The caller named by the `authorization` metadata, if any. A token
    /// not verified yet counts against the client's IP first, as on the
    /// REST port (see `rate_limit`'s docs).
    async fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        path: &str,
    ) -> Result<Option<Caller>, Status> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Ok(None);
        };
        let authorization = Some(value.to_str().unwrap_or("\u{0}"));
        let verified = match self.keys.presented(authorization) {
            Ok(Presented::Verified(claims)) => Ok(claims),
            Ok(Presented::Unverified(token)) => {
                let client_ip = self.limiter.client_ip(headers, peer);
                let decision = self.limiter.check(Subject::Anonymous(client_ip));
                if let Some(retry_after) = decision.retry_after() {
                    return Err(rate_limited(&decision, path, retry_after));
                }
                self.keys.check(token).await
            }
            Err(error) => Err(error),
        };
        match verified {
            Ok(claims) => Ok(Some(Caller::from(claims))),
            Err(error @ TokenError::KeysUnavailable) => Err(refusal(
                Code::Unavailable,
                "UPSTREAM_UNAVAILABLE",
                error.to_string(),
            )),
            Err(error) => {
                tracing::info!(reason = error.kind(), %error, "token refused");
                Err(refusal(
                    Code::Unauthenticated,
                    "UNAUTHENTICATED",
                    error.to_string(),
                ))
            }
        }
    }
}

/// `RESOURCE_EXHAUSTED` for a refused call, counted and logged, with the
/// wait as `RetryInfo`, `retry-after` and the rate-limit headers.
fn rate_limited(decision: &Decision, path: &str, retry_after: Duration) -> Status {
    decision.record_refusal(path);
    tracing::info!(limiter = decision.policy(), route = %path, ?retry_after, "rate limited");
    let mut status = Status::with_error_details(
        Code::ResourceExhausted,
        format!("rate limit exceeded; retry in {retry_after:?}"),
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    let metadata = status.metadata_mut();
    metadata.insert(
        proto::metadata::ERROR_CODE,
        MetadataValue::from_static("RATE_LIMITED"),
    );
    metadata.insert(
        "retry-after",
        MetadataValue::from(platform::problem::retry_after_secs(retry_after)),
    );
    let mut headers = HeaderMap::new();
    decision.write_headers(&mut headers);
    for name in [&RATELIMIT_POLICY, &RATELIMIT] {
        if let Some(value) = headers
            .get(name)
            .and_then(|value| MetadataValue::try_from(value.as_bytes()).ok())
        {
            metadata.insert(name.as_str(), value);
        }
    }
    status
}

/// A status with the stable code services put in `x-error-code`.
fn refusal(code: Code, error_code: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        proto::metadata::ERROR_CODE,
        MetadataValue::from_static(error_code),
    );
    status
}

/// The verified identity, and a request id when the client sent none the
/// gateway keeps.
fn set_identity(headers: &mut HeaderMap, caller: Option<&Caller>) {
    vouch_for(caller, headers);
    if !headers
        .get("x-request-id")
        .is_some_and(crate::routes::usable_request_id)
        && let Some(id) = crate::routes::new_request_id()
    {
        headers.insert("x-request-id", id);
    }
}

/// The methods whose stream lasts as long as the client wants: each holds
/// one of the caller's open-stream slots ([`RateLimiter::open_stream`]).
const WATCHES: [&str; 2] = ["WatchStock", "WatchOrder"];

/// The tower service registered for `P` on the gRPC port; see the
/// [module docs](self).
pub struct Proxy<P, S = GrpcUpstream> {
    upstream: S,
    edge: Edge,
    service: PhantomData<fn() -> P>,
}

impl<P, S: Clone> Clone for Proxy<P, S> {
    fn clone(&self) -> Self {
        Self {
            upstream: self.upstream.clone(),
            edge: self.edge.clone(),
            service: PhantomData,
        }
    }
}

impl<P: PublicService, S> std::fmt::Debug for Proxy<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("service", &P::NAME).finish()
    }
}

impl<P: PublicService, S> NamedService for Proxy<P, S> {
    const NAME: &'static str = P::NAME;
}

impl<P, S, B> Service<http::Request<Body>> for Proxy<P, S>
where
    P: PublicService,
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Status>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The upstream's readiness is awaited per call, after the checks:
        // a refused call never waits for (or occupies) the upstream.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let upstream = self.upstream.clone();
        let edge = self.edge.clone();
        Box::pin(async move {
            let admitted = async {
                let (request, subject) = edge.admit::<P>(request).await?;
                let method = request.uri().path().rsplit('/').next().unwrap_or_default();
                let slot = edge.stream_slot(method, subject)?;
                Ok::<_, Status>((request, slot))
            };
            let response = match admitted.await {
                Ok((request, slot)) => match upstream.oneshot(request).await {
                    Ok(response) => response.map(|body| {
                        Body::new(EndsOnShutdown::new(
                            Body::new(body),
                            edge.shutdown.clone(),
                            slot,
                        ))
                    }),
                    Err(status) => status.into_http(),
                },
                Err(status) => status.into_http(),
            };
            Ok(response)
        })
    }
}

/// A forwarded response body that ends when `shutdown` fires: with the
/// trailers `grpc-status: UNAVAILABLE` (a client retries or reconnects to
/// another gateway), unless the upstream ended it first.
pub struct EndsOnShutdown {
    inner: Body,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    /// The caller's open-stream slot a watch holds while it lasts.
    _slot: Option<StreamSlot>,
}

impl EndsOnShutdown {
    fn new(inner: Body, shutdown: CancellationToken, slot: Option<StreamSlot>) -> Self {
        Self {
            inner,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            ended: false,
            _slot: slot,
        }
    }
}

impl HttpBody for EndsOnShutdown {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let status = Status::unavailable("the gateway is shutting down");
            let mut trailers = HeaderMap::new();
            if status.add_header(&mut trailers).is_ok() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use auth::{Claims, SigningKey};
    use axum::routing::get;

    use super::*;
    use crate::auth::KeysConfig;
    use crate::config::RateLimits;
    use http::HeaderValue;
    use uuid::Uuid;

    /// A fake service that answers OK with the identity it was given, as
    /// response headers, and counts its calls.
    #[derive(Clone, Default)]
    struct Echo {
        calls: Arc<AtomicUsize>,
    }

    impl Service<http::Request<Body>> for Echo {
        type Response = http::Response<Body>;
        type Error = Status;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut response = http::Response::new(Body::empty());
            for name in [
                proto::metadata::USER_ID,
                proto::metadata::USER_ROLES,
                "authorization",
                "x-request-id",
                "grpc-timeout",
            ] {
                if let Some(value) = request.headers().get(name) {
                    response.headers_mut().insert(
                        format!("seen-{name}").parse::<http::HeaderName>().unwrap(),
                        value.clone(),
                    );
                }
            }
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("0"));
            Box::pin(async move { Ok(response) })
        }
    }

    struct Fixture {
        edge: Edge,
        signing: SigningKey,
        _jwks: tokio::task::JoinHandle<()>,
    }

    impl Fixture {
        /// Keys served by a local JWKS endpoint; a user burst of 2.
        async fn new() -> Self {
            let signing = SigningKey::generate().unwrap();
            let document = serde_json::to_value(auth::jwks([signing.public_key()])).unwrap();
            let app = axum::Router::new().route(
                auth::JWKS_PATH,
                get(move || {
                    let document = document.clone();
                    async move { axum::Json(document) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let jwks = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            let keys = Keys::new(KeysConfig {
                jwks_url: format!("http://{addr}{}", auth::JWKS_PATH),
                issuer: auth::DEFAULT_ISSUER.into(),
                audience: auth::DEFAULT_AUDIENCE.into(),
                refresh_interval: Duration::from_secs(10),
            })
            .unwrap();
            keys.refresh().await.unwrap();
            let n = |n| NonZeroU32::new(n).unwrap();
            let limiter = RateLimiter::new(&RateLimits {
                anonymous_per_second: n(1),
                anonymous_burst: n(2),
                user_per_second: n(1),
                user_burst: n(2),
                login_per_minute: n(1),
                login_burst: n(1),
                trust_forwarded_for: false,
            });
            Self {
                edge: Edge::new(keys, limiter, CancellationToken::new()),
                signing,
                _jwks: jwks,
            }
        }

        fn token(&self, user: Uuid, roles: &[&str]) -> String {
            let now = chrono::Utc::now().timestamp();
            let claims = Claims {
                sub: user,
                roles: roles.iter().map(|&role| role.to_owned()).collect(),
                iat: now,
                exp: now + 300,
                iss: auth::DEFAULT_ISSUER.into(),
                aud: auth::DEFAULT_AUDIENCE.into(),
                jti: Uuid::now_v7(),
            };
            self.signing.sign(&claims).unwrap()
        }
    }

    fn call(path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> http::Request<Body> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .unwrap();
        if let Some(token) = token {
            request.headers_mut().insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        for (name, value) in extra {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(SocketAddr::from(([10, 0, 0, 1], 5000))),
        });
        request
    }

    async fn send<P: PublicService>(
        proxy: &Proxy<P, Echo>,
        request: http::Request<Body>,
    ) -> Result<HeaderMap, Status> {
        let response = proxy.clone().oneshot(request).await.unwrap();
        match Status::from_header_map(response.headers()) {
            Some(status) if status.code() != Code::Ok => Err(status),
            _ => Ok(response.headers().clone()),
        }
    }

    const PLACE_ORDER: &str = "/ferrishop.order.v1.OrderService/PlaceOrder";
    const GET_PRODUCT: &str = "/ferrishop.inventory.v1.InventoryService/GetProduct";

    #[tokio::test]
    async fn the_verified_caller_replaces_forged_identity_metadata() {
        let fixture = Fixture::new().await;
        let proxy = fixture.edge.proxy::<OrderApi, _>(Echo::default());
        let user = Uuid::now_v7();
        let token = fixture.token(user, &[]);
        let forged = [
            (
                proto::metadata::USER_ID,
                "0190b3a0-0000-7000-8000-000000000000",
            ),
            (proto::metadata::USER_ROLES, "admin"),
        ];
        let seen = send(&proxy, call(PLACE_ORDER, Some(&token), &forged))
            .await
            .unwrap();
        assert_eq!(seen["seen-x-user-id"], user.to_string().as_str());
        assert_eq!(seen["seen-x-user-roles"], "");
        assert!(seen.get("seen-authorization").is_none(), "token forwarded");
        assert!(seen.get("seen-x-request-id").is_some());
    }

    #[tokio::test]
    async fn user_methods_need_a_valid_token() {
        let fixture = Fixture::new().await;
        let upstream = Echo::default();
        let proxy = fixture.edge.proxy::<OrderApi, _>(upstream.clone());
        let missing = send(&proxy, call(PLACE_ORDER, None, &[]))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert_eq!(
            missing.metadata().get(proto::metadata::ERROR_CODE).unwrap(),
            "UNAUTHENTICATED"
        );
        let forged = send(&proxy, call(PLACE_ORDER, Some("not.a.token"), &[]))
            .await
            .unwrap_err();
        assert_eq!(forged.code(), Code::Unauthenticated);
        // An anonymous method with a bad token is refused too, as on REST.
        let catalogue = fixture.edge.proxy::<InventoryApi, _>(upstream.clone());
        let refused = send(&catalogue, call(GET_PRODUCT, Some("not.a.token"), &[]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn made_up_tokens_meet_the_address_limit_before_a_signature_check() {
        let fixture = Fixture::new().await;
        let catalogue = fixture.edge.proxy::<InventoryApi, _>(Echo::default());
        let token = fixture.token(Uuid::now_v7(), &[]);
        // Verified once: one of the address's two checks (a burst of 2).
        send(&catalogue, call(GET_PRODUCT, Some(&token), &[]))
            .await
            .unwrap();

        let mut codes = Vec::new();
        for n in 0..5 {
            let forged = format!("x.y.{n}");
            let refused = send(&catalogue, call(GET_PRODUCT, Some(&forged), &[]))
                .await
                .unwrap_err();
            codes.push(refused.code());
        }
        let checked = codes
            .iter()
            .filter(|code| **code == Code::Unauthenticated)
            .count();
        let limited = codes
            .iter()
            .filter(|code| **code == Code::ResourceExhausted)
            .count();
        // One check was left; a slow machine may refill one more.
        assert!(
            checked <= 2 && checked + limited == codes.len(),
            "{codes:?}"
        );

        // The verified token is no check: it still passes.
        send(&catalogue, call(GET_PRODUCT, Some(&token), &[]))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn catalogue_reads_are_anonymous_and_carry_no_identity() {
        let fixture = Fixture::new().await;
        let proxy = fixture.edge.proxy::<InventoryApi, _>(Echo::default());
        let seen = send(
            &proxy,
            call(GET_PRODUCT, None, &[(proto::metadata::USER_ID, "forged")]),
        )
        .await
        .unwrap();
        assert!(seen.get("seen-x-user-id").is_none());
    }

    #[tokio::test]
    async fn internal_admin_and_unknown_methods_are_refused_before_the_upstream() {
        let fixture = Fixture::new().await;
        let upstream = Echo::default();
        let inventory = fixture.edge.proxy::<InventoryApi, _>(upstream.clone());
        let customer = fixture.token(Uuid::now_v7(), &[]);
        let admin = fixture.token(Uuid::now_v7(), &[auth::ADMIN_ROLE]);

        let reserve = "/ferrishop.inventory.v1.InventoryService/ReserveStock";
        for token in [None, Some(customer.as_str()), Some(admin.as_str())] {
            let refused = send(&inventory, call(reserve, token, &[]))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied, "{token:?}");
        }
        let unknown = "/ferrishop.inventory.v1.InventoryService/DropTables";
        let refused = send(&inventory, call(unknown, None, &[]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unimplemented);

        let restock = "/ferrishop.inventory.v1.InventoryService/Restock";
        let refused = send(&inventory, call(restock, Some(&customer), &[]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 0);

        let seen = send(&inventory, call(restock, Some(&admin), &[]))
            .await
            .unwrap();
        assert_eq!(seen["seen-x-user-roles"], "admin");
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);

        let users = fixture.edge.proxy::<UserApi, _>(upstream.clone());
        let batch = "/ferrishop.user.v1.UserService/BatchGetUsers";
        let refused = send(&users, call(batch, Some(&admin), &[]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let get_user = "/ferrishop.user.v1.UserService/GetUser";
        let refused = send(&users, call(get_user, None, &[])).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn only_the_exact_path_of_a_listed_method_passes() {
        let fixture = Fixture::new().await;
        let upstream = Echo::default();
        let inventory = fixture.edge.proxy::<InventoryApi, _>(upstream.clone());
        for path in [
            "/ferrishop.inventory.v1.InventoryService/ReserveStock/GetProduct",
            "/ferrishop.inventory.v1.InventoryService/x/GetProduct",
            "/prefix/ferrishop.inventory.v1.InventoryService/GetProduct",
            "/ferrishop.inventory.v1.InventoryServiceX/GetProduct",
            "/GetProduct",
        ] {
            let refused = send(&inventory, call(path, None, &[])).await.unwrap_err();
            assert_eq!(refused.code(), Code::Unimplemented, "{path}");
        }
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 0);
        send(&inventory, call(GET_PRODUCT, None, &[]))
            .await
            .unwrap();
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_watch_beyond_the_open_streams_of_its_caller_is_refused() {
        let fixture = Fixture::new().await;
        // A watch that goes on until its client leaves.
        let watching = tower::service_fn(|_: http::Request<Body>| async {
            let frames = futures::stream::pending::<Result<Frame<Bytes>, Status>>();
            Ok::<_, Status>(http::Response::new(Body::new(
                http_body_util::StreamBody::new(frames),
            )))
        });
        let inventory = fixture.edge.proxy::<InventoryApi, _>(watching);
        let caller = Subject::Anonymous(IpAddr::from([10, 0, 0, 1]));
        let mut held: Vec<_> = (0..MAX_OPEN_STREAMS)
            .map(|_| fixture.edge.limiter.open_stream(caller).unwrap())
            .collect();
        let watch = "/ferrishop.inventory.v1.InventoryService/WatchStock";
        let response = inventory
            .clone()
            .oneshot(call(watch, None, &[]))
            .await
            .unwrap();
        let refused = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(
            refused.metadata().get(proto::metadata::ERROR_CODE).unwrap(),
            "RATE_LIMITED"
        );

        // A stream ends: the watch passes, and holds the slot while it lasts.
        held.pop();
        let response = inventory
            .clone()
            .oneshot(call(watch, None, &[]))
            .await
            .unwrap();
        assert!(Status::from_header_map(response.headers()).is_none());
        assert!(fixture.edge.limiter.open_stream(caller).is_none());
        drop(response);
        assert!(fixture.edge.limiter.open_stream(caller).is_some());
    }

    #[tokio::test]
    async fn the_clients_deadline_is_not_forwarded() {
        let fixture = Fixture::new().await;
        let inventory = fixture.edge.proxy::<InventoryApi, _>(Echo::default());
        let seen = send(
            &inventory,
            call(GET_PRODUCT, None, &[("grpc-timeout", "1n")]),
        )
        .await
        .unwrap();
        assert!(seen.get("seen-grpc-timeout").is_none(), "{seen:?}");
    }

    #[tokio::test]
    async fn over_the_limit_is_resource_exhausted_with_retry_info() {
        let fixture = Fixture::new().await;
        let proxy = fixture.edge.proxy::<OrderApi, _>(Echo::default());
        let token = fixture.token(Uuid::now_v7(), &[]);
        // A burst of 2 refilled at 1/s: ten calls in a row cannot all pass
        // (a slow machine may refill one or two between them).
        let mut refusals = Vec::new();
        for _ in 0..10 {
            if let Err(status) = send(&proxy, call(PLACE_ORDER, Some(&token), &[])).await {
                refusals.push(status);
            }
        }
        assert!(refusals.len() >= 5, "{refusals:?}");
        let refused = &refusals[0];
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let metadata = refused.metadata();
        assert_eq!(
            metadata.get(proto::metadata::ERROR_CODE).unwrap(),
            "RATE_LIMITED"
        );
        assert_eq!(metadata.get("retry-after").unwrap(), "1");
        assert_eq!(
            metadata.get("ratelimit-policy").unwrap(),
            "\"user\";q=2;w=2"
        );
        assert_eq!(metadata.get("ratelimit").unwrap(), "\"user\";r=0;t=1");
        let retry = refused.get_details_retry_info().unwrap();
        assert!(retry.retry_delay.unwrap() <= Duration::from_secs(1));

        // Another user is not affected.
        let other = fixture.token(Uuid::now_v7(), &[]);
        send(&proxy, call(PLACE_ORDER, Some(&other), &[]))
            .await
            .unwrap();
    }

    #[test]
    fn every_listed_method_exists_in_the_contract() {
        fn check<P: PublicService>() {
            let contract = proto::FILE_DESCRIPTOR_SET;
            assert!(
                contract
                    .windows(P::NAME.len())
                    .any(|w| w == P::NAME.as_bytes())
                    || {
                        let short = P::NAME.rsplit('.').next().unwrap();
                        contract.windows(short.len()).any(|w| w == short.as_bytes())
                    },
                "{}",
                P::NAME
            );
            for (method, _) in P::METHODS {
                assert!(
                    contract
                        .windows(method.len())
                        .any(|w| w == method.as_bytes()),
                    "{}/{method} is not in the protos",
                    P::NAME
                );
            }
        }
        check::<OrderApi>();
        check::<InventoryApi>();
        check::<PaymentApi>();
        check::<UserApi>();
    }
}
