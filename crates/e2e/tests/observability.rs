//! Observability end to end: one customer and one order through the real
//! `user`, `inventory`, `payment` and `order` binaries (user.registered over
//! Kafka opens the wallet, the saga reserves stock over gRPC, charges over
//! RabbitMQ, confirms), then
//!
//! - each service's `/metrics` carries the DESIGN.md metrics it owns, with
//!   non-zero counts, and the process, runtime and connection-pool gauges;
//! - a real Prometheus (Debian's `prometheus`, started here) scraping the
//!   services with `deploy/prometheus.yml`'s job names answers
//!   `ferrishop_saga_total{outcome="completed"} > 0`, and the dashboards'
//!   queries run against it and find the series they chart;
//! - the JSON log lines a service wrote for one request carry that request's
//!   trace id (the caller's `traceparent`, continued).
//!
//! The gateway is not started here; its metrics are checked where it is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::ferrishop::common::v1::Money;
use proto::ferrishop::inventory::v1 as inventory_pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::ferrishop::order::v1 as order_pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use serde_json::{Value, json};
use testkit::brokers::{kafka, nats, rabbitmq, unique_name};
use testkit::net::free_port;
use testkit::postgres::{TestDatabase, fresh_database};
use testkit::process::{ServiceProcess, Spawn};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Request;
use tonic::metadata::MetadataValue;
use uuid::Uuid;

