//! The observability configuration: Grafana dashboards and datasources, the
//! Prometheus scrape configuration and the OpenTelemetry Collector's.
//!
//! - every PromQL query of the dashboards (and of the Jaeger datasource's
//!   trace-to-metrics links) parses with `promtool`;
//! - it names only metrics the workspace's code records (read from the
//!   sources, see `deploy_checks::exported`) and only labels those metrics
//!   carry;
//! - every DESIGN.md metric is recorded somewhere and charted somewhere;
//! - every datasource reference is a provisioned uid of the right type;
//! - `promtool check config` accepts `deploy/prometheus.yml`;
//! - the collector configuration matches `deploy/otel-collector.schema.json`
//!   (check-jsonschema) and its pipelines reference only declared
//!   components;
//! - latency panels show exemplars, which Prometheus stores and Grafana
//!   links to Jaeger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use deploy_checks::exported::{Declared, Kind, Scan, scan_workspace};
use deploy_checks::grafana::{
    DATASOURCES, Dashboard, Query, VariableQuery, load_dashboards, parse_variable_query,
    provisioned_datasources,
};
use deploy_checks::promql::{analyze, expand_grafana};
use deploy_checks::yaml::{self, entries, items, scalar, str_at};
use deploy_checks::{
    DESIGN_METRICS, assert_no_problems, describe, read, repo_path, run, run_tool, scratch_dir, tool,
};
use serde_json::{Value, json};

/// The five dashboards: file, title, and series each must chart.
const DASHBOARDS: [(&str, &str, &[&str]); 5] = [
    (
        "overview.json",
        "Ferrishop / Overview",
        &[
            "http_server_request_duration_seconds_count",
            "http_server_request_duration_seconds_bucket",
            "rpc_server_duration_seconds_count",
            "rpc_server_duration_seconds_bucket",
        ],
    ),
    (
        "orders-sagas.json",
        "Ferrishop / Orders & sagas",
        &[
            "ferrishop_orders_total",
            "ferrishop_saga_total",
            "ferrishop_saga_duration_seconds_bucket",
        ],
    ),
    (
        "eventstore.json",
        "Ferrishop / Event store & projections",
        &[
            "ferrishop_eventstore_append_duration_seconds_bucket",
            "ferrishop_projection_lag_events",
            "ferrishop_outbox_pending",
        ],
    ),
    (
        "gateway.json",
        "Ferrishop / Gateway",
        &[
            "ferrishop_rate_limited_total",
            "ferrishop_circuit_breaker_state",
            "http_client_request_duration_seconds_bucket",
            "rpc_client_duration_seconds_bucket",
        ],
    ),
    (
        "brokers.json",
        "Ferrishop / Brokers",
        &[
            "messaging_publish_duration_seconds_count",
            "messaging_publish_duration_seconds_bucket",
            "messaging_process_duration_seconds_count",
            "messaging_process_duration_seconds_bucket",
        ],
    ),
];

/// DESIGN.md metrics whose owner does not record them yet: the binary that
/// will, and the labels the dashboards expect of them (OpenTelemetry's
/// semantic conventions). Once the code records one, its real labels are
/// checked instead and the entry goes. None is awaited today.
const AWAITED: [(&str, &str, &[&str]); 0] = [];

/// Metrics recorded by something else than the workspace's code.
const EXTERNAL: [(&str, &str); 5] = [
    ("up", "Prometheus, per scrape target"),
    (
        "rabbitmq_queue_messages_ready",
        "RabbitMQ's rabbitmq_prometheus plugin",
    ),
    (
        "rabbitmq_queue_messages",
        "RabbitMQ's rabbitmq_prometheus plugin",
    ),
    (
        "rabbitmq_connections",
        "RabbitMQ's rabbitmq_prometheus plugin",
    ),
    (
        "rabbitmq_consumers",
        "RabbitMQ's rabbitmq_prometheus plugin",
    ),
];

