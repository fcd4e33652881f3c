//! What the resilience stack adds to a call: the same request answered at
//! once by an in-memory client, called directly and through
//! [`Upstream::service`] the way the gateway calls it (the stack cloned per
//! request, `ready`, `call`). The difference is the stack's own cost per
//! call: bulkhead and load shedding, the two timeouts, the retry policy (and
//! the copy of an idempotent request it keeps for a retry), the balancer's
//! pick and the breaker's permit and record.
//!
//! ```text
//! cargo bench -p resilience --bench stack_overhead
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use resilience::{Http, Upstream};
use tower::{Service, ServiceExt};

/// A GET with the headers the gateway sends upstream.
fn request() -> Request<Bytes> {
    Request::get("http://127.0.0.1:8082/api/v1/users/me")
        .header("x-request-id", "5f0c8a4e-2b51-4d7e-9a51-0c3f6f1d2b7a")
        .header("x-user-id", "01a209cd-bc46-709e-84b0-f905de5c079d")
        .header("x-user-roles", "customer")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("accept", "*/*")
        .body(Bytes::new())
        .unwrap()
}

async fn answer(_: Request<Bytes>) -> Result<Response<Bytes>, Infallible> {
    Ok(Response::new(Bytes::from_static(b"{}")))
}

fn stack_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let upstream = runtime.block_on(async {
        Upstream::builder("user", "http://127.0.0.1:8082")
            .unwrap()
            .build(|_| Ok(tower::service_fn(answer)))
            .unwrap()
    });
    let stack = upstream.service(Http::new());
    let client = tower::service_fn(answer);

    let mut group = c.benchmark_group("one call");
    group.bench_function("client alone", |b| {
        b.to_async(&runtime)
            .iter(|| async move { black_box(client.oneshot(request()).await.unwrap()) });
    });
    group.bench_function("through the resilience stack", |b| {
        b.to_async(&runtime).iter(|| {
            let mut stack = stack.clone();
            async move {
                let ready = stack.ready().await.unwrap();
                black_box(ready.call(request()).await.unwrap())
            }
        });
    });
    group.finish();
}

criterion_group!(benches, stack_overhead);
criterion_main!(benches);