/// How long anything asynchronous may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// What each service must show after the journey: (metric, kind, labels a
/// series with a non-zero count must have). Counters and histograms need a
/// non-zero count; gauges need a series (a lag or backlog of 0 is right).
const EXPECTED: [(&str, &[Expectation]); 4] = [
    (
        "user",
        &[
            ("process_resident_memory_bytes", Kind::Gauge, &[]),
            ("process_open_fds", Kind::Gauge, &[]),
            ("tokio_runtime_alive_tasks", Kind::Gauge, &[]),
            (
                "db_client_connection_count",
                Kind::Gauge,
                &[("db_client_connection_state", "idle")],
            ),
            ("db_client_connection_max", Kind::Gauge, &[]),
            (
                "http_server_request_duration_seconds",
                Kind::Histogram,
                &[
                    ("http_route", "/api/v1/users"),
                    ("http_request_method", "POST"),
                ],
            ),
            (
                "messaging_publish_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "kafka")],
            ),
            ("ferrishop_outbox_pending", Kind::Gauge, &[]),
        ],
    ),
    (
        "inventory",
        &[
            ("process_resident_memory_bytes", Kind::Gauge, &[]),
            ("process_open_fds", Kind::Gauge, &[]),
            ("tokio_runtime_alive_tasks", Kind::Gauge, &[]),
            (
                "db_client_connection_count",
                Kind::Gauge,
                &[("db_client_connection_state", "idle")],
            ),
            ("db_client_connection_max", Kind::Gauge, &[]),
            ("http_server_request_duration_seconds", Kind::Histogram, &[]),
            (
                "rpc_server_duration_seconds",
                Kind::Histogram,
                &[
                    ("rpc_method", "ReserveStock"),
                    ("rpc_grpc_status_code", "0"),
                ],
            ),
            (
                "rpc_server_duration_seconds",
                Kind::Histogram,
                &[
                    ("rpc_method", "CommitReservation"),
                    ("rpc_grpc_status_code", "0"),
                ],
            ),
            ("ferrishop_outbox_pending", Kind::Gauge, &[]),
        ],
    ),
    (
        "payment",
        &[
            ("process_resident_memory_bytes", Kind::Gauge, &[]),
            ("process_open_fds", Kind::Gauge, &[]),
            ("tokio_runtime_alive_tasks", Kind::Gauge, &[]),
            (
                "db_client_connection_count",
                Kind::Gauge,
                &[("db_client_connection_state", "idle")],
            ),
            ("db_client_connection_max", Kind::Gauge, &[]),
            ("http_server_request_duration_seconds", Kind::Histogram, &[]),
            (
                "messaging_process_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "kafka"), ("outcome", "ack")],
            ),
            (
                "messaging_process_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "rabbitmq"), ("outcome", "ack")],
            ),
            (
                "messaging_publish_duration_seconds",
                Kind::Histogram,
                &[("outcome", "ok")],
            ),
            (
                "ferrishop_eventstore_append_duration_seconds",
                Kind::Histogram,
                &[("outcome", "ok")],
            ),
            ("ferrishop_outbox_pending", Kind::Gauge, &[]),
        ],
    ),
    (
        "order",
        &[
            ("process_resident_memory_bytes", Kind::Gauge, &[]),
            ("process_open_fds", Kind::Gauge, &[]),
            ("tokio_runtime_alive_tasks", Kind::Gauge, &[]),
            (
                "db_client_connection_count",
                Kind::Gauge,
                &[("db_client_connection_state", "idle")],
            ),
            ("db_client_connection_max", Kind::Gauge, &[]),
            ("http_server_request_duration_seconds", Kind::Histogram, &[]),
            (
                "rpc_server_duration_seconds",
                Kind::Histogram,
                &[("rpc_method", "PlaceOrder"), ("rpc_grpc_status_code", "0")],
            ),
            (
                "rpc_client_duration_seconds",
                Kind::Histogram,
                &[
                    ("rpc_method", "ReserveStock"),
                    ("rpc_grpc_status_code", "0"),
                ],
            ),
            (
                "messaging_publish_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "rabbitmq")],
            ),
            (
                "messaging_publish_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "kafka")],
            ),
            (
                "messaging_process_duration_seconds",
                Kind::Histogram,
                &[("messaging_system", "rabbitmq"), ("outcome", "ack")],
            ),
            (
                "ferrishop_saga_total",
                Kind::Counter,
                &[("outcome", "completed")],
            ),
            ("ferrishop_saga_duration_seconds", Kind::Histogram, &[]),
            (
                "ferrishop_orders_total",
                Kind::Counter,
                &[("status", "PENDING")],
            ),
            (
                "ferrishop_orders_total",
                Kind::Counter,
                &[("status", "CONFIRMED")],
            ),
            (
                "ferrishop_eventstore_append_duration_seconds",
                Kind::Histogram,
                &[("outcome", "ok")],
            ),
            ("ferrishop_projection_lag_events", Kind::Gauge, &[]),
            ("ferrishop_outbox_pending", Kind::Gauge, &[]),
        ],
    ),
];