/// Labels every scraped series has (Prometheus adds them).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Metrics recorded without the `metrics` macros (the messaging crate
/// builds and caches their keys by hand on the publish/consume hot path).
/// The scan checks each against its file and against any macro call.
const DECLARED: [Declared; 2] = [
    Declared {
        name: "messaging_publish_duration_seconds",
        kind: Kind::Histogram,
        labels: &["messaging_system", "messaging_destination_name", "outcome"],
        file: "crates/messaging/src/telemetry.rs",
    },
    Declared {
        name: "messaging_process_duration_seconds",
        kind: Kind::Histogram,
        labels: &["messaging_system", "messaging_destination_name", "outcome"],
        file: "crates/messaging/src/telemetry.rs",
    },
];

fn scan() -> Scan {
    let mut scan = scan_workspace(&["crates", "services"]);
    scan.add_declared(&DECLARED);
    assert_no_problems(
        "metric calls in the sources that cannot be read",
        &scan.problems,
    );
    scan
}

/// Every PromQL query of the dashboards and of the provisioned datasources,
/// Grafana's variables expanded, with the variables each one used.
fn all_queries(dashboards: &[Dashboard]) -> Vec<(Query, BTreeSet<String>)> {
    let mut queries = Vec::new();
    let mut push = |query: Query| {
        let (expr, used) = expand_grafana(&query.expr);
        queries.push((Query { expr, ..query }, used));
    };
    for dashboard in dashboards {
        dashboard.queries().into_iter().for_each(&mut push);
        for variable in dashboard.variable_queries() {
            match parse_variable_query(&variable.expr) {
                VariableQuery::LabelValues { selector, .. } if !selector.is_empty() => {
                    push(Query {
                        expr: selector,
                        ..variable
                    });
                }
                VariableQuery::Expr(expr) => push(Query { expr, ..variable }),
                _ => {}
            }
        }
    }
    for (place, query) in traces_to_metrics_queries() {
        push(Query { place, expr: query });
    }
    queries
}

/// The queries of the Jaeger datasource's trace-to-metrics links, as Grafana
/// runs them: `$$` is provisioning's escaped `$`, `$__tags` the span's tags
/// as label matchers.
fn traces_to_metrics_queries() -> Vec<(String, String)> {
    let provisioning = yaml::load(DATASOURCES);
    let mut queries = Vec::new();
    for source in items(provisioning.get("datasources")) {
        for link in items(source.pointer("/jsonData/tracesToMetrics/queries")) {
            let query = str_at(link, "/query")
                .unwrap_or_default()
                .replace("$$", "$")
                .replace("$__tags", r#"job="grafana_variable""#);
            queries.push((
                format!(
                    "{DATASOURCES}: {} tracesToMetrics {:?}",
                    str_at(source, "/uid").unwrap_or_default(),
                    str_at(link, "/name").unwrap_or_default()
                ),
                query,
            ));
        }
    }
    queries
}

/// A `promtool check rules` file with one recording rule per query.
fn rules_file(queries: &[&str]) -> String {
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(index, expr)| json!({"record": format!("dashboard_query:{index}"), "expr": expr}))
        .collect();
    let document = json!({"groups": [{"name": "dashboards", "rules": rules}]});
    // JSON is YAML.
    serde_json::to_string_pretty(&document).unwrap()
}

fn promtool_check_rules(label: &str, queries: &[&str]) -> std::process::Output {
    let dir = scratch_dir(label);
    let path = dir.join("rules.yml");
    std::fs::write(&path, rules_file(queries)).unwrap();
    let output = run(Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&path));
    std::fs::remove_dir_all(&dir).ok();
    output
}

