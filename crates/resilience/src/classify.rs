//! What a call's outcome means, and which requests may be sent twice.
//!
//! The layers are protocol-agnostic; three small traits carry the protocol
//! knowledge:
//!
//! - [`Classify`]: does this response or error count against the upstream's
//!   health (the circuit breaker), and is it worth retrying?
//! - [`Idempotent`]: may this request be sent again if the first attempt's
//!   fate is unknown?
//! - [`Replay`]: make a copy of a request for a retry.
//!
//! [`Http`] and [`Grpc`] implement the first two for `http` requests and
//! responses; any closure of the right shape implements them too.
//!
//! # The rules, and why
//!
//! A 4xx is the *caller's* fault: the upstream answered correctly, so it
//! never counts as a failure and is never retried (retrying cannot change the
//! answer). Breaker failures are the signs of a sick upstream: transport
//! errors, timeouts, any 5xx, gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED` and
//! `INTERNAL`. Only the *transient* ones are retried: transport errors and
//! timeouts, 502/503/504, gRPC `UNAVAILABLE` and `DEADLINE_EXCEEDED`. A 500
//! or `INTERNAL` is most often a bug that fails the same way again, so
//! retrying it only multiplies load.
//!
//! A request is retried only when sending it twice is harmless: the HTTP
//! methods RFC 9110 §9.2.2 defines as idempotent, or a request carrying an
//! `Idempotency-Key` to a path declared to deduplicate by it
//! ([`Http::deduplicates`], as Ferrishop's deposit route does). The key
//! alone proves nothing: a client may send one to a route that ignores it,
//! where a second attempt would act twice. gRPC has no
//! methods-with-semantics, so idempotent gRPC methods are listed explicitly.

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};

use crate::error::BoxError;

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What one call's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream did its job (this includes a 4xx: the caller's fault).
    Success,
    /// The upstream failed and trying again is unlikely to help.
    Failure,
    /// The upstream failed in a way that is often transient.
    RetryableFailure,
}

impl Outcome {
    /// Whether it counts against the upstream's health.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success)
    }

    /// Whether a retry may help.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::RetryableFailure)
    }
}

/// Classifies a call's result. The error side is boxed, as it is between
/// tower layers; it includes timeouts (`tower::timeout::error::Elapsed`).
pub trait Classify<Res> {
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self(result)
    }
}

/// Decides whether a request may safely be sent more than once.
pub trait Idempotent<Req> {
    fn is_idempotent(&self, request: &Req) -> bool;
}

impl<Req, F> Idempotent<Req> for F
where
    F: Fn(&Req) -> bool,
{
    fn is_idempotent(&self, request: &Req) -> bool {
        self(request)
    }
}

/// A request that can be copied for a retry.
///
/// `http::Request` is not `Clone` (its body usually is a stream). With a
/// body that is — `Bytes`, `Full<Bytes>`, an `Arc`'d value — the whole
/// request can be replayed: method, URI, version, headers, extensions and
/// body. Buffering a body into `Bytes` once, before the stack, is what makes
/// retries possible at all (see [`crate::grpc`] for gRPC).
pub trait Replay: Sized {
    /// A copy to send again, or `None` when this request cannot be replayed.
    fn replay(&self) -> Option<Self>;
}

impl<B: Clone> Replay for http::Request<B> {
    fn replay(&self) -> Option<Self> {
        let mut copy = http::Request::new(self.body().clone());
        *copy.method_mut() = self.method().clone();
        *copy.uri_mut() = self.uri().clone();
        *copy.version_mut() = self.version();
        *copy.headers_mut() = self.headers().clone();
        *copy.extensions_mut() = self.extensions().clone();
        Some(copy)
    }
}

/// HTTP/1.1 and HTTP/2 REST semantics; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Http {
    /// Paths whose requests with an `Idempotency-Key` the upstream
    /// deduplicates, whatever their method.
    deduplicated: Arc<HashSet<String>>,
}

