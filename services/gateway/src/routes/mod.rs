//! The public REST API: DESIGN.md's route table, and the edge around it.
//!
//! Layers, outermost first (each request passes them in this order):
//!
//! 1. `x-request-id`: the client's, or a new UUID; echoed on the response,
//!    recorded on the request's span and sent upstream.
//! 2. CORS, then gzip compression of responses of [`COMPRESS_ABOVE`] bytes
//!    or more (or of unknown length), event streams excepted.
//! 3. The edge, one middleware ([`edge`]): the request id on the span, then
//!    [`auth::identify`] (a valid bearer token becomes a [`Caller`]; a bad
//!    one is refused with 401), then [`rate_limit::admit`] (the rate limit,
//!    per user when there is a caller, else per client IP).
//! 4. The body limit (1 MiB → 413) and the handler.
//!
//! Handlers are thin: read the request, call one upstream, translate the
//! answer. Errors become problem+json in [`ApiError`] alone.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderName, HeaderValue};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::auth::{self, Caller, Keys};
use crate::config::EdgeArgs;
use crate::error::ApiError;
use crate::rate_limit::{self, RateLimiter};
use crate::upstreams::Services;

pub mod admin;
pub mod catalogue;
pub mod dashboard;
pub mod events;
pub mod orders;
pub mod proxy;
pub mod translation;

/// Largest request body the gateway reads.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long a forwarded request's body may take to arrive once its headers
/// are in: a body that trickles in or stalls would otherwise hold a
/// connection and up to [`BODY_LIMIT`] of memory for as long as the client
/// liked.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Responses shorter than this go uncompressed. Below about a kilobyte a
/// response fits in one TCP segment either way and gzip saves next to
/// nothing (a 147-byte profile becomes 145 bytes, sent chunked instead of
/// with a Content-Length), while setting up a compressor for it cost five
/// times the rest of the proxied request (650k instructions instead of
/// 120k).
pub const COMPRESS_ABOVE: u64 = 1024;

/// The request id header, accepted from clients and generated otherwise.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach: [`Shared`], behind one `Arc`, since it is
/// cloned for every request (by each extractor and middleware reading it).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub services: Services,
    pub keys: Keys,
    pub settings: Settings,
    /// Rate limits, shared with the public gRPC port.
    pub rate_limiter: RateLimiter,
    /// NATS (order status notifications, fault flags): connects on first
    /// use, so the gateway serves while NATS is down.
    pub nats: messaging::Nats,
    /// Cancelled when the gateway shuts down: long-lived responses (order
    /// event streams) end then instead of holding the shutdown up.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Fixed settings handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `<prefix>.<order id>.status` is where order status changes are published.
    pub order_status_subject_prefix: String,
}

/// The REST API with its edge layers.
pub fn router(state: AppState, edge: &EdgeArgs) -> Router {
    let api = Router::new()
        .route("/api/v1/users", post(proxy::user))
        .route("/api/v1/auth/login", post(proxy::user))
        .route("/api/v1/auth/refresh", post(proxy::user))
        .route(
            "/api/v1/users/me",
            get(proxy::user_authenticated).patch(proxy::user_authenticated),
        )
        .route("/api/v1/wallet", get(proxy::payment_authenticated))
        .route(
            "/api/v1/wallet/deposits",
            post(proxy::payment_authenticated),
        )
        .route(
            "/api/v1/wallet/transactions",
            get(proxy::payment_authenticated),
        )
        .route(
            "/api/v1/wallet/payout-iban",
            put(proxy::payment_authenticated),
        )
        .route(
            "/api/v1/admin/wallets/{user_id}/{action}",
            post(proxy::payment_admin),
        )
        .route(
            "/api/v1/products",
            get(catalogue::list_products).post(catalogue::create_product),
        )
        .route("/api/v1/products/{id}", get(catalogue::get_product))
        .route("/api/v1/products/{id}/quote", get(catalogue::quote))
        .route("/api/v1/products/{id}/restock", post(catalogue::restock))
        .route(
            "/api/v1/orders",
            get(orders::list_orders).post(orders::place_order),
        )
        .route("/api/v1/orders/{id}", get(orders::get_order))
        .route("/api/v1/orders/{id}/cancel", post(orders::cancel_order))
        .route("/api/v1/orders/{id}/events", get(events::follow_order))
        .route("/api/v1/me/dashboard", get(dashboard::dashboard))
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/api/v1/admin/sagas", get(admin::list_sagas))
        .route(
            "/api/v1/admin/faults/{name}",
            put(admin::put_fault).delete(admin::delete_fault),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One `layer` call for the whole edge, outermost first: axum boxes
        // each call's service, and every request clones the route's
        // service, box by box (six calls cost some fifty allocations per
        // request).
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unusable_request_id)
                .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestId))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
                .layer(cors(&edge.cors_allowed_origins))
                .layer(compression())
                .layer(middleware::from_fn_with_state(state.clone(), self::edge))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        );
    api.with_state(state)
}