#[test]
fn the_five_dashboards_exist_and_chart_their_metrics() {
    let dashboards = load_dashboards();
    let mut problems = Vec::new();
    let mut uids = BTreeMap::new();
    let mut titles = BTreeMap::new();
    for dashboard in &dashboards {
        if let Some(other) = uids.insert(dashboard.uid().to_owned(), dashboard.file.clone()) {
            problems.push(format!(
                "{} and {other} share the uid {:?}",
                dashboard.file,
                dashboard.uid()
            ));
        }
        if dashboard.uid().is_empty() || dashboard.uid().len() > 40 {
            problems.push(format!(
                "{}: a uid of 1 to 40 characters is needed for stable links, found {:?}",
                dashboard.file,
                dashboard.uid()
            ));
        }
        if let Some(other) = titles.insert(dashboard.title().to_owned(), dashboard.file.clone()) {
            problems.push(format!("{} and {other} share a title", dashboard.file));
        }
        let tags: Vec<String> = items(dashboard.json.get("tags"))
            .iter()
            .filter_map(scalar)
            .collect();
        if !tags.contains(&"ferrishop".to_owned()) {
            problems.push(format!(
                "{}: not tagged ferrishop (the dashboards' links list that tag)",
                dashboard.file
            ));
        }
        let mut ids = BTreeSet::new();
        for panel in dashboard.panels() {
            let title = str_at(panel, "/title").unwrap_or_default();
            let id = panel.get("id").and_then(Value::as_i64);
            if !id.is_some_and(|id| ids.insert(id)) {
                problems.push(format!(
                    "{}: panel {title:?} has a missing or repeated id {id:?}",
                    dashboard.file
                ));
            }
            let x = panel.pointer("/gridPos/x").and_then(Value::as_i64);
            let w = panel.pointer("/gridPos/w").and_then(Value::as_i64);
            if !matches!((x, w), (Some(x), Some(w)) if x >= 0 && w > 0 && x + w <= 24) {
                problems.push(format!(
                    "{}: panel {title:?} does not fit Grafana's 24 columns: x={x:?} w={w:?}",
                    dashboard.file
                ));
            }
            if str_at(panel, "/type") != Some("row") && items(panel.get("targets")).is_empty() {
                problems.push(format!("{}: panel {title:?} has no query", dashboard.file));
            }
            if title.is_empty() {
                problems.push(format!("{}: a panel without a title", dashboard.file));
            }
        }
    }
    for (file, title, required) in DASHBOARDS {
        let Some(dashboard) = dashboards.iter().find(|d| d.file == file) else {
            problems.push(format!("deploy/grafana/dashboards/{file} is missing"));
            continue;
        };
        if dashboard.title() != title {
            problems.push(format!(
                "{file}: title {:?}, expected {title:?}",
                dashboard.title()
            ));
        }
        let charted: BTreeSet<String> = dashboard
            .queries()
            .iter()
            .filter_map(|query| analyze(&expand_grafana(&query.expr).0).ok())
            .flat_map(|analysis| {
                analysis
                    .selectors
                    .into_iter()
                    .map(|selector| selector.metric)
            })
            .collect();
        for series in required {
            if !charted.contains(*series) {
                problems.push(format!("{file} charts no {series}"));
            }
        }
    }
    // RED: the overview shows p50, p95 and p99 of both server histograms.
    if let Some(overview) = dashboards.iter().find(|d| d.file == "overview.json") {
        let queries: Vec<String> = overview.queries().into_iter().map(|q| q.expr).collect();
        for metric in [
            "http_server_request_duration_seconds_bucket",
            "rpc_server_duration_seconds_bucket",
        ] {
            for quantile in ["0.5", "0.95", "0.99"] {
                let prefix = format!("histogram_quantile({quantile},");
                if !queries
                    .iter()
                    .any(|q| q.starts_with(&prefix) && q.contains(metric))
                {
                    problems.push(format!(
                        "overview.json has no {prefix} ...{metric}...) panel query"
                    ));
                }
            }
        }
    }
    // Dead letters come from the process histogram's outcome label.
    if let Some(brokers) = dashboards.iter().find(|d| d.file == "brokers.json")
        && !brokers
            .queries()
            .iter()
            .any(|q| q.expr.contains(r#"outcome="dead_letter""#))
    {
        problems.push("brokers.json counts no outcome=\"dead_letter\" deliveries".to_owned());
    }
    assert_no_problems("deploy/grafana/dashboards", &problems);
}

#[test]
fn every_query_parses_with_promtool() {
    let dashboards = load_dashboards();
    let queries = all_queries(&dashboards);
    assert!(
        queries.len() > 40,
        "only {} queries found: the extraction missed some",
        queries.len()
    );
    let mut problems = Vec::new();
    // Variables a query uses are defined by its dashboard.
    for dashboard in &dashboards {
        let defined: BTreeSet<String> = dashboard
            .variables()
            .iter()
            .filter_map(|v| str_at(v, "/name").map(str::to_owned))
            .collect();
        for query in dashboard.queries() {
            let (_, used) = expand_grafana(&query.expr);
            for variable in used.difference(&defined) {
                problems.push(format!(
                    "{}: ${variable} is not a variable of the dashboard",
                    query.place
                ));
            }
        }
    }
    let exprs: Vec<&str> = queries.iter().map(|(q, _)| q.expr.as_str()).collect();
    let output = promtool_check_rules("promql", &exprs);
    if !output.status.success() {
        let numbered: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(index, (query, _))| {
                format!("dashboard_query:{index} = {}: {}", query.place, query.expr)
            })
            .collect();
        problems.push(format!(
            "promtool check rules refused a query: {}\nthe queries:\n{}",
            describe(&output),
            numbered.join("\n")
        ));
    }
    // The check can fail: a query with a missing parenthesis, or a variable
    // where PromQL needs a duration, is refused.
    for broken in [
        "sum by (job) (rate(http_server_request_duration_seconds_count[1m])",
        &expand_grafana("rate(up[$window])").0,
    ] {
        if promtool_check_rules("promql-broken", &[broken])
            .status
            .success()
        {
            problems.push(format!("promtool accepted the broken query {broken}"));
        }
    }
    assert_no_problems("dashboard queries", &problems);
}

#[test]
fn queries_use_only_metrics_and_labels_the_code_records() {
    let scan = scan();
    let series = scan.series();
    let dashboards = load_dashboards();
    let mut problems = Vec::new();
    for (query, _) in all_queries(&dashboards) {
        let analysis = match analyze(&query.expr) {
            Ok(analysis) => analysis,
            Err(error) => {
                problems.push(format!("{}: {error}", query.place));
                continue;
            }
        };
        // The labels the query may use, per selector; None when unknown.
        let mut all_allowed: Option<BTreeSet<String>> = Some(BTreeSet::new());
        for selector in &analysis.selectors {
            let mut allowed: Option<BTreeSet<String>> = None;
            if selector.metric.is_empty() {
                problems.push(format!(
                    "{}: a selector without a metric name: {}",
                    query.place, query.expr
                ));
            } else if let Some(metric) = series.get(&selector.metric) {
                let mut labels = scan.metrics[*metric].labels.clone();
                if selector.metric.ends_with("_bucket") {
                    labels.insert("le".to_owned());
                }
                allowed = Some(labels);
            } else if let Some((name, _, labels)) = AWAITED.iter().find(|(name, _, _)| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| selector.metric == format!("{name}{suffix}"))
            }) {
                let _ = name;
                let mut labels: BTreeSet<String> =
                    labels.iter().map(|label| (*label).to_owned()).collect();
                if selector.metric.ends_with("_bucket") {
                    labels.insert("le".to_owned());
                }
                allowed = Some(labels);
            } else if EXTERNAL.iter().any(|(name, _)| *name == selector.metric) {
                // Labels set by another exporter: not checked.
            } else {
                problems.push(format!(
                    "{}: {} is recorded by no code of the workspace (nor is it one of {:?}): {}",
                    query.place,
                    selector.metric,
                    EXTERNAL.map(|(name, _)| name),
                    query.expr
                ));
            }
            match (allowed, all_allowed.as_mut()) {
                (Some(mut labels), Some(all)) => {
                    labels.extend(TARGET_LABELS.map(str::to_owned));
                    for label in &selector.labels {
                        if !labels.contains(label) {
                            problems.push(format!(
                                "{}: {} has no label {label} (it has {:?}): {}",
                                query.place, selector.metric, labels, query.expr
                            ));
                        }
                    }
                    all.extend(labels);
                }
                _ => all_allowed = None,
            }
        }
        if let Some(all) = all_allowed {
            for label in analysis.grouping.difference(&all) {
                problems.push(format!(
                    "{}: groups or matches by {label}, which none of its metrics has: {}",
                    query.place, query.expr
                ));
            }
        }
    }
    // Variable label_values(selector, label): the label exists.
    for dashboard in &dashboards {
        for variable in dashboard.variable_queries() {
            if let VariableQuery::LabelValues { selector, label } =
                parse_variable_query(&variable.expr)
            {
                let metric = analyze(&selector)
                    .ok()
                    .and_then(|a| a.selectors.first().map(|s| s.metric.clone()));
                let labels = metric
                    .as_deref()
                    .and_then(|m| series.get(m))
                    .map(|m| scan.metrics[*m].labels.clone())
                    .unwrap_or_default();
                if !TARGET_LABELS.contains(&label.as_str()) && !labels.contains(&label) {
                    problems.push(format!(
                        "{}: {metric:?} has no label {label}",
                        variable.place
                    ));
                }
            }
        }
    }
    assert_no_problems("dashboard queries against the recorded metrics", &problems);
}