impl Http {
    /// Only the idempotent methods may be retried until a path is declared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that the upstream deduplicates requests to `path` (exact)
    /// by their `Idempotency-Key`: such requests may then be retried.
    #[must_use]
    pub fn deduplicates(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.deduplicated).insert(path.into());
        self
    }

    /// The classification of a response status.
    pub fn classify_status(status: StatusCode) -> Outcome {
        match status {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Outcome::RetryableFailure,
            status if status.is_server_error() => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

impl<B> Classify<http::Response<B>> for Http {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(response) => Http::classify_status(response.status()),
            // No response at all: connection refused or reset, a timeout.
            Err(_) => Outcome::RetryableFailure,
        }
    }
}

impl<B> Idempotent<http::Request<B>> for Http {
    fn is_idempotent(&self, request: &http::Request<B>) -> bool {
        matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || (request.headers().contains_key(IDEMPOTENCY_KEY)
            && self.deduplicated.contains(request.uri().path()))
    }
}

/// gRPC semantics over `http` requests and responses (what a tonic channel
/// carries); see the [module docs](self).
///
/// The status is read from the response *headers*: that is where a server
/// puts it when it fails before sending a message (a "trailers-only"
/// response, which is how tonic answers a handler's `Err(Status)` and how
/// proxies answer when the backend is gone). A status that only arrives in
/// the trailers, after a streamed body, is beyond a layer that completes when
/// the response head arrives, and such calls count as successes here.
///
/// Methods are not idempotent unless listed: gRPC has no `GET`.
#[derive(Debug, Clone, Default)]
pub struct Grpc {
    /// Full method paths (`/package.Service/Method`) that may be retried.
    methods: Arc<HashSet<String>>,
    /// Services (`package.Service`) all of whose methods may be retried.
    services: Arc<HashSet<String>>,
}

/// gRPC status codes this crate acts on.
mod code {
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

impl Grpc {
    /// No method is idempotent until declared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares one method idempotent, by its full path
    /// (`/ferrishop.inventory.v1.InventoryService/GetProduct`).
    #[must_use]
    pub fn idempotent_method(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.methods).insert(path.into());
        self
    }

    /// Declares every method of a service idempotent
    /// (`ferrishop.inventory.v1.InventoryService`), for services whose
    /// mutations are all keyed (the inventory's reservations are idempotent
    /// by saga id).
    #[must_use]
    pub fn idempotent_service(mut self, service: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.services).insert(service.into());
        self
    }

    /// The classification of a `grpc-status` code.
    pub fn classify_code(code: i32) -> Outcome {
        match code {
            code::UNAVAILABLE | code::DEADLINE_EXCEEDED => Outcome::RetryableFailure,
            code::INTERNAL => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

impl<B> Classify<http::Response<B>> for Grpc {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            // The channel failed: the call never got an answer.
            Err(_) => return Outcome::RetryableFailure,
        };
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<i32>().ok());
        match status {
            Some(code) => Grpc::classify_code(code),
            // No status in the headers: a proxy or a broken server answered
            // with plain HTTP. Judge by the HTTP status (gRPC's own mapping
            // makes 502/503/504 UNAVAILABLE).
            None => Http::classify_status(response.status()),
        }
    }
}

impl<B> Idempotent<http::Request<B>> for Grpc {
    fn is_idempotent(&self, request: &http::Request<B>) -> bool {
        let path = request.uri().path();
        if self.methods.contains(path) {
            return true;
        }
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map(|(service, _method)| service);
        service.is_some_and(|service| self.services.contains(service))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn response(status: u16) -> http::Response<()> {
        http::Response::builder().status(status).body(()).unwrap()
    }

    fn grpc_response(code: Option<&str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(200);
        if let Some(code) = code {
            builder = builder.header("grpc-status", code);
        }
        builder.body(()).unwrap()
    }

    fn request(method: Method, path: &str) -> http::Request<Bytes> {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::new())
            .unwrap()
    }

