//! The floor under the gateway's benchmark: a reverse proxy with nothing
//! but the HTTP stack the gateway is built on — hyper's HTTP/1 server,
//! hyper-util's pooled client, tokio, mimalloc — and none of its features
//! (no routing, token, rate limit, spans, metrics, resilience, request id,
//! CORS or compression). What it costs per request is what any gateway on
//! this stack starts from; `scripts/bench-gateway.sh` measures it next to
//! nginx and the gateway.
//!
//! ```sh
//! cargo run --release -p gateway --example bare_proxy -- 127.0.0.1:8090 http://127.0.0.1:8082
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use resilience::Endpoint;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Incoming>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN_ADDR UPSTREAM_URL";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream = Endpoint::parse(&args.next().ok_or(usage)?)?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Arc<Upstream> = Arc::new(Client::builder(TokioExecutor::new()).build(connector));
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            // A connection ends with its client; nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Arc<Upstream>,
    upstream: Endpoint,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // The gateway's own way of pointing a request at an instance.
    let Ok(request) = upstream.rebase(request) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    match client.request(request).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}