#[test]
fn every_design_metric_is_recorded_with_its_kind_and_charted() {
    let scan = scan();
    let dashboards = load_dashboards();
    let charted: BTreeSet<String> = all_queries(&dashboards)
        .iter()
        .filter_map(|(query, _)| analyze(&query.expr).ok())
        .flat_map(|analysis| analysis.selectors.into_iter().map(|s| s.metric))
        .collect();
    let mut problems = Vec::new();
    for name in DESIGN_METRICS {
        match scan.metrics.get(name) {
            Some(metric) => {
                let expected = if name.ends_with("_seconds") {
                    Kind::Histogram
                } else if name.ends_with("_total") {
                    Kind::Counter
                } else {
                    Kind::Gauge
                };
                if metric.kind != expected {
                    problems.push(format!(
                        "{name} is recorded as a {:?} ({}), its name says {expected:?}",
                        metric.kind,
                        metric.sites.join(", ")
                    ));
                }
                if AWAITED.iter().any(|(awaited, _, _)| *awaited == name) {
                    problems.push(format!(
                        "{name} is recorded now ({}): drop it from AWAITED",
                        metric.sites.join(", ")
                    ));
                }
            }
            None if AWAITED.iter().any(|(awaited, _, _)| *awaited == name) => {}
            None => problems.push(format!(
                "{name} (DESIGN.md) is recorded nowhere in crates/ or services/"
            )),
        }
        let on_a_dashboard = charted.iter().any(|series| {
            series == name
                || series
                    .strip_prefix(name)
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        });
        if !on_a_dashboard {
            problems.push(format!("{name} (DESIGN.md) is on no dashboard"));
        }
    }
    // The scan is not vacuous: the labels DESIGN.md gives are found.
    for (name, labels) in [
        ("ferrishop_saga_total", &["saga", "outcome"][..]),
        ("ferrishop_orders_total", &["status"]),
        ("ferrishop_projection_lag_events", &["projection"]),
        ("ferrishop_circuit_breaker_state", &["upstream"]),
        (
            "http_server_request_duration_seconds",
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        ),
        (
            "http_client_request_duration_seconds",
            &[
                "http_request_method",
                "server_address",
                "http_response_status_code",
            ],
        ),
        (
            "rpc_server_duration_seconds",
            &["rpc_service", "rpc_method", "rpc_grpc_status_code"],
        ),
        (
            "messaging_process_duration_seconds",
            &["messaging_system", "messaging_destination_name", "outcome"],
        ),
    ] {
        let found = scan.metrics.get(name).map(|m| &m.labels);
        for label in labels {
            if !found.is_some_and(|found| found.contains(*label)) {
                problems.push(format!(
                    "{name} should carry the label {label} (DESIGN.md); found {found:?}"
                ));
            }
        }
    }
    assert_no_problems("DESIGN.md metrics", &problems);
}