    #[test]
    fn http_4xx_is_never_a_failure_5xx_always_is_and_only_502_503_504_are_retried() {
        for status in [200, 201, 204, 301, 400, 401, 404, 409, 422, 429] {
            assert_eq!(
                Http::new().classify(Ok(&response(status))),
                Outcome::Success,
                "{status}"
            );
        }
        for status in [500, 501, 505] {
            assert_eq!(
                Http::new().classify(Ok(&response(status))),
                Outcome::Failure,
                "{status}"
            );
        }
        for status in [502, 503, 504] {
            let outcome = Http::new().classify(Ok(&response(status)));
            assert!(outcome.is_failure() && outcome.is_retryable(), "{status}");
        }
        let transport: BoxError = "connection reset".into();
        assert_eq!(
            Classify::<http::Response<()>>::classify(&Http::new(), Err(&transport)),
            Outcome::RetryableFailure
        );
    }

    #[test]
    fn http_idempotency_follows_the_method_or_a_deduplicated_idempotency_key() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(
                Http::new().is_idempotent(&request(method.clone(), "/x")),
                "{method}"
            );
        }
        assert!(!Http::new().is_idempotent(&request(Method::POST, "/x")));
        assert!(!Http::new().is_idempotent(&request(Method::PATCH, "/x")));

        let keyed = |path| {
            let mut keyed = request(Method::POST, path);
            keyed
                .headers_mut()
                .insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("k-1"));
            keyed
        };
        let deposits = Http::new().deduplicates("/api/v1/wallet/deposits");
        assert!(deposits.is_idempotent(&keyed("/api/v1/wallet/deposits")));
        // A key sent where nothing deduplicates by it proves nothing.
        assert!(!deposits.is_idempotent(&keyed("/api/v1/auth/refresh")));
        assert!(!Http::new().is_idempotent(&keyed("/api/v1/wallet/deposits")));
        assert!(!deposits.is_idempotent(&request(Method::POST, "/api/v1/wallet/deposits")));
    }

    #[test]
    fn grpc_codes_classify_and_plain_http_errors_fall_back_to_http_rules() {
        assert_eq!(
            Grpc::new().classify(Ok(&grpc_response(None))),
            Outcome::Success
        );
        assert_eq!(
            Grpc::new().classify(Ok(&grpc_response(Some("0")))),
            Outcome::Success
        );
        // NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION: the caller's.
        for code in ["5", "3", "6", "9"] {
            assert_eq!(
                Grpc::new().classify(Ok(&grpc_response(Some(code)))),
                Outcome::Success
            );
        }
        assert_eq!(
            Grpc::new().classify(Ok(&grpc_response(Some("13")))),
            Outcome::Failure
        );
        for code in ["14", "4"] {
            assert_eq!(
                Grpc::new().classify(Ok(&grpc_response(Some(code)))),
                Outcome::RetryableFailure
            );
        }
        assert_eq!(
            Grpc::new().classify(Ok(&response(503))),
            Outcome::RetryableFailure
        );
    }

    #[test]
    fn grpc_methods_are_idempotent_only_when_declared() {
        let get = request(Method::POST, "/ferrishop.order.v1.OrderService/GetOrder");
        let place = request(Method::POST, "/ferrishop.order.v1.OrderService/PlaceOrder");
        let reserve = request(
            Method::POST,
            "/ferrishop.inventory.v1.InventoryService/ReserveStock",
        );

        let grpc = Grpc::new()
            .idempotent_method("/ferrishop.order.v1.OrderService/GetOrder")
            .idempotent_service("ferrishop.inventory.v1.InventoryService");
        assert!(grpc.is_idempotent(&get));
        assert!(!grpc.is_idempotent(&place));
        assert!(grpc.is_idempotent(&reserve));
        assert!(!Grpc::new().is_idempotent(&get));
    }

    #[test]
    fn replay_copies_the_whole_request() {
        let mut original = request(Method::PUT, "http://user:8081/api/v1/users/1");
        *original.body_mut() = Bytes::from_static(b"{}");
        original
            .headers_mut()
            .insert("x-request-id", http::HeaderValue::from_static("r-1"));
        original.extensions_mut().insert(7_u32);

        let copy = original.replay().unwrap();
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), original.uri());
        assert_eq!(copy.headers(), original.headers());
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        assert_eq!(copy.body(), original.body());
    }
}
