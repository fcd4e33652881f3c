//! The REST path as the gateway uses it: reqwest under the stack, real axum
//! servers on loopback, one of them flaky and one not there at all.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt;
use resilience::{BoxError, Endpoint, Error, Http, State, Upstream, UpstreamConfig};
use tower::ServiceExt;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The gateway's instance client: one reqwest client for all instances, each
/// call rebased onto the instance the balancer picked.
fn upstream(
    urls: &str,
) -> Upstream<
    impl tower::Service<
        http::Request<Bytes>,
        Response = http::Response<reqwest::Body>,
        Error = BoxError,
        Future = impl Future<Output = Result<http::Response<reqwest::Body>, BoxError>> + Send,
    > + Clone
    + Send
    + Sync
    + 'static,
> {
    let client = reqwest::Client::new();
    Upstream::builder("user", urls)
        .unwrap()
        .config(UpstreamConfig::default())
        .build(move |endpoint: &Endpoint| {
            let client = client.clone();
            let endpoint = endpoint.clone();
            Ok(tower::service_fn(move |request: http::Request<Bytes>| {
                let client = client.clone();
                let request =
                    endpoint
                        .rebase(request)
                        .map_err(BoxError::from)
                        .and_then(|request| {
                            reqwest::Request::try_from(request).map_err(BoxError::from)
                        });
                async move {
                    let response = client.execute(request?).await?;
                    Ok::<_, BoxError>(http::Response::from(response))
                }
            }))
        })
        .unwrap()
}

fn get_request(path: &str) -> http::Request<Bytes> {
    http::Request::get(path).body(Bytes::new()).unwrap()
}

#[tokio::test]
async fn retries_and_ejection_hide_a_dead_and_a_flaky_instance() {
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let counter = flaky_calls.clone();
    let flaky = serve(Router::new().route(
        "/api/v1/users/me",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::SERVICE_UNAVAILABLE, "draining") }
        }),
    ))
    .await;
    let healthy = serve(Router::new().route("/api/v1/users/me", get(|| async { "me" }))).await;
    let dead = closed_port().await;
    let upstream = upstream(&format!("http://{dead},http://{flaky},http://{healthy}"));
    let service = upstream.service(Http::new());

    for _ in 0..30 {
        let response = service
            .clone()
            .oneshot(get_request("/api/v1/users/me"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "me");
    }

    let states: Vec<_> = upstream
        .instances()
        .iter()
        .map(|instance| instance.breaker().state())
        .collect();
    assert_eq!(states, [State::Open, State::Open, State::Closed]);
    assert_eq!(
        flaky_calls.load(Ordering::SeqCst),
        5,
        "ejected after 5 failures"
    );
}

#[tokio::test]
async fn a_post_to_a_dead_instance_is_not_retried_and_fails_typed() {
    let dead = closed_port().await;
    let service = upstream(&format!("http://{dead}")).service(Http::new());

    let post = http::Request::post("/api/v1/users")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let error = service.oneshot(post).await.unwrap_err();

    assert!(
        matches!(&error, Error::Upstream { upstream, .. } if &**upstream == "user"),
        "{error:?}"
    );
    assert!(!error.is_fail_fast());
}