#[test]
fn datasource_references_are_provisioned_uids_of_their_type() {
    let provisioned = provisioned_datasources();
    let mut problems = Vec::new();
    for dashboard in load_dashboards() {
        for reference in dashboard.datasource_refs() {
            let uid = str_at(&reference.value, "/uid");
            let kind = str_at(&reference.value, "/type");
            match (uid, kind) {
                (Some(uid), Some(kind)) if provisioned.get(uid).map(String::as_str) == Some(kind) => {}
                _ => problems.push(format!(
                    "{}: datasource {} is not one of the provisioned {{type, uid}}: {provisioned:?}",
                    reference.place, reference.value
                )),
            }
        }
    }
    let provisioning = yaml::load(DATASOURCES);
    for source in items(provisioning.get("datasources")) {
        for pointer in [
            "/jsonData/tracesToMetrics/datasourceUid",
            "/jsonData/tracesToLogsV2/datasourceUid",
            "/jsonData/nodeGraph/datasourceUid",
        ] {
            if let Some(uid) = str_at(source, pointer)
                && !provisioned.contains_key(uid)
            {
                problems.push(format!(
                    "{DATASOURCES}: {}{pointer} = {uid}, which is not provisioned",
                    str_at(source, "/uid").unwrap_or_default()
                ));
            }
        }
        for destination in items(source.pointer("/jsonData/exemplarTraceIdDestinations")) {
            if let Some(uid) = str_at(destination, "/datasourceUid")
                && !provisioned.contains_key(uid)
            {
                problems.push(format!(
                    "{DATASOURCES}: exemplar destination {uid} is not provisioned"
                ));
            }
        }
    }
    if provisioned.get("jaeger").map(String::as_str) == Some("jaeger")
        && str_at(
            provisioning
                .get("datasources")
                .and_then(|all| {
                    items(Some(all))
                        .iter()
                        .find(|s| str_at(s, "/uid") == Some("jaeger"))
                })
                .unwrap_or(&Value::Null),
            "/jsonData/tracesToMetrics/datasourceUid",
        ) != Some("prometheus")
    {
        problems.push(
            "the Jaeger datasource does not link traces to the Prometheus metrics".to_owned(),
        );
    }
    assert_no_problems("datasource references", &problems);
}