/// (metric, kind, labels of a series that counts).
type Expectation = (&'static str, Kind, &'static [(&'static str, &'static str)]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Dashboard panels that must find series once the journey is done:
/// (file, panel title). Their queries use the labels the services record.
const CHARTED: [(&str, &str); 14] = [
    ("overview.json", "Request rate"),
    ("overview.json", "Resident memory"),
    ("overview.json", "Database connections"),
    ("overview.json", "Call rate"),
    ("overview.json", "Calls by method and status"),
    ("overview.json", "Requests by status code"),
    ("orders-sagas.json", "Order status changes"),
    ("orders-sagas.json", "Saga outcomes"),
    ("orders-sagas.json", "Inventory calls from order"),
    ("eventstore.json", "Appends by outcome"),
    ("eventstore.json", "Outbox pending"),
    ("eventstore.json", "Projection lag"),
    ("brokers.json", "Publish rate"),
    ("brokers.json", "Deliveries by outcome"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_shows_in_the_metrics_in_prometheus_and_in_the_logs() {
    let shop = Shop::start().await;
    let http = reqwest::Client::new();

    // A customer, registered with a trace of the test's own.
    let registration = Traceparent::new();
    let email = format!("{}@example.com", unique_name("observer"));
    let response = http
        .post(format!("{}/api/v1/users", shop.user.http_url()))
        .header("traceparent", registration.header())
        .json(&json!({"email": email, "password": "correct horse battery staple", "name": "Observer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let user: Value = response.json().await.unwrap();
    let user_id: Uuid = user["id"].as_str().unwrap().parse().unwrap();

    // user.registered (Kafka) opens the wallet.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = http
            .get(format!("{}/api/v1/wallet", shop.payment.http_url()))
            .header("x-user-id", user_id.to_string())
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no wallet for {user_id}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A product, and one order of it, placed as the gateway forwards it.
    let product = shop.product(1_250, 10).await;
    let placement = Traceparent::new();
    let mut request = as_user(
        order_pb::PlaceOrderRequest {
            items: vec![order_pb::OrderItem {
                product_id: product,
                quantity: 2,
            }],
            idempotency_key: Uuid::now_v7().to_string(),
        },
        user_id,
    );
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(placement.header()).unwrap(),
    );
    let order_id = shop
        .orders()
        .await
        .place_order(request)
        .await
        .expect("PlaceOrder")
        .into_inner()
        .order_id;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let order = shop
            .orders()
            .await
            .get_order(as_user(
                order_pb::GetOrderRequest {
                    order_id: order_id.clone(),
                    consistency_token: String::new(),
                },
                user_id,
            ))
            .await
            .map(|response| response.into_inner().order.unwrap());
        if let Ok(order) = &order
            && order.status() == order_pb::OrderStatus::Confirmed
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order {order_id} not CONFIRMED: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Each service's /metrics.
    let mut problems = Vec::new();
    for (service, expected) in EXPECTED {
        let process = shop.process(service);
        // Gauges are set by background loops: give them a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = http
                .get(format!("{}/metrics", process.http_url()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let samples = parse_exposition(&text);
            let missing: Vec<String> = expected
                .iter()
                .filter(|(name, kind, labels)| !has_sample(&samples, name, *kind, labels))
                .map(|(name, kind, labels)| format!("{service}: {name} ({kind:?}) {labels:?}"))
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
                problems.push(format!(
                    "{} missing or zero; {service} exports {names:?}",
                    missing.join(", ")
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(problems.is_empty(), "/metrics:\n{}", problems.join("\n"));

    // 2. A real Prometheus with deploy/prometheus.yml's jobs.
    let prometheus = Prometheus::start(&shop).await;
    let completed = prometheus
        .wait_for_result(r#"ferrishop_saga_total{outcome="completed"} > 0"#, PATIENCE)
        .await;
    assert!(
        completed
            .iter()
            .any(|series| series["metric"]["job"] == "order"),
        "ferrishop_saga_total{{outcome=\"completed\"}} > 0 came back without job=order: {completed:?}"
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let up = prometheus.query("up == 1").await.unwrap_or_default();
        let up_jobs: BTreeSet<&str> = up
            .iter()
            .filter_map(|series| series["metric"]["job"].as_str())
            .collect();
        if ["user", "inventory", "payment", "order", "prometheus"]
            .iter()
            .all(|job| up_jobs.contains(job))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape every job: up == 1 for {up_jobs:?} only"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let every target be scraped a few times, so that rates have samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut problems = Vec::new();
    for (dashboard, query) in dashboard_queries() {
        match prometheus.query(&query.expr).await {
            Err(error) => problems.push(format!(
                "{dashboard} {}: {error}: {}",
                query.panel, query.expr
            )),
            Ok(result) => {
                if CHARTED.contains(&(dashboard.as_str(), query.panel.as_str()))
                    && result.is_empty()
                {
                    problems.push(format!(
                        "{dashboard} {:?} finds no series after an order: {}",
                        query.panel, query.expr
                    ));
                }
            }
        }
    }
    for (dashboard, panel) in CHARTED {
        if !dashboard_queries()
            .iter()
            .any(|(file, query)| file == dashboard && query.panel == panel)
        {
            problems.push(format!("{dashboard} has no panel {panel:?} any more"));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries against Prometheus:\n{}",
        problems.join("\n")
    );

    // 3. The log lines of one request share its trace id.
    let lines = json_lines(&shop.user);
    let registration_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["http.route"] == "/api/v1/users" && line["http.request.method"] == "POST"
        })
        .collect();
    assert!(
        registration_lines
            .iter()
            .any(|line| line["message"] == "user registered"),
        "user logged no \"user registered\" line within the request: {registration_lines:?}"
    );
    for line in &registration_lines {
        assert_eq!(
            line["trace_id"], registration.trace_id,
            "a line of the registration request is not in its trace: {line}"
        );
        assert!(
            line["span_id"].as_str().is_some_and(|id| id.len() == 16),
            "{line}"
        );
    }
    // The order's request trace continues through the saga's calls: its
    // lines in order, inventory and payment carry the caller's trace id.
    let order_lines: Vec<(&str, Value)> = [
        ("order", &shop.order),
        ("inventory", &shop.inventory),
        ("payment", &shop.payment),
    ]
    .into_iter()
    .flat_map(|(service, process)| {
        json_lines(process)
            .into_iter()
            .filter(|line| line.to_string().contains(&order_id))
            .map(move |line| (service, line))
    })
    .collect();
    for (service, message) in [
        ("order", "order placed"),
        ("inventory", "stock reserved"),
        ("payment", "payment command handled"),
    ] {
        let lines: Vec<&Value> = order_lines
            .iter()
            .filter(|(s, line)| *s == service && line["message"] == message)
            .map(|(_, line)| line)
            .collect();
        assert!(
            !lines.is_empty(),
            "{service} logged no {message:?} line naming order {order_id}: {order_lines:?}"
        );
        for line in lines {
            assert_eq!(
                line["trace_id"], placement.trace_id,
                "{service}'s {message:?} line is not in the PlaceOrder call's trace: {line}"
            );
        }
    }
}

// ---------------------------------------------------------------- the shop

/// User, inventory, payment and order, each on a fresh database, wired
/// through topics, exchanges and subjects of their own.
struct Shop {
    user: ServiceProcess,
    inventory: ServiceProcess,
    payment: ServiceProcess,
    order: ServiceProcess,
    _databases: Vec<TestDatabase>,
}

impl Shop {
    async fn start() -> Self {
        let (amqp, brokers, nats_url) = (rabbitmq().await, kafka().await, nats().await);
        let user_events = unique_name("user-events");
        let payment_events = unique_name("payment-events");
        let order_events = unique_name("order-events");
        let commands = unique_name("payment-commands");
        let replies = unique_name("order-replies");
        let status_prefix = unique_name("orders");
        let mut databases = Vec::new();
        let mut spawn = async |binary: &str, extra: &[(&str, String)]| {
            let database = fresh_database().await;
            let mut spawn = Spawn::new(binary)
                .env("DATABASE_URL", &database.url)
                .env("AMQP_URL", &amqp)
                .env("KAFKA_BROKERS", &brokers)
                .env("NATS_URL", &nats_url)
                .env("RUST_LOG", "info,sqlx=warn,tower_http=debug");
            for (key, value) in extra {
                spawn = spawn.env(key, value.clone());
            }
            let process = spawn.start().await;
            process.wait_ready(PATIENCE).await;
            databases.push(database);
            process
        };
        let user = spawn("user", &[("USER_EVENTS_TOPIC", user_events.clone())]).await;
        let inventory = spawn("inventory", &[]).await;
        let payment = spawn(
            "payment",
            &[
                ("PAYMENT_COMMANDS_EXCHANGE", commands.clone()),
                ("USER_EVENTS_TOPIC", user_events.clone()),
                ("PAYMENT_EVENTS_TOPIC", payment_events.clone()),
                ("CONSUMER_GROUP", unique_name("payment")),
            ],
        )
        .await;
        wait_for_log(&payment, &["\"consuming\"", &commands]).await;
        wait_for_log(&payment, &["\"consuming\"", &user_events]).await;
        let order = spawn(
            "order",
            &[
                ("INVENTORY_GRPC_URL", inventory.grpc_url()),
                ("PAYMENT_COMMANDS_EXCHANGE", commands.clone()),
                ("ORDER_REPLIES_EXCHANGE", replies.clone()),
                ("ORDER_EVENTS_TOPIC", order_events),
                ("ORDER_STATUS_SUBJECT_PREFIX", status_prefix),
                ("CONSUMER_GROUP", unique_name("order")),
            ],
        )
        .await;
        wait_for_log(&order, &["\"consuming\"", &replies]).await;
        Self {
            user,
            inventory,
            payment,
            order,
            _databases: databases,
        }
    }

    fn process(&self, name: &str) -> &ServiceProcess {
        match name {
            "user" => &self.user,
            "inventory" => &self.inventory,
            "payment" => &self.payment,
            "order" => &self.order,
            other => panic!("no {other} in this shop"),
        }
    }

    async fn orders(&self) -> OrderServiceClient<tonic::transport::Channel> {
        OrderServiceClient::new(testkit::grpc::channel(&self.order.grpc_url()).await)
    }

    /// A new product at `price` minor units with `stock` units.
    async fn product(&self, price: i64, stock: u32) -> String {
        let mut client =
            InventoryServiceClient::new(testkit::grpc::channel(&self.inventory.grpc_url()).await);
        let mut request = as_user(
            inventory_pb::CreateProductRequest {
                sku: unique_name("SKU").to_uppercase(),
                name: "Observable product".into(),
                description: "A product of the observability test".into(),
                price: Some(Money {
                    amount: price,
                    currency: "EUR".into(),
                }),
                category: inventory_pb::Category::Books.into(),
                initial_stock: stock,
                reorder_policy: None,
            },
            Uuid::now_v7(),
        );
        request
            .metadata_mut()
            .insert("x-user-roles", MetadataValue::from_static("admin"));
        client
            .create_product(request)
            .await
            .expect("CreateProduct")
            .into_inner()
            .product
            .expect("a product")
            .id
    }
}

/// `message` as the gateway forwards it for `user`.
fn as_user<T>(message: T, user: Uuid) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-user-id",
        MetadataValue::try_from(user.to_string()).unwrap(),
    );
    request
}

async fn wait_for_log(process: &ServiceProcess, needles: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    while !process
        .stdout_lines()
        .iter()
        .any(|line| needles.iter().all(|needle| line.contains(needle)))
    {
        assert!(
            Instant::now() < deadline,
            "{} never logged {needles:?}",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json_lines(process: &ServiceProcess) -> Vec<Value> {
    process
        .stdout_lines()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A W3C trace context the test starts.
struct Traceparent {
    trace_id: String,
    span_id: String,
}

impl Traceparent {
    fn new() -> Self {
        Self {
            trace_id: Uuid::new_v4().simple().to_string(),
            span_id: Uuid::new_v4().simple().to_string()[..16].to_owned(),
        }
    }

    fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

// ------------------------------------------------------------- /metrics

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
                None => (series, BTreeMap::new()),
            };
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y \"quoted\""` → {a: x, b: y "quoted"}.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

fn has_sample(samples: &[Sample], name: &str, kind: Kind, labels: &[(&str, &str)]) -> bool {
    let series = match kind {
        Kind::Histogram => format!("{name}_count"),
        Kind::Counter | Kind::Gauge => name.to_owned(),
    };
    samples.iter().any(|sample| {
        sample.name == series
            && labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            && (kind == Kind::Gauge || sample.value > 0.0)
    })
}

// ----------------------------------------------------------- Prometheus

/// A `prometheus` process scraping the shop every second.
struct Prometheus {
    url: String,
    _child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// `deploy/prometheus.yml` with each job of a spawned service pointed at its
/// port, scrape interval 1s; jobs of what is not running here (gateway,
/// RabbitMQ's plugin) are left out.
fn scrape_config(shop: &Shop, own_port: u16) -> (String, Vec<String>) {
    let path = repo_root().join("deploy/prometheus.yml");
    let deployed: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut jobs = Vec::new();
    let mut left_out = Vec::new();
    for job in deployed["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        let target = match name.as_str() {
            "user" | "inventory" | "payment" | "order" => {
                shop.process(&name).http_addr.unwrap().to_string()
            }
            "prometheus" => format!("127.0.0.1:{own_port}"),
            _ => {
                left_out.push(name);
                continue;
            }
        };
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        jobs.push(json!({
            "job_name": name,
            "metrics_path": path,
            "static_configs": [{"targets": [target]}],
        }));
    }
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    });
    // JSON is YAML.
    (config.to_string(), left_out)
}

impl Prometheus {
    async fn start(shop: &Shop) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus is not installed: `scripts/infra-up.sh` installs it (Debian package prometheus)"
            )
        });
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("ferrishop-prometheus"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (config, left_out) = scrape_config(shop, port);
        for job in ["user", "inventory", "payment", "order"] {
            assert!(
                config.contains(&format!("\"job_name\":\"{job}\"")),
                "deploy/prometheus.yml has no job {job}"
            );
        }
        eprintln!("prometheus: not scraped here (not started by this test): {left_out:?}");
        std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
        let mut child = tokio::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[prometheus] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
            log,
            dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s with\n{config}\n{:?}",
                prometheus.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query over the HTTP API: the result vector, or the error.
    async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let response: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())?;
        if response["status"] != "success" {
            return Err(format!("{}: {}", response["errorType"], response["error"]));
        }
        match &response["data"]["result"] {
            Value::Array(result) => Ok(result.clone()),
            // A scalar or string result: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// Polls `query` until it returns series.
    async fn wait_for_result(&self, query: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let result = self.query(query).await;
            if let Ok(result) = &result
                && !result.is_empty()
            {
                return result.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never answered {query} with a series: {result:?}; log {:?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

// ------------------------------------------------------------ dashboards

struct PanelQuery {
    panel: String,
    expr: String,
}

/// Every panel query of `deploy/grafana/dashboards/*.json`, with Grafana's
/// variables replaced as Grafana would for "All" and a 1-minute rate
/// interval: (file, query).
fn dashboard_queries() -> Vec<(String, PanelQuery)> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let variables: Vec<String> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        let mut panels: Vec<&Value> = Vec::new();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let mut expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "1h");
                for variable in &variables {
                    expr = expr.replace(&format!("${variable}"), ".*");
                }
                queries.push((
                    file.clone(),
                    PanelQuery {
                        panel: panel["title"].as_str().unwrap_or_default().to_owned(),
                        expr,
                    },
                ));
            }
        }
    }
    queries
}

#[test]
fn exposition_lines_parse() {
    let samples = parse_exposition(
        "# TYPE x counter\nferrishop_saga_total{saga=\"order\",outcome=\"completed\"} 2\nup 1\nq{a=\"say \\\"hi\\\", ok\",b=\"c\"} 0.5\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].labels["outcome"], "completed");
    assert_eq!(samples[1].name, "up");
    assert_eq!(samples[2].labels["a"], "say \"hi\", ok");
    assert_eq!(samples[2].labels["b"], "c");
    assert!(has_sample(
        &samples,
        "ferrishop_saga_total",
        Kind::Counter,
        &[("outcome", "completed")]
    ));
    assert!(!has_sample(
        &samples,
        "ferrishop_saga_total",
        Kind::Counter,
        &[("outcome", "failed")]
    ));
    assert!(has_sample(&samples, "q", Kind::Gauge, &[]));
}
