//! Every binary boots, reports health, serves metrics and reflection, waits
//! for a missing database, rejects bad configuration and shuts down
//! gracefully.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::stack::scrape;
use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::brokers::unique_name;
use testkit::grpc::{reflected_services, wait_for_health};
use testkit::net::{TcpProxy, free_port};
use testkit::postgres::reserved_database;
use testkit::process::Spawn;
use tonic_health::pb::health_check_response::ServingStatus;

const SERVICES_WITH_DATABASE: [(&str, &str); 4] = [
    ("user", "ferrishop.user.v1.UserService"),
    ("order", "ferrishop.order.v1.OrderService"),
    ("payment", "ferrishop.payment.v1.PaymentService"),
    ("inventory", "ferrishop.inventory.v1.InventoryService"),
];

#[tokio::test]
async fn every_binary_serves_health_readiness_metrics_and_reflection() {
    let mut checks = Vec::new();
    for (binary, grpc_service) in SERVICES_WITH_DATABASE {
        checks.push(tokio::spawn(check_binary(binary, Some(grpc_service))));
    }
    checks.push(tokio::spawn(check_binary("gateway", None)));
    for check in futures::future::join_all(checks).await {
        check.unwrap();
    }
}

async fn check_binary(binary: &'static str, grpc_service: Option<&'static str>) {
    // The service creates its database itself; the test only reserves a name.
    let database = reserved_database().await;
    let mut spawn = Spawn::new(binary).env("DATABASE_URL", &database.url);
    // Brokers are shared: topics, exchanges, subjects and groups of its own
    // (a binary ignores the variables it does not read).
    for (variable, prefix) in [
        ("USER_EVENTS_TOPIC", "user-events"),
        ("INVENTORY_EVENTS_TOPIC", "inventory-events"),
        ("PAYMENT_EVENTS_TOPIC", "payment-events"),
        ("ORDER_EVENTS_TOPIC", "order-events"),
        ("PAYMENT_COMMANDS_EXCHANGE", "payment-commands"),
        ("ORDER_REPLIES_EXCHANGE", "order-replies"),
        ("ORDER_STATUS_SUBJECT_PREFIX", "orders"),
        ("CONSUMER_GROUP", binary),
    ] {
        spawn = spawn.env(variable, unique_name(prefix));
    }
    let process = spawn.start().await;
    let http = reqwest::Client::new();

    let healthz = http
        .get(format!("{}/healthz", process.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "{binary} /healthz");

    process.wait_ready(Duration::from_secs(30)).await;
    let readyz: Value = http
        .get(format!("{}/readyz", process.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["status"], "ready", "{binary}: {readyz}");
    if grpc_service.is_some() {
        assert_eq!(
            readyz["checks"]["database"]["status"], "ok",
            "{binary}: {readyz}"
        );
    }

    let metrics = scrape(&http, &process.http_url()).await;
    assert!(
        metrics.contains("http_server_request_duration_seconds_bucket{")
            && metrics.contains(r#"http_route="/healthz""#),
        "{binary} /metrics lacks the HTTP server histogram:\n{metrics}"
    );

    openmetrics_carries_the_trace_of_a_request(binary, &http, &process.http_url()).await;

    let grpc = process.grpc_url();
    let overall = wait_for_health(&grpc, "", ServingStatus::Serving, Duration::from_secs(10)).await;
    assert_eq!(overall, ServingStatus::Serving, "{binary} gRPC health");

    let services = reflected_services(&grpc).await;
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{binary}: {services:?}"
    );
    if let Some(name) = grpc_service {
        assert!(
            services.contains(&name.to_owned()),
            "{binary}: {services:?}"
        );
        let status =
            wait_for_health(&grpc, name, ServingStatus::Serving, Duration::from_secs(10)).await;
        assert_eq!(status, ServingStatus::Serving, "{binary} health of {name}");
    }
}

/// Asked for OpenMetrics (as Prometheus asks), `/metrics` answers it, and
/// the latency bucket of a traced request carries that request's trace as an
/// exemplar. A bucket takes a new exemplar at most once a second, so the
/// request is repeated until it is the one kept.
async fn openmetrics_carries_the_trace_of_a_request(
    binary: &str,
    http: &reqwest::Client,
    base: &str,
) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &trace_id[..16]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let traced = http
            .get(format!("{base}/healthz"))
            .header("traceparent", &traceparent)
            .send()
            .await
            .unwrap();
        assert_eq!(traced.status(), 200, "{binary} /healthz");
        let response = http
            .get(format!("{base}/metrics"))
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{binary} /metrics answered {content_type} to a scraper asking for OpenMetrics"
        );
        let text = response.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{binary}: no # EOF:\n{text}");
        let exemplar = format!("# {{trace_id=\"{trace_id}\",span_id=\"");
        if text.lines().any(|line| {
            line.starts_with("http_server_request_duration_seconds_bucket{")
                && line.contains(r#"http_route="/healthz""#)
                && line.contains(&exemplar)
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{binary}: no /healthz bucket of http_server_request_duration_seconds names trace {trace_id}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_binary_waits_for_its_database_and_becomes_ready_when_it_appears() {
    let database = reserved_database().await;
    let port = free_port();
    let process = Spawn::new("inventory")
        .env("DATABASE_URL", database.url_via_port(port))
        .start()
        .await;
    let http = reqwest::Client::new();
    let readyz = format!("{}/readyz", process.http_url());

    assert_eq!(
        http.get(format!("{}/healthz", process.http_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = http.get(&readyz).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["status"], "error", "{body}");
    let grpc = process.grpc_url();
    assert_eq!(
        wait_for_health(&grpc, "", ServingStatus::NotServing, Duration::from_secs(5)).await,
        ServingStatus::NotServing
    );

    // Let the binary retry a few times, then make the database reachable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(http.get(&readyz).send().await.unwrap().status(), 503);
    let upstream = "127.0.0.1:5432".parse().unwrap();
    let _proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap(), upstream).await;

    process.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        wait_for_health(&grpc, "", ServingStatus::Serving, Duration::from_secs(10)).await,
        ServingStatus::Serving
    );
    let retries = process
        .stdout_lines()
        .iter()
        .filter(|line| line.contains("database not ready"))
        .count();
    assert!(
        retries >= 2,
        "expected several logged retries, saw {retries}"
    );
}

#[tokio::test]
async fn a_bad_listen_address_exits_2_naming_the_variable() {
    for binary in ["gateway", "user", "order", "payment", "inventory"] {
        let mut process = Spawn::new(binary)
            .env("HTTP_ADDR", "not-an-address")
            .no_wait()
            .start()
            .await;
        let status = process.wait(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(2), "{binary} exit status");
        let stderr = process.stderr_lines();
        assert_eq!(
            stderr.len(),
            1,
            "{binary} should print one line: {stderr:?}"
        );
        assert!(stderr[0].contains("HTTP_ADDR"), "{binary}: {stderr:?}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let database = reserved_database().await;
    // Every HTTP request takes 1.5 s: a slow request to interrupt.
    let mut process = Spawn::new("user")
        .env("DATABASE_URL", &database.url)
        .env("FAULTS", "http.server.request=delay(1500)")
        .start()
        .await;
    process.wait_ready(Duration::from_secs(30)).await;

    let url = format!("{}/healthz", process.http_url());
    let started = Instant::now();
    let in_flight = tokio::spawn(async move { reqwest::Client::new().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.signal(Signal::SIGTERM);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was cut off");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let status = process.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    let lines = process.stdout_lines();
    assert!(
        lines.iter().any(|l| l.contains("shutdown complete")),
        "{lines:?}"
    );
}