#[test]
fn the_prometheus_configuration_passes_promtool() {
    let output = run(Command::new(tool("promtool"))
        .args(["check", "config", "--syntax-only"])
        .arg(repo_path("deploy/prometheus.yml")));
    assert!(
        output.status.success(),
        "promtool check config deploy/prometheus.yml: {}",
        describe(&output)
    );
}

/// The cross-references a schema cannot check: every component a pipeline
/// names is declared, and of a kind the pipeline's signal accepts; every
/// connector is an exporter of one pipeline and a receiver of another;
/// nothing is declared and left unused; memory_limiter comes first.
fn collector_problems(config: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let declared = |section: &str| -> BTreeSet<String> {
        entries(config.get(section))
            .into_iter()
            .map(|(id, _)| id.clone())
            .collect()
    };
    let receivers = declared("receivers");
    let processors = declared("processors");
    let exporters = declared("exporters");
    let connectors = declared("connectors");
    let extensions = declared("extensions");
    let mut used: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut connector_as_exporter = BTreeSet::new();
    let mut connector_as_receiver = BTreeSet::new();
    let pipelines = entries(config.pointer("/service/pipelines"));
    if pipelines.is_empty() {
        problems.push("service.pipelines is empty".to_owned());
    }
    for (name, pipeline) in pipelines {
        let ids = |key: &str| -> Vec<String> {
            items(pipeline.get(key)).iter().filter_map(scalar).collect()
        };
        for id in ids("receivers") {
            if connectors.contains(&id) {
                connector_as_receiver.insert(id.clone());
            } else if !receivers.contains(&id) {
                problems.push(format!(
                    "pipeline {name}: receiver {id} is not declared under receivers"
                ));
            }
            used.entry("receivers").or_default().insert(id);
        }
        let pipeline_processors = ids("processors");
        for id in &pipeline_processors {
            if !processors.contains(id) {
                problems.push(format!(
                    "pipeline {name}: processor {id} is not declared under processors"
                ));
            }
            used.entry("processors").or_default().insert(id.clone());
        }
        if let Some(at) = pipeline_processors
            .iter()
            .position(|id| id.split('/').next() == Some("memory_limiter"))
            && at != 0
        {
            problems.push(format!(
                "pipeline {name}: memory_limiter must be the first processor, to refuse data before any work"
            ));
        }
        for id in ids("exporters") {
            if connectors.contains(&id) {
                connector_as_exporter.insert(id.clone());
            } else if !exporters.contains(&id) {
                problems.push(format!(
                    "pipeline {name}: exporter {id} is not declared under exporters"
                ));
            }
            used.entry("exporters").or_default().insert(id);
        }
    }
    for connector in &connectors {
        if !connector_as_exporter.contains(connector) || !connector_as_receiver.contains(connector)
        {
            problems.push(format!(
                "connector {connector} must be an exporter of one pipeline and a receiver of another"
            ));
        }
    }
    for (section, ids) in [
        ("receivers", &receivers),
        ("processors", &processors),
        ("exporters", &exporters),
    ] {
        for id in ids {
            if !used.get(section).is_some_and(|used| used.contains(id)) {
                problems.push(format!(
                    "{section}.{id} is declared but no pipeline uses it"
                ));
            }
        }
    }
    let enabled: Vec<String> = items(config.pointer("/service/extensions"))
        .iter()
        .filter_map(scalar)
        .collect();
    for id in &enabled {
        if !extensions.contains(id) {
            problems.push(format!(
                "service.extensions names {id}, which is not declared under extensions"
            ));
        }
    }
    for id in &extensions {
        if !enabled.contains(id) {
            problems.push(format!(
                "extensions.{id} is declared but not enabled in service.extensions"
            ));
        }
    }
    problems
}

