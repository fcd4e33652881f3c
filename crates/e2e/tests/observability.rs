//! Observability end to end: one customer and one order through the whole
//! shop (`e2e::stack`: user.registered over Kafka opens the wallet, the saga
//! reserves stock over gRPC, charges over RabbitMQ, confirms), then
//!
//! - each service's `/metrics` carries the DESIGN.md metrics it owns, with
//!   non-zero counts, and the process, runtime and connection-pool gauges;
//! - a real Prometheus (Debian's `prometheus`, started here) scraping the
//!   stack with `deploy/prometheus.yml`'s job names answers
//!   `ferrishop_saga_total{outcome="completed"} > 0`, the dashboards'
//!   queries run against it and find the series they chart, and it stores
//!   the exemplar that names the order's trace on the gateway's latency
//!   bucket (scraped as OpenMetrics);
//! - the JSON log lines a service wrote for one request carry that request's
//!   trace id (the caller's `traceparent`, continued through the gateway).
//!
//! The gateway's own metrics are checked where it is (`gateway_*`); here it
//! is one more scrape target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::stack::{PATIENCE, Service, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::brokers::unique_name;
use testkit::net::free_port;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// What each service must show after the journey: (metric, kind, labels a
/// series with a non-zero count must have). Counters and histograms need a
/// non-zero count; gauges need a series (a lag or backlog of 0 is right).
const EXPECTED: [(Service, &[Expectation]); 4] = [
    (
        Service::User,
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
        Service::Inventory,
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
        Service::Payment,
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
        Service::Order,
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
    let stack = Stack::builder()
        // The requests' own lines: tower-http's "started/finished
        // processing request" are debug events.
        .env_all("RUST_LOG", "info,sqlx=warn,tower_http=debug")
        .start()
        .await;

    // A customer, registered with a trace of the test's own (and a request
    // id, which tells its lines from the administrator's registration).
    let registration = Traceparent::new();
    let registration_id = Uuid::now_v7().to_string();
    let customer = stack
        .customer_with(|request| {
            request
                .header("traceparent", registration.header())
                .header("x-request-id", &registration_id)
        })
        .await;
    // user.registered (Kafka) opens the wallet.
    stack.wallet(&customer).await;

    // A product, and one order of it, placed with another trace.
    let admin = stack.admin().await;
    let product = stack.product(&admin, 1_250, 10).await;
    let placement = Traceparent::new();
    let request = customer
        .api
        .request(Method::POST, "/api/v1/orders")
        .header("traceparent", placement.header())
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({"items": [{"product_id": product["id"], "quantity": 2}]}));
    let placed = customer.api.send(request).await;
    assert_eq!(placed.status, 202, "{placed}");
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    stack
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;

    // 1. Each service's /metrics.
    let mut problems = Vec::new();
    for (service, expected) in EXPECTED {
        let name = service.binary();
        // Gauges are set by background loops: give them a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let samples = parse_exposition(&stack.metrics(service).await);
            let missing: Vec<String> = expected
                .iter()
                .filter(|(metric, kind, labels)| !has_sample(&samples, metric, *kind, labels))
                .map(|(metric, kind, labels)| format!("{name}: {metric} ({kind:?}) {labels:?}"))
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
                problems.push(format!(
                    "{} missing or zero; {name} exports {names:?}",
                    missing.join(", ")
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(problems.is_empty(), "/metrics:\n{}", problems.join("\n"));

    // 2. A real Prometheus with deploy/prometheus.yml's jobs.
    let prometheus = Prometheus::start(&stack).await;
    let completed = prometheus
        .wait_for_result(r#"ferrishop_saga_total{outcome="completed"} > 0"#, PATIENCE)
        .await;
    assert!(
        completed
            .iter()
            .any(|series| series["metric"]["job"] == "order"),
        "ferrishop_saga_total{{outcome=\"completed\"}} > 0 came back without job=order: {completed:?}"
    );
    // The gateway's latency histogram of the placement has one request,
    // and its bucket's exemplar is that request's trace.
    let exemplars = prometheus
        .wait_for_exemplars(
            r#"http_server_request_duration_seconds_bucket{job="gateway",http_route="/api/v1/orders",http_request_method="POST"}"#,
            PATIENCE,
        )
        .await;
    assert!(
        exemplars
            .iter()
            .all(
                |exemplar| exemplar["labels"]["trace_id"] == placement.trace_id.as_str()
                    && exemplar["labels"]["span_id"]
                        .as_str()
                        .is_some_and(|id| id.len() == 16)
            ),
        "the exemplars of POST /api/v1/orders at the gateway are not the placement's trace {}: {exemplars:?}",
        placement.trace_id
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let up = prometheus.query("up == 1").await.unwrap_or_default();
        let up_jobs: BTreeSet<&str> = up
            .iter()
            .filter_map(|series| series["metric"]["job"].as_str())
            .collect();
        if Service::ALL
            .iter()
            .map(|service| service.binary())
            .chain(["prometheus"])
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
    // A rate needs two scrapes of a target: asked until every charted
    // query has series, or the deadline.
    let deadline = Instant::now() + PATIENCE;
    let mut problems = loop {
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
        if problems.is_empty() || Instant::now() >= deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
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
    let lines = stack.user.json_lines();
    let registration_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["http.route"] == "/api/v1/users"
                && line["http.request.method"] == "POST"
                && line["request_id"] == registration_id.as_str()
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
    let order_lines: Vec<(&str, Value)> = [Service::Order, Service::Inventory, Service::Payment]
        .into_iter()
        .flat_map(|service| {
            stack
                .part(service)
                .json_lines()
                .into_iter()
                .filter(|line| line.to_string().contains(&order_id))
                .map(move |line| (service.binary(), line))
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

/// A `prometheus` process scraping the stack every second.
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

/// `deploy/prometheus.yml` with the job of each of the stack's services
/// pointed at its HTTP port, scrape interval 1s; jobs of what is not running
/// here (RabbitMQ's plugin) are left out.
fn scrape_config(stack: &Stack, own_port: u16) -> (String, Vec<String>) {
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
        let service = Service::ALL
            .into_iter()
            .find(|service| service.binary() == name);
        let target = match (service, name.as_str()) {
            (Some(service), _) => stack.part(service).http_addr().to_string(),
            (None, "prometheus") => format!("127.0.0.1:{own_port}"),
            (None, _) => {
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
    async fn start(stack: &Stack) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus is not installed: `scripts/infra-up.sh` installs it (Debian package prometheus)"
            )
        });
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("ferrishop-prometheus"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (config, left_out) = scrape_config(stack, port);
        for job in Service::ALL.map(Service::binary) {
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
            .arg("--enable-feature=exemplar-storage")
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

    /// `GET /api/v1/{endpoint}` with `params`: the answer's `data`, or the
    /// error.
    async fn api(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let response: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/{endpoint}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())?;
        if response["status"] != "success" {
            return Err(format!("{}: {}", response["errorType"], response["error"]));
        }
        Ok(response["data"].clone())
    }

    /// An instant query over the HTTP API: the result vector, or the error.
    async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", query.to_owned())]).await?;
        match &data["result"] {
            Value::Array(result) => Ok(result.clone()),
            // A scalar or string result: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The exemplars of the series `selector` selects, over the last ten
    /// minutes.
    async fn exemplars(&self, selector: &str) -> Result<Vec<Value>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let data = self
            .api(
                "query_exemplars",
                &[
                    ("query", selector.to_owned()),
                    ("start", (now - 600).to_string()),
                    ("end", (now + 60).to_string()),
                ],
            )
            .await?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Polls `query` until it returns series.
    async fn wait_for_result(&self, query: &str, within: Duration) -> Vec<Value> {
        self.wait_for_some(&format!("an answer to {query}"), within, || {
            self.query(query)
        })
        .await
    }

    /// Polls the exemplars of `selector` until there are some.
    async fn wait_for_exemplars(&self, selector: &str, within: Duration) -> Vec<Value> {
        self.wait_for_some(&format!("an exemplar of {selector}"), within, || {
            self.exemplars(selector)
        })
        .await
    }

    /// Calls `fetch` until it returns something, for at most `within`.
    async fn wait_for_some<F, Fut>(&self, what: &str, within: Duration, fetch: F) -> Vec<Value>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Value>, String>>,
    {
        let deadline = Instant::now() + within;
        loop {
            let result = fetch().await;
            if let Ok(found) = &result
                && !found.is_empty()
            {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never gave {what}: {result:?}; log {:?}",
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
