//! Routes served by user and payment over REST, forwarded path for path.
//!
//! The gateway's part is the edge's: it has already checked the token and
//! the rate limit; here it drops what a client must not set (`x-user-id`,
//! `x-user-roles`: services trust them from the gateway alone) and hop-by-hop
//! headers, sets the verified caller (the request id is already on the
//! request), and sends the request through the upstream's resilience stack,
//! whose every attempt is an HTTP client span carrying its own
//! `traceparent` ([`crate::upstreams::RestInstance`]). The upstream's
//! answer, problem documents included, goes back unchanged.

use axum::extract::{MatchedPath, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use hyper::body::Body as _;
use tower::{Service, ServiceExt};

use super::{AppState, BODY_DEADLINE, BODY_LIMIT};
use crate::auth::{Admin, Caller, vouch_for};
use crate::error::ApiError;
use crate::upstreams::RestClient;

/// Forwards to the user service.
pub async fn user(
    State(state): State<AppState>,
    caller: Option<Caller>,
    request: Request,
) -> Response {
    forward(state.services.user.clone(), caller.as_ref(), request).await
}

/// Forwards to the payment service.
pub async fn payment(
    State(state): State<AppState>,
    caller: Option<Caller>,
    request: Request,
) -> Response {
    forward(state.services.payment.clone(), caller.as_ref(), request).await
}

/// The same as [`user`] and [`payment`], for routes that require a caller:
/// refuses anonymous requests at the edge with 401.
pub async fn user_authenticated(
    state: State<AppState>,
    caller: Caller,
    request: Request,
) -> Response {
    user(state, Some(caller), request).await
}

pub async fn payment_authenticated(
    state: State<AppState>,
    caller: Caller,
    request: Request,
) -> Response {
    payment(state, Some(caller), request).await
}

/// Payment's admin routes: refused at the edge for non-admins.
pub async fn payment_admin(
    state: State<AppState>,
    Admin(caller): Admin,
    request: Request,
) -> Response {
    payment(state, Some(caller), request).await
}

async fn forward(mut client: RestClient, caller: Option<&Caller>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // Read whole (up to the limit) so that a retry can send it again; a
    // request without a body (a GET) has nothing to read.
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, BODY_LIMIT)).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) if over_limit(&error) => {
                return ApiError::PayloadTooLarge { limit: BODY_LIMIT }.into_response();
            }
            Ok(Err(_)) => return ApiError::BodyUnreadable.into_response(),
            Err(_) => {
                let deadline = BODY_DEADLINE;
                return ApiError::BodyTimeout { deadline }.into_response();
            }
        }
    };
    // The upstream is spoken to in HTTP/1.1 whatever the client spoke:
    // hyper's HTTP/1 client refuses a request marked HTTP/2, and that
    // refusal would count against the upstream's breaker.
    parts.version = http::Version::HTTP_11;
    prepare_headers(&mut parts.headers, caller);
    // Of the request's extensions only the route goes on (it names the
    // client span): the others (the caller, the connection, the request
    // id...) would be copied for a retry and dropped, for nothing.
    let route = parts.extensions.remove::<MatchedPath>();
    parts.extensions.clear();
    if let Some(route) = route {
        parts.extensions.insert(route);
    }
    let upstream = http::Request::from_parts(parts, body);
    let response = match client.ready().await {
        Ok(ready) => ready.call(upstream).await,
        Err(error) => Err(error),
    };
    match response {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        Err(error) => ApiError::Upstream(error).into_response(),
    }
}

/// Whether reading a body failed on [`BODY_LIMIT`] rather than on the client.
fn over_limit(error: &axum::Error) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |error| {
        error.source()
    })
    .any(|error| error.is::<http_body_util::LengthLimitError>())
}

/// Headers a client may not pass on, and those the gateway sets instead
/// (`Host` is the instance's: [`resilience::Endpoint::rebase`]).
fn prepare_headers(headers: &mut HeaderMap, caller: Option<&Caller>) {
    strip_hop_by_hop(headers);
    vouch_for(caller, headers);
}

/// The headers RFC 9110 §7.6.1 (and practice) name as connection-specific.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// RFC 9110 §7.6.1: connection-specific headers end at each hop.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: a look at the names present is cheaper
    // than removing each of the eight (every removal hashes its name).
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use uuid::Uuid;

    #[test]
    fn client_identity_headers_are_replaced_by_the_verified_caller() {
        let mut headers = HeaderMap::new();
        headers.insert(proto::metadata::USER_ID, HeaderValue::from_static("forged"));
        headers.insert(
            proto::metadata::USER_ROLES,
            HeaderValue::from_static("admin"),
        );
        let caller = Caller {
            user_id: Uuid::nil(),
            roles: vec!["customer".into()],
        };
        prepare_headers(&mut headers, Some(&caller));
        assert_eq!(headers[proto::metadata::USER_ID], Uuid::nil().to_string());
        assert_eq!(headers[proto::metadata::USER_ROLES], "customer");
    }

    #[test]
    fn every_forged_identity_value_is_replaced() {
        let mut headers = HeaderMap::new();
        for forged in ["a", "b"] {
            headers.append(proto::metadata::USER_ID, HeaderValue::from_static(forged));
            headers.append(
                proto::metadata::USER_ROLES,
                HeaderValue::from_static("admin"),
            );
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        let caller = Caller {
            user_id: Uuid::nil(),
            roles: vec![],
        };
        prepare_headers(&mut headers, Some(&caller));
        let values = |name| {
            headers
                .get_all(name)
                .iter()
                .map(|value| value.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(proto::metadata::USER_ID), [Uuid::nil().to_string()]);
        assert_eq!(values(proto::metadata::USER_ROLES), [""]);
        assert!(headers.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn anonymous_requests_carry_no_identity() {
        let mut headers = HeaderMap::new();
        headers.insert(proto::metadata::USER_ID, HeaderValue::from_static("forged"));
        prepare_headers(&mut headers, None);
        assert!(headers.get(proto::metadata::USER_ID).is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");

        let mut headers = HeaderMap::new();
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);

        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let untouched = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);
    }
}