/// The edge's own work on every request, in one middleware (each layer
/// costs its own boxing and cloning per request): the request id on the
/// request's span (and so on its log lines), the caller
/// ([`auth::identify`], its token check counted against the client's IP
/// first when it costs a signature check: [`rate_limit::admit_token_check`]),
/// the rate limit ([`rate_limit::admit`]).
async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(id) = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
    {
        tracing::Span::current().record("request_id", id);
    }
    let admit_check =
        |request: &Request| rate_limit::admit_token_check(&state.rate_limiter, request);
    if let Err(refused) = auth::identify(&state.keys, &mut request, admit_check).await {
        return refused;
    }
    rate_limit::admit(&state.rate_limiter, request, next).await
}

/// The longest request id a client may choose: enough for any UUID, ULID
/// or trace-style id, not enough to bloat every log line of the request.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's `x-request-id` is kept: short, visible ASCII.
pub fn usable_request_id(id: &HeaderValue) -> bool {
    id.len() <= MAX_REQUEST_ID_LEN && id.as_bytes().iter().all(u8::is_ascii_graphic)
}

/// An `x-request-id` the gateway would not keep is replaced by a new one.
fn drop_unusable_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(&REQUEST_ID)
        .is_some_and(|id| !usable_request_id(id))
    {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Request ids for requests that come without one ([`new_request_id`]).
#[derive(Debug, Clone, Copy)]
struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        new_request_id().map(RequestId::new)
    }
}

/// A random (version 4) UUID, as tower-http's `MakeRequestUuid` makes, but
/// drawn from this thread's generator (`rand::rng`, seeded once) rather
/// than from the operating system for each request (a `getrandom` system
/// call every time). Request ids identify requests; they are no secret.
pub fn new_request_id() -> Option<HeaderValue> {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).ok()
}

/// gzip, as tower-http's default predicate has it (no gRPC, images or
/// event streams), for responses of [`COMPRESS_ABOVE`] bytes or more.
fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new().compress_when(
        SizeAbove::new(COMPRESS_ABOVE)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE),
    )
}

/// 404 problem+json for a path no route matches.
async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", request.uri().path()))
}

/// 405 problem+json.
async fn method_not_allowed(request: Request) -> Response {
    platform::problem::Problem::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            REQUEST_ID.clone(),
            http::header::LOCATION,
            http::header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ]);
    if origins.iter().any(|origin| origin == "*") {
        layer.allow_origin(Any)
    } else if origins.is_empty() {
        layer.allow_origin(AllowOrigin::list([]))
    } else {
        layer.allow_origin(origins)
    }
}

/// The caller of a request as gRPC metadata for order and inventory, with
/// the request id and trace context: what [`proxy`] does for REST.
pub fn upstream_request<T>(
    message: T,
    caller: Option<&Caller>,
    request_id: Option<&RequestId>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(caller) = caller {
        if let Ok(id) = caller.user_id.to_string().parse() {
            metadata.insert(proto::metadata::USER_ID, id);
        }
        if let Ok(roles) = caller.roles_header().parse() {
            metadata.insert(proto::metadata::USER_ROLES, roles);
        }
    }
    if let Some(id) = request_id
        .and_then(|id| id.header_value().to_str().ok())
        .and_then(|id| id.parse().ok())
    {
        metadata.insert("x-request-id", id);
    }
    request
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tower_http::request_id::MakeRequestId as _;

    use super::*;

    /// A small answer goes as it is, a large one compressed, to a client
    /// that accepts gzip.
    #[tokio::test]
    async fn only_responses_of_a_kilobyte_or_more_are_compressed() {
        use tower::ServiceExt;

        let app = axum::Router::new()
            .route("/small", axum::routing::get(|| async { "x".repeat(1000) }))
            .route("/large", axum::routing::get(|| async { "x".repeat(1024) }))
            .layer(compression());
        for (path, compressed) in [("/small", false), ("/large", true)] {
            let request = http::Request::get(path)
                .header(http::header::ACCEPT_ENCODING, "gzip")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let encoding = response.headers().get(http::header::CONTENT_ENCODING);
            assert_eq!(encoding.is_some(), compressed, "{path}: {encoding:?}");
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_version_4_uuids() {
        let request = http::Request::new(());
        let ids: HashSet<String> = (0..10_000)
            .map(|_| {
                let id = MakeRequestId.make_request_id(&request).unwrap();
                let id = id.header_value().to_str().unwrap().to_owned();
                let uuid = uuid::Uuid::parse_str(&id).unwrap();
                assert_eq!(uuid.get_version_num(), 4, "{id}");
                assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
                assert_eq!(id, uuid.hyphenated().to_string());
                id
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
        let other_thread = std::thread::spawn(move || {
            MakeRequestId
                .make_request_id(&http::Request::new(()))
                .unwrap()
                .header_value()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .join()
        .unwrap();
        assert!(!ids.contains(&other_thread));
    }
}