/// Runs check-jsonschema with the collector's schema on a YAML text.
fn collector_schema_check(label: &str, text: &str) -> std::process::Output {
    let dir = scratch_dir(label);
    let path = dir.join("otel-collector.yaml");
    std::fs::write(&path, text).unwrap();
    let output = run_tool(
        "check-jsonschema",
        [
            std::ffi::OsStr::new("--schemafile"),
            repo_path("deploy/otel-collector.schema.json").as_os_str(),
            path.as_os_str(),
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
    output
}

#[test]
fn the_collector_configuration_has_the_collectors_structure() {
    let text = read("deploy/otel-collector.yaml");
    let output = collector_schema_check("collector", &text);
    assert!(
        output.status.success(),
        "deploy/otel-collector.yaml against deploy/otel-collector.schema.json: {}",
        describe(&output)
    );
    let config = yaml::parse(&text, "deploy/otel-collector.yaml");
    assert_no_problems("deploy/otel-collector.yaml", &collector_problems(&config));

    // The schema and the cross-references refuse what the collector refuses.
    let schema_refuses = [
        (
            "an unknown top-level key",
            text.replace("exporters:\n", "exporter:\n"),
        ),
        (
            "the deprecated `otlp` exporter name",
            text.replace("otlp_grpc/jaeger", "otlp/jaeger"),
        ),
        (
            "a pipeline without exporters",
            text.replace("      exporters: [otlp_grpc/jaeger]\n", ""),
        ),
        (
            "an unknown pipeline signal",
            text.replace("    traces:\n", "    spans:\n"),
        ),
    ];
    let mut problems = Vec::new();
    for (what, broken) in &schema_refuses {
        assert_ne!(broken, &text, "the mutation for {what} changed nothing");
        if collector_schema_check("collector-broken", broken)
            .status
            .success()
        {
            problems.push(format!("the schema accepts {what}"));
        }
    }
    let undeclared = yaml::parse(
        &text.replace(
            "processors: [memory_limiter, batch]",
            "processors: [memory_limiter, batch, attributes]",
        ),
        "mutated",
    );
    if !collector_problems(&undeclared)
        .iter()
        .any(|p| p.contains("attributes is not declared"))
    {
        problems.push("an undeclared processor goes unnoticed".to_owned());
    }
    let unused = yaml::parse(
        &text.replace("  batch:\n", "  batch:\n  batch/unused:\n"),
        "mutated",
    );
    if !collector_problems(&unused)
        .iter()
        .any(|p| p.contains("batch/unused is declared but no pipeline uses it"))
    {
        problems.push("an unused processor goes unnoticed".to_owned());
    }
    assert_no_problems("the collector checks", &problems);

    // The version the configuration targets is the one the stacks run.
    let compose = yaml::load("docker-compose.yml");
    let image = str_at(&compose, "/services/otel-collector/image").unwrap_or_default();
    let version = image
        .rsplit_once(':')
        .map(|(_, tag)| tag)
        .unwrap_or_default();
    let schema = read("deploy/otel-collector.schema.json");
    assert!(
        !version.is_empty()
            && text.contains(&format!("otel/opentelemetry-collector-contrib {version}"))
            && schema.contains(&format!("opentelemetry-collector-contrib {version}")),
        "docker-compose.yml runs {image}; deploy/otel-collector.yaml and its schema should say they target that version"
    );
}

/// Grafana jumps from a latency panel to a trace: the services write
/// exemplars (the trace of an observation) on their `*_seconds` buckets,
/// Prometheus stores them (a feature flag, in compose and in the dev
/// overlay), the Prometheus datasource sends their `trace_id` to Jaeger, and
/// each latency chart asks for them on one of its queries.
#[test]
fn latency_panels_show_exemplars_that_open_their_trace() {
    const FLAG: &str = "--enable-feature=exemplar-storage";
    let mut problems = Vec::new();

    let compose = yaml::load("docker-compose.yml");
    let command: Vec<String> = items(compose.pointer("/services/prometheus/command"))
        .iter()
        .filter_map(scalar)
        .collect();
    if !command.iter().any(|arg| arg == FLAG) {
        problems.push(format!(
            "docker-compose.yml: prometheus runs without {FLAG}: {command:?}"
        ));
    }
    let dev = "k8s/overlays/dev/infra/prometheus.yaml";
    let args: Vec<String> = yaml::parse_all(&read(dev), dev)
        .iter()
        .filter(|document| {
            str_at(document, "/kind") == Some("StatefulSet")
                || str_at(document, "/kind") == Some("Deployment")
        })
        .flat_map(|document| items(document.pointer("/spec/template/spec/containers")).to_vec())
        .flat_map(|container| items(container.get("args")).to_vec())
        .filter_map(|arg| scalar(&arg))
        .collect();
    if !args.iter().any(|arg| arg == FLAG) {
        problems.push(format!("{dev}: prometheus runs without {FLAG}: {args:?}"));
    }

    let provisioning = yaml::load(DATASOURCES);
    let prometheus = items(provisioning.get("datasources"))
        .iter()
        .find(|source| str_at(source, "/uid") == Some("prometheus"))
        .cloned()
        .unwrap_or(Value::Null);
    let to_jaeger = items(prometheus.pointer("/jsonData/exemplarTraceIdDestinations"))
        .iter()
        .any(|destination| {
            str_at(destination, "/name") == Some("trace_id")
                && str_at(destination, "/datasourceUid") == Some("jaeger")
        });
    if !to_jaeger {
        problems.push(format!(
            "{DATASOURCES}: the Prometheus datasource does not send exemplars' trace_id to Jaeger"
        ));
    }

    for dashboard in load_dashboards() {
        for panel in dashboard.panels() {
            if str_at(panel, "/type") != Some("timeseries") {
                continue;
            }
            let targets = items(panel.get("targets"));
            let latency = targets.iter().any(|target| {
                str_at(target, "/expr").is_some_and(|expr| expr.contains("_seconds_bucket"))
            });
            let with_exemplars = targets
                .iter()
                .filter(|target| target.get("exemplar") == Some(&Value::Bool(true)))
                .count();
            if latency && with_exemplars != 1 {
                problems.push(format!(
                    "{}: latency panel {:?} asks for exemplars on {with_exemplars} queries (one shows them, more repeat them)",
                    dashboard.file,
                    str_at(panel, "/title").unwrap_or_default()
                ));
            }
        }
    }
    assert_no_problems("exemplars", &problems);
}
