//! Traces end to end: the five binaries export their spans over OTLP/gRPC to
//! a receiver inside the test (`e2e::otlp`), and the span trees they build
//! are checked edge by edge, as the OpenTelemetry demo's trace-based tests
//! do — spans found by (service, kind, name), edges by parent span id.
//!
//! - One order placed through the gateway's REST API is one trace: gateway
//!   server → order gRPC server, order → inventory (gRPC client → server),
//!   order → payment over RabbitMQ (producer → consumer), payment's reply
//!   → order (producer → consumer), order's events over Kafka (the outbox
//!   relay's producer → a consumer), order's status over NATS → the
//!   gateway's Server-Sent Events stream (a receive span, linked to the
//!   following request), each consumer span the child of the producer span
//!   whose `traceparent` its message carried.
//! - A registration is forwarded by the gateway over REST in an HTTP client
//!   span (OpenTelemetry's attributes, a sample of
//!   `http_client_request_duration_seconds`), and its `user.registered`
//!   crosses services over Kafka: the user service's relay → the payment
//!   service's consumer, in the registration's trace.
//! - A REJECTED order's trace holds the failed step (error status) and its
//!   compensation, inventory's `ReleaseReservation`.
//! - The gateway's JSON log lines of a request carry its request id and,
//!   once the token is checked, its user id, under the request's trace id.
//! - A saga step resumed by a restarted order process after a crash joins
//!   the trace of the request that placed the order: the trace context is
//!   stored with the saga.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::api::Reply;
use e2e::otlp::{Collector, Kind, Pattern, Span, Trace};
use e2e::stack::{PATIENCE, Service, Session, Stack, StackBuilder};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const ORDER_SERVICE: &str = "ferrishop.order.v1.OrderService";
const INVENTORY_SERVICE: &str = "ferrishop.inventory.v1.InventoryService";
/// How long the order service holds a confirmation back (fault point
/// `order.saga.before_confirm`), so a stream opened after the placement
/// sees it happen.
const CONFIRM_DELAY: Duration = Duration::from_millis(1_500);

/// Every service exports to `collector`, in small batches at once.
fn traced(collector: &Collector) -> StackBuilder {
    Stack::builder()
        .env_all("OTEL_TRACES_EXPORTER", "otlp")
        .env_all("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env_all("OTEL_BSP_SCHEDULE_DELAY", "100")
        // The request's own lines: tower-http's "started/finished
        // processing request" are debug events.
        .env(Service::Gateway, "RUST_LOG", "info,tower_http=debug")
}

/// `request` sent with `x-request-id: id`.
async fn send_as(session_api: &e2e::api::Api, id: &str, request: reqwest::RequestBuilder) -> Reply {
    session_api.send(request.header("x-request-id", id)).await
}

/// Registers a customer through the gateway with request id `id`; logs in.
async fn register(stack: &Stack, id: &str) -> Session {
    stack
        .customer_with(|request| request.header("x-request-id", id))
        .await
}

/// Places an order of `quantity` × `product` with request id `id`.
async fn place(session: &Session, id: &str, product: &str, quantity: u32) -> Reply {
    let request = session
        .api
        .request(Method::POST, "/api/v1/orders")
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({"items": [{"product_id": product, "quantity": quantity}]}));
    send_as(&session.api, id, request).await
}

/// The gateway's server span of the request with id `request_id`.
async fn edge_span(collector: &Collector, route: &str, request_id: &str) -> Span {
    let edge = Pattern::new("gateway", Kind::Server, route).with("request_id", request_id);
    collector
        .wait_for(PATIENCE, &format!("{edge}"), |spans| {
            spans.iter().find(|span| edge.matches(span)).cloned()
        })
        .await
}

fn server(service: &str, name: &str) -> Pattern {
    Pattern::new(service, Kind::Server, name)
}

fn client(service: &str, name: &str) -> Pattern {
    Pattern::new(service, Kind::Client, name)
}

/// A broker hop's producer or consumer span of `system` on `destination`.
fn hop(service: &str, kind: Kind, system: &str, destination: &str) -> Pattern {
    Pattern::new(service, kind, destination)
        .with("messaging.system", system)
        .with("messaging.destination.name", destination)
}

