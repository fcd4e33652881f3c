//! `GET /api/v1/orders/{id}/events` against the real gateway binary and a
//! real NATS, with the order service and the user service's JWKS played by
//! the test: the order's status is whatever the test says, and its changes
//! are published on NATS the way the order service's outbox publishes them.
//! The full journey with all five binaries is the end-to-end suite's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use serde_json::{Value, json};
use support::{PATIENCE, Setup};
use uuid::Uuid;

/// Reads SSE frames off a response body.
struct Events {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

/// One frame: its event name and data, or a comment.
#[derive(Debug, PartialEq)]
enum Frame {
    Event { name: String, data: Value },
    Comment(String),
}

impl Events {
    fn of(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                let mut comment = None;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    } else if let Some(value) = line.strip_prefix(':') {
                        comment = Some(value.trim().to_owned());
                    }
                }
                return Some(match (name, comment) {
                    (Some(name), _) => Frame::Event {
                        name,
                        data: serde_json::from_str(&data).unwrap(),
                    },
                    (None, Some(comment)) => Frame::Comment(comment),
                    (None, None) => panic!("empty frame {frame:?}"),
                });
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("no SSE frame in time");
            match chunk {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }

    /// The next event, skipping heartbeats.
    async fn event(&mut self) -> Option<(String, Value)> {
        loop {
            match self.next().await? {
                Frame::Event { name, data } => return Some((name, data)),
                Frame::Comment(_) => continue,
            }
        }
    }
}

#[tokio::test]
async fn follows_an_order_from_its_current_status_to_a_terminal_one() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);

    let response = setup.open_as_browser(&order.to_string(), owner).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // Not compressed: a compressor would hold events back.
    assert!(response.headers().get("content-encoding").is_none());
    let mut events = Events::of(response);

    let (name, data) = events.event().await.unwrap();
    assert_eq!(name, "status");
    assert_eq!(data["id"], order.to_string());
    assert_eq!(data["status"], "PENDING");

    // A repeat of the status already sent is not sent again.
    setup.announce(order, "PENDING", None).await;
    setup.announce(order, "CONFIRMED", None).await;
    let (name, data) = events.event().await.unwrap();
    assert_eq!(name, "status");
    assert_eq!(
        data,
        json!({"id": order, "status": "CONFIRMED", "occurred_at": "2025-01-01T00:00:00Z"})
    );
    // CONFIRMED is terminal: the server ends the stream.
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn a_rejection_carries_its_reason_and_ends_the_stream() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");

    setup
        .announce(order, "REJECTED", Some("INSUFFICIENT_STOCK"))
        .await;
    let (_, data) = events.event().await.unwrap();
    assert_eq!(data["status"], "REJECTED");
    assert_eq!(data["failure_reason"], "INSUFFICIENT_STOCK");
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn an_order_already_terminal_is_sent_once_and_the_stream_ends() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Cancelled);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "CANCELLED");
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn another_users_order_is_a_404_problem_before_any_stream() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);

    let response = setup.open(&order.to_string(), Uuid::now_v7()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_FOUND");

    let response = setup.open("not-a-uuid", owner).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"]["id"], "must be a UUID");

    let anonymous = setup
        .http
        .get(format!(
            "{}/api/v1/orders/{order}/events",
            setup.gateway.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn without_nats_the_stream_follows_the_order_by_re_reading_it() {
    // Nothing listens there: the gateway starts and serves all the same.
    let setup = Setup::start_with_nats("nats://127.0.0.1:1").await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");

    setup.orders.put(order, owner, pb::OrderStatus::Confirmed);
    let (_, data) = tokio::time::timeout(Duration::from_secs(10), events.event())
        .await
        .expect("the change was not picked up by a re-read")
        .unwrap();
    assert_eq!(data["status"], "CONFIRMED");
    assert_eq!(events.event().await, None);
}

#[tokio::test]
async fn an_idle_stream_gets_a_heartbeat_comment() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");
    let started = std::time::Instant::now();
    // 15 s without an event.
    assert_eq!(
        events.next().await,
        Some(Frame::Comment("heartbeat".into()))
    );
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn open_streams_end_when_the_gateway_shuts_down() {
    let mut setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut events = Events::of(setup.open(&order.to_string(), owner).await);
    assert_eq!(events.event().await.unwrap().1["status"], "PENDING");

    let started = std::time::Instant::now();
    setup.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(events.event().await, None);
    exits_promptly(&mut setup, started).await;
}

#[tokio::test]
async fn forwarded_grpc_streams_end_when_the_gateway_shuts_down() {
    let mut setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let channel = testkit::grpc::channel(&setup.gateway.grpc_url()).await;
    let mut client = OrderServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::WatchOrderRequest {
        order_id: order.to_string(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", setup.token(owner)).parse().unwrap(),
    );
    let mut watch = client.watch_order(request).await.unwrap().into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, pb::OrderStatus::Pending as i32);

    let started = std::time::Instant::now();
    setup.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the stream outlived the shutdown");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
    exits_promptly(&mut setup, started).await;
}

/// The gateway, signalled at `started`, exits cleanly well within its
/// shutdown deadline (10 s in tests): no open stream held it.
async fn exits_promptly(setup: &mut Setup, started: std::time::Instant) {
    let status = setup.gateway.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_user_holds_at_most_sixteen_streams_open() {
    let setup = Setup::start().await;
    let (order, owner) = (Uuid::now_v7(), Uuid::now_v7());
    setup.orders.put(order, owner, pb::OrderStatus::Pending);
    let mut open = Vec::new();
    for _ in 0..16 {
        let mut events = Events::of(setup.open(&order.to_string(), owner).await);
        assert_eq!(events.event().await.unwrap().1["status"], "PENDING");
        open.push(events);
    }

    let refused = setup.open(&order.to_string(), owner).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "RATE_LIMITED");

    // Another user is not affected.
    let (other_order, other) = (Uuid::now_v7(), Uuid::now_v7());
    setup
        .orders
        .put(other_order, other, pb::OrderStatus::Pending);
    let mut theirs = Events::of(setup.open(&other_order.to_string(), other).await);
    assert_eq!(theirs.event().await.unwrap().1["status"], "PENDING");
    drop(open);
}