/// The span of the placement saga's final transaction.
fn finish(outcome: &str) -> Pattern {
    Pattern::new("order", Kind::Internal, "saga.finish").with("saga.outcome", outcome)
}

fn step(name: &str) -> Pattern {
    Pattern::new("order", Kind::Internal, "saga.step").with("saga.step", name)
}

/// The edges `trace` lacks, as `parent → child` lines.
fn missing(trace: &Trace, edges: &[(Pattern, Pattern)]) -> Vec<String> {
    edges
        .iter()
        .filter(|(parent, child)| !trace.has_edge(parent, child))
        .map(|(parent, child)| format!("{parent} → {child}"))
        .collect()
}

/// Waits until `trace_id` has every edge; panics with the tree otherwise.
async fn wait_for_edges(
    collector: &Collector,
    trace_id: &str,
    edges: &[(Pattern, Pattern)],
) -> Trace {
    let trace = collector
        .wait_for_trace(trace_id, PATIENCE, |trace| missing(trace, edges).is_empty())
        .await;
    eprintln!("trace {trace_id}:\n{}", trace.tree());
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_one_trace_across_every_hop_and_a_rejection_shows_its_compensation() {
    let collector = Collector::start().await;
    let stack = traced(&collector)
        // Time to follow the order before it is confirmed.
        .delay_confirmation(CONFIRM_DELAY)
        .start()
        .await;
    let names = stack.names.clone();
    let admin = stack.admin().await;
    let product = stack.product(&admin, 1_250, 10).await;
    let product = product["id"].as_str().unwrap().to_owned();

    // A customer: registered (user.registered over Kafka opens the
    // wallet), then a deposit.
    let registration_id = Uuid::now_v7().to_string();
    let customer = register(&stack, &registration_id).await;
    stack.wallet(&customer).await;
    let deposit = customer
        .api
        .post_idempotent(
            "/api/v1/wallet/deposits",
            &json!({"amount": {"amount": 10_000, "currency": "EUR"}}),
            &Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(deposit.status, 201, "{deposit}");

    // One order, CONFIRMED.
    let placement_id = Uuid::now_v7().to_string();
    let placed = place(&customer, &placement_id, &product, 2).await;
    assert_eq!(placed.status, 202, "{placed}");
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    // Followed over Server-Sent Events until CONFIRMED ends the stream.
    let stream = customer
        .api
        .follow(
            &format!("/api/v1/orders/{order_id}/events"),
            PATIENCE,
            |_| false,
        )
        .await;
    assert!(stream.ended, "{stream:?}");
    stack
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;
    let status_subject = format!("{}.{order_id}.status", names.order_status_prefix);

    // 1. The order's trace, hop by hop.
    let edge = edge_span(&collector, "POST /api/v1/orders", &placement_id).await;
    let order_edges = [
        // gateway → order
        (
            client("gateway", &format!("{ORDER_SERVICE}/PlaceOrder")),
            server("order", &format!("{ORDER_SERVICE}/PlaceOrder")),
        ),
        // order → inventory
        (
            client("order", &format!("{INVENTORY_SERVICE}/ReserveStock")),
            server("inventory", &format!("{INVENTORY_SERVICE}/ReserveStock")),
        ),
        (
            client("order", &format!("{INVENTORY_SERVICE}/CommitReservation")),
            server(
                "inventory",
                &format!("{INVENTORY_SERVICE}/CommitReservation"),
            ),
        ),
        // order → (RabbitMQ) → payment
        (
            hop("order", Kind::Producer, "rabbitmq", &names.payment_commands),
            hop(
                "payment",
                Kind::Consumer,
                "rabbitmq",
                &names.payment_commands,
            ),
        ),
        // payment → (reply, RabbitMQ) → order
        (
            hop("payment", Kind::Producer, "rabbitmq", &names.order_replies),
            hop("order", Kind::Consumer, "rabbitmq", &names.order_replies),
        ),
        // order's events → (Kafka) → their consumer
        (
            hop("order", Kind::Producer, "kafka", &names.order_events),
            hop("order", Kind::Consumer, "kafka", &names.order_events),
        ),
        // order's status → (NATS) → the gateway's event stream
        (
            hop("order", Kind::Producer, "nats", &status_subject),
            hop("gateway", Kind::Consumer, "nats", &status_subject),
        ),
    ];
    wait_for_edges(&collector, &edge.trace_id, &order_edges).await;
    // The saga's final transaction is in the trace too, and so is what it
    // published: order.confirmed (Kafka) and the CONFIRMED notification
    // (NATS).
    let completed = finish("completed");
    let published = [
        hop("order", Kind::Producer, "kafka", &names.order_events),
        hop("order", Kind::Producer, "nats", &status_subject),
    ];
    let trace = collector
        .wait_for_trace(&edge.trace_id, PATIENCE, |trace| {
            published
                .iter()
                .all(|pattern| trace.has_descendant(&completed, pattern))
        })
        .await;
    let tree = trace.tree();
    assert_eq!(
        edge.attribute("http.response.status_code").as_deref(),
        Some("202"),
        "{edge}"
    );
    // The gateway's server span is where it all starts.
    let gateway_server = server("gateway", "POST /api/v1/orders");
    for pattern in [
        client("gateway", &format!("{ORDER_SERVICE}/PlaceOrder")),
        server("order", &format!("{ORDER_SERVICE}/PlaceOrder")),
        step("reserve_stock"),
        step("charge_payment"),
        step("commit_reservation"),
        hop(
            "payment",
            Kind::Consumer,
            "rabbitmq",
            &names.payment_commands,
        ),
        hop("order", Kind::Consumer, "kafka", &names.order_events),
    ] {
        assert!(
            trace.has_descendant(&gateway_server, &pattern),
            "{pattern} is not below the gateway's server span:\n{tree}"
        );
    }
    // The notification's receive span links to the request that followed
    // the order (a trace of its own).
    // That request's server span is exported when its stream has ended,
    // in a batch of its own: wait for it as for any other span.
    let received = &trace.find(&hop("gateway", Kind::Consumer, "nats", &status_subject))[0];
    let follower = server("gateway", "GET /api/v1/orders/{id}/events");
    collector
        .wait_for(
            PATIENCE,
            &format!("{follower} that {received} links to"),
            |spans| {
                spans
                    .iter()
                    .find(|span| {
                        follower.matches(span)
                            && received.links.iter().any(|link| {
                                link.span_id == span.span_id && link.trace_id == span.trace_id
                            })
                    })
                    .cloned()
            },
        )
        .await;
    // The saga's steps made the calls and sent the command.
    assert!(
        trace.has_descendant(
            &step("reserve_stock"),
            &client("order", &format!("{INVENTORY_SERVICE}/ReserveStock"))
        ),
        "{tree}"
    );
    assert!(
        trace.has_descendant(
            &step("charge_payment"),
            &hop("order", Kind::Producer, "rabbitmq", &names.payment_commands)
        ),
        "{tree}"
    );
    for span in &trace.spans {
        assert!(
            !span.is_error(),
            "a CONFIRMED order's trace has a failed span {span}:\n{tree}"
        );
    }

    // 2. A Kafka hop across services: user.registered, from the user
    // service's relay to the payment service's consumer, in the
    // registration's trace.
    // The gateway forwards the registration over REST: its client span
    // follows OpenTelemetry's HTTP client conventions, and the call is a
    // sample of http_client_request_duration_seconds.
    let registration = edge_span(&collector, "POST /api/v1/users", &registration_id).await;
    let trace = wait_for_edges(
        &collector,
        &registration.trace_id,
        &[
            (
                server("gateway", "POST /api/v1/users"),
                client("gateway", "POST /api/v1/users"),
            ),
            (
                client("gateway", "POST /api/v1/users"),
                server("user", "POST /api/v1/users"),
            ),
            (
                hop("user", Kind::Producer, "kafka", &names.user_events),
                hop("payment", Kind::Consumer, "kafka", &names.user_events),
            ),
        ],
    )
    .await;
    let user_addr = stack
        .user
        .http_url()
        .trim_start_matches("http://")
        .to_owned();
    let (host, port) = user_addr.rsplit_once(':').unwrap();
    let forwarded = trace.find(&client("gateway", "POST /api/v1/users"));
    for (key, value) in [
        ("http.request.method", "POST".to_owned()),
        ("server.address", host.to_owned()),
        ("server.port", port.to_owned()),
        ("url.full", format!("http://{user_addr}/api/v1/users")),
        ("url.template", "/api/v1/users".to_owned()),
        ("http.response.status_code", "201".to_owned()),
    ] {
        assert_eq!(
            forwarded[0].attribute(key).as_deref(),
            Some(value.as_str()),
            "{key} of {:?}",
            forwarded[0]
        );
    }
    let metrics = stack.metrics(Service::Gateway).await;
    let sampled = metrics.lines().any(|line| {
        line.starts_with("http_client_request_duration_seconds_count{")
            && [
                "http_request_method=\"POST\"".to_owned(),
                format!("server_address=\"{host}\""),
                "http_response_status_code=\"201\"".to_owned(),
            ]
            .iter()
            .all(|label| line.contains(label.as_str()))
    });
    assert!(
        sampled,
        "the gateway's /metrics has no http_client_request_duration_seconds of the registration:\n{metrics}"
    );

    // 3. A REJECTED order: more than the wallet holds (a new wallet's
    // opening balance and no deposit), so the charge fails and the
    // reservation is released.
    let poor = register(&stack, &Uuid::now_v7().to_string()).await;
    let wallet = stack.wallet(&poor).await;
    let balance = wallet["balance"]["amount"].as_i64().unwrap();
    let dear = stack.product(&admin, balance + 1, 1).await;
    let product = dear["id"].as_str().unwrap().to_owned();
    let rejection_id = Uuid::now_v7().to_string();
    let placed = place(&poor, &rejection_id, &product, 1).await;
    assert_eq!(placed.status, 202, "{placed}");
    let rejected_id = placed.body["id"].as_str().unwrap().to_owned();
    let rejected = stack.wait_for_order(&poor, &rejected_id, "REJECTED").await;
    assert_eq!(
        rejected["failure_reason"], "INSUFFICIENT_FUNDS",
        "{rejected}"
    );
    let edge = edge_span(&collector, "POST /api/v1/orders", &rejection_id).await;
    let release = format!("{INVENTORY_SERVICE}/ReleaseReservation");
    wait_for_edges(
        &collector,
        &edge.trace_id,
        &[
            (
                step("reserve_stock").with("saga.phase", "compensation"),
                client("order", &release),
            ),
            (client("order", &release), server("inventory", &release)),
        ],
    )
    .await;
    let trace = collector
        .wait_for_trace(&edge.trace_id, PATIENCE, |trace| {
            trace.has_descendant(
                &finish("compensated"),
                &hop("order", Kind::Producer, "kafka", &names.order_events),
            )
        })
        .await;
    let tree = trace.tree();
    let failed: Vec<&Span> = trace
        .find(&step("charge_payment"))
        .into_iter()
        .filter(|span| span.is_error())
        .collect();
    assert!(
        !failed.is_empty(),
        "the failed charge_payment step has no error status:\n{tree}"
    );
    for span in trace.find(&server("inventory", &release)) {
        assert!(
            !span.is_error(),
            "the release itself succeeded: {span}\n{tree}"
        );
    }

    // 4. The gateway's log lines of the placement carry its request id and
    // the caller's user id, under the request's trace id.
    let lines: Vec<Value> = stack
        .gateway
        .json_lines()
        .into_iter()
        .filter(|line| line["request_id"] == placement_id.as_str())
        .collect();
    assert!(
        lines.len() >= 2,
        "the gateway logged under request id {placement_id}: {lines:?}"
    );
    let placement_trace = &trace_of(&collector, &placement_id).await;
    for line in &lines {
        assert_eq!(line["trace_id"], placement_trace.as_str(), "{line}");
        let user = &line["user_id"];
        assert!(
            user.is_null() || *user == customer.user_id.to_string().as_str(),
            "{line}"
        );
    }
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "finished processing request")
        .collect();
    assert_eq!(finished.len(), 1, "{lines:?}");
    assert_eq!(
        finished[0]["user_id"],
        customer.user_id.to_string().as_str(),
        "{}",
        finished[0]
    );
    let no_token_leaks = stack
        .gateway
        .json_lines()
        .iter()
        .all(|line| !line.to_string().contains(&customer.token));
    assert!(no_token_leaks, "a gateway log line holds an access token");
}

/// The trace id of the gateway's server span of request `request_id`.
async fn trace_of(collector: &Collector, request_id: &str) -> String {
    edge_span(collector, "POST /api/v1/orders", request_id)
        .await
        .trace_id
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .try_into()
        .unwrap()
}

/// Waits until `url` refuses connections: the process behind it is gone.
async fn wait_until_gone(url: &str, within: Duration) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + within;
    while http.get(url).send().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{url} still answers after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_step_resumed_after_a_crash_joins_the_trace_that_placed_the_order() {
    const FAULT: &str = "saga.place_order.before_charge_payment";
    let collector = Collector::start().await;
    let mut stack = traced(&collector)
        .env(Service::Order, "FAULTS", format!("{FAULT}=abort"))
        .start()
        .await;
    let admin = stack.admin().await;
    let product = stack.product(&admin, 500, 5).await;
    let product = product["id"].as_str().unwrap().to_owned();
    let customer = register(&stack, &Uuid::now_v7().to_string()).await;
    stack.wallet(&customer).await;
    let deposit = customer
        .api
        .post_idempotent(
            "/api/v1/wallet/deposits",
            &json!({"amount": {"amount": 5_000, "currency": "EUR"}}),
            &Uuid::now_v7().to_string(),
        )
        .await;
    assert_eq!(deposit.status, 201, "{deposit}");

    // The order is placed; the saga reserves the stock, and the process
    // dies (abort: no shutdown, nothing flushed) before charging.
    let placement_id = Uuid::now_v7().to_string();
    let key = Uuid::now_v7().to_string();
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let request = customer
        .api
        .request(Method::POST, "/api/v1/orders")
        .header("idempotency-key", &key)
        .json(&body);
    let first = send_as(&customer.api, &placement_id, request).await;
    let order_url = format!("{}/healthz", stack.order.http_url());
    wait_until_gone(&order_url, PATIENCE).await;
    stack.kill(Service::Order).await;

    // A healthy process takes the saga over once the dead one's lease ends.
    stack.set_env(Service::Order, "FAULTS", None);
    let restarted_at = unix_nanos();
    stack.start_again(Service::Order).await;
    let order_id = if first.status == 202 {
        first.body["id"].as_str().unwrap().to_owned()
    } else {
        // The process died before answering: the client places it again
        // with the same key, and gets the same order.
        let again = customer
            .api
            .post_idempotent("/api/v1/orders", &body, &key)
            .await;
        assert_eq!(again.status, 202, "{again}");
        again.body["id"].as_str().unwrap().to_owned()
    };
    stack
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;

    let original = trace_of(&collector, &placement_id).await;
    let trace = wait_for_edges(
        &collector,
        &original,
        &[
            (
                step("charge_payment"),
                hop(
                    "order",
                    Kind::Producer,
                    "rabbitmq",
                    &stack.names.payment_commands,
                ),
            ),
            (
                step("commit_reservation"),
                client("order", &format!("{INVENTORY_SERVICE}/CommitReservation")),
            ),
        ],
    )
    .await;
    let tree = trace.tree();
    let resumed: Vec<&Span> = trace
        .find(&step("charge_payment"))
        .into_iter()
        .filter(|span| span.start_unix_nano > restarted_at)
        .collect();
    assert!(
        !resumed.is_empty(),
        "no charge_payment step of the restarted process in the placing request's trace:\n{tree}"
    );
    // Its parent is the span that started the saga, in the first process:
    // the same for every step, before and after the crash.
    let parents: std::collections::BTreeSet<&str> = trace
        .find(&Pattern::new("order", Kind::Internal, "saga.step"))
        .iter()
        .map(|span| span.parent_span_id.as_str())
        .collect();
    assert_eq!(parents.len(), 1, "steps with different parents:\n{tree}");
}
