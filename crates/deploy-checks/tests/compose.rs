//! docker-compose.yml: valid against the Compose Specification, and true to
//! the binaries it runs (their images, variables, ports and health), with
//! every dependency healthy before its dependents start and every image pinned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use deploy_checks::env::{Scope, check};
use deploy_checks::yaml::{entries, items, scalar, str_at};
use deploy_checks::{
    CONTRACT, accepted_env, assert_no_problems, contract, describe, image_is_pinned, port_of,
    repo_path, run_tool, yaml,
};
use serde_json::Value;

const COMPOSE: &str = "docker-compose.yml";

/// Binaries that are tools, not services: built from the same Dockerfile,
/// started on demand (a compose profile), with no port contract.
const TOOLS: &[(&str, &str)] = &[("loadgen", "tools/loadgen")];

fn tool_dir(binary: &str) -> Option<&'static str> {
    TOOLS
        .iter()
        .find(|(name, _)| *name == binary)
        .map(|(_, dir)| *dir)
}

fn compose() -> Value {
    yaml::load(COMPOSE)
}

fn services(compose: &Value) -> Vec<(&String, &Value)> {
    let services = entries(compose.get("services"));
    assert!(!services.is_empty(), "{COMPOSE} has no services");
    services
}

/// A service's `environment`, map or list form, as name → value.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| (name.clone(), scalar(value).unwrap_or_default()))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `depends_on` as target → condition (the short list form means
/// `service_started`).
fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match service.get("depends_on") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(target, spec)| {
                let condition = str_at(spec, "/condition").unwrap_or("service_started");
                (target.clone(), condition.to_owned())
            })
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|target| (target.to_owned(), "service_started".to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Whether a service is a one-shot task (`restart: "no"`), which other
/// services wait for with `service_completed_successfully`.
fn is_one_shot(service: &Value) -> bool {
    str_at(service, "/restart") == Some("no")
}

fn has_healthcheck(service: &Value) -> bool {
    service.get("healthcheck").is_some_and(|check| {
        check.get("disable") != Some(&Value::Bool(true)) && check.get("test").is_some()
    })
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let output = run_tool(
        "check-jsonschema",
        ["--builtin-schema", "vendor.compose-spec", COMPOSE],
    );
    assert!(
        output.status.success(),
        "check-jsonschema --builtin-schema vendor.compose-spec {COMPOSE}: {}",
        describe(&output)
    );
}

#[test]
fn every_binary_runs_from_the_dockerfile_with_its_own_image() {
    let compose = compose();
    let mut problems = Vec::new();
    let mut built = BTreeSet::new();
    for (name, service) in services(&compose) {
        let Some(build) = service.get("build") else {
            continue;
        };
        let context = str_at(build, "/context").unwrap_or(".");
        let dockerfile = str_at(build, "/dockerfile").unwrap_or("Dockerfile");
        let path = repo_path(context).join(dockerfile);
        if !path.is_file() {
            problems.push(format!(
                "{name} builds from {}, which does not exist",
                path.display()
            ));
        }
        let binary = build
            .pointer("/args/SERVICE")
            .and_then(scalar)
            .unwrap_or_default();
        if let Some(dir) = tool_dir(&binary) {
            accepted_env(&binary);
            if !repo_path(dir).join("Cargo.toml").is_file() {
                problems.push(format!("{name}: {dir}/Cargo.toml does not exist"));
            }
        } else if contract(&binary).is_none() {
            problems.push(format!(
                "{name} builds SERVICE={binary:?}, which is not one of the binaries ({})",
                CONTRACT.map(|b| b.name).join(", ")
            ));
        } else {
            // It exists as a workspace binary: its --help runs.
            accepted_env(&binary);
            if !repo_path("services")
                .join(&binary)
                .join("Cargo.toml")
                .is_file()
            {
                problems.push(format!(
                    "{name}: services/{binary}/Cargo.toml does not exist"
                ));
            }
        }
        if binary != *name {
            problems.push(format!(
                "service {name} runs binary {binary}: name the service after its binary (DNS names in the stack are the binaries')"
            ));
        }
        match str_at(service, "/image") {
            Some(image) if image == format!("ferrishop/{binary}:dev") => {}
            other => problems.push(format!(
                "{name} should tag its image ferrishop/{binary}:dev (the k8s dev overlay runs that tag), not {other:?}"
            )),
        }
        built.insert(binary);
    }
    for binary in CONTRACT {
        if !built.contains(binary.name) {
            problems.push(format!("no service builds the {} binary", binary.name));
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn every_variable_set_is_one_the_binary_reads_and_none_it_needs_is_missing() {
    let compose = compose();
    let mut problems = Vec::new();
    for (name, service) in services(&compose) {
        if service.get("build").is_none() {
            continue;
        }
        let Some(binary) = contract(name)
            .map(|binary| binary.name)
            .or_else(|| tool_dir(name).map(|_| name.as_str()))
        else {
            continue;
        };
        let accepted = accepted_env(binary);
        let set: BTreeMap<String, Option<String>> = environment(service)
            .into_iter()
            .map(|(name, value)| (name, Some(value)))
            .collect();
        problems.extend(check(
            binary,
            &set,
            &accepted,
            &format!("{COMPOSE} services.{name}.environment"),
            Scope::Stack,
        ));
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn addresses_and_upstreams_follow_the_port_contract() {
    let compose = compose();
    let mut problems = Vec::new();
    for binary in CONTRACT {
        let service = compose
            .pointer(&format!("/services/{}", binary.name))
            .unwrap_or_else(|| panic!("{COMPOSE} has no service {}", binary.name));
        let env = environment(service);
        let accepted = accepted_env(binary.name);
        for (var, port) in [
            ("HTTP_ADDR", binary.http_port),
            ("GRPC_ADDR", binary.grpc_port),
        ] {
            let default_port = accepted
                .get(var)
                .and_then(|v| v.default.as_deref())
                .and_then(port_of);
            if default_port != Some(port) {
                problems.push(format!(
                    "`{} --help`: {var} defaults to port {default_port:?}, DESIGN.md says {port}",
                    binary.name
                ));
            }
            if let Some(value) = env.get(var)
                && (port_of(value) != Some(port) || !value.starts_with("0.0.0.0:"))
            {
                problems.push(format!(
                    "{}: {var}={value}, expected 0.0.0.0:{port}",
                    binary.name
                ));
            }
        }
        if let Some(service_name) = env.get("OTEL_SERVICE_NAME")
            && service_name != binary.name
        {
            problems.push(format!(
                "{}: OTEL_SERVICE_NAME={service_name}, DESIGN.md says service.name is the binary's name",
                binary.name
            ));
        }
        if let Some(url) = env.get("DATABASE_URL") {
            let database = url.rsplit('/').next().unwrap_or_default();
            let database = database.split('?').next().unwrap_or_default();
            if Some(database) != binary.database || !url.contains("@postgres:5432/") {
                problems.push(format!(
                    "{}: DATABASE_URL={url}, expected the database {:?} on postgres:5432",
                    binary.name, binary.database
                ));
            }
        }
        // Gateway upstreams (and any service's *_URL / *_GRPC_URL to another binary).
        for (var, value) in &env {
            for (suffix, grpc) in [("_GRPC_URL", true), ("_URL", false)] {
                let Some(other) = var
                    .strip_suffix(suffix)
                    .map(str::to_ascii_lowercase)
                    .and_then(|other| contract(&other))
                else {
                    continue;
                };
                if var.ends_with("_GRPC_URL") != grpc {
                    continue;
                }
                let port = if grpc {
                    other.grpc_port
                } else {
                    other.http_port
                };
                let expected = format!("http://{}:{port}", other.name);
                if *value != expected {
                    problems.push(format!(
                        "{}: {var}={value}, expected {expected}",
                        binary.name
                    ));
                }
                break;
            }
        }
        if let Some(endpoint) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            && endpoint != "http://otel-collector:4317"
        {
            problems.push(format!(
                "{}: OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}, expected the collector's OTLP/gRPC http://otel-collector:4317",
                binary.name
            ));
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn dependencies_are_healthy_before_their_dependents_start() {
    let compose = compose();
    let services: BTreeMap<&String, &Value> = services(&compose).into_iter().collect();
    let mut problems = Vec::new();
    for (name, service) in &services {
        let depends = depends_on(service);
        for (target, condition) in &depends {
            let Some(target_service) = services.get(target) else {
                problems.push(format!(
                    "{name} depends on {target}, which is not a service"
                ));
                continue;
            };
            match condition.as_str() {
                "service_healthy" if has_healthcheck(target_service) => {}
                "service_healthy" => problems.push(format!(
                    "{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )),
                "service_completed_successfully" if is_one_shot(target_service) => {}
                other => problems.push(format!(
                    "{name} depends on {target} with condition {other}: use service_healthy \
                     (service_completed_successfully for a one-shot task with restart: \"no\")"
                )),
            }
        }
        // A service that names another in its environment (postgres://...@postgres:5432,
        // http://user:8081, ...) must wait for it.
        for (var, value) in environment(service) {
            for other in services.keys() {
                if *other == *name {
                    continue;
                }
                let mentions = [
                    format!("//{other}:"),
                    format!("@{other}:"),
                    format!(",{other}:"),
                ]
                .iter()
                .any(|needle| value.contains(needle.as_str()))
                    || value.starts_with(&format!("{other}:"));
                if mentions && !depends.contains_key(*other) {
                    problems.push(format!(
                        "{name} reaches {other} ({var}={value}) but does not depend on it (condition: service_healthy)"
                    ));
                }
            }
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn every_long_running_container_has_a_healthcheck() {
    let compose = compose();
    let problems: Vec<String> = services(&compose)
        .into_iter()
        .filter(|(_, service)| !is_one_shot(service) && !has_healthcheck(service))
        .map(|(name, _)| format!("{name} has no healthcheck"))
        .collect();
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn every_image_is_pinned() {
    let compose = compose();
    let mut problems = Vec::new();
    for (name, service) in services(&compose) {
        if service.get("build").is_some() {
            continue;
        }
        match str_at(service, "/image") {
            Some(image) if image_is_pinned(image) => {}
            Some(image) => problems.push(format!(
                "{name}: image {image} is not pinned to a version (an explicit tag with a version in it, or a digest)"
            )),
            None => problems.push(format!("{name} has neither image nor build")),
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn only_the_gateway_and_the_uis_are_published_on_loopback() {
    let expected: BTreeMap<&str, BTreeSet<u16>> = [
        ("gateway", [8080, 50051].into()),
        ("grafana", [3000].into()),
        ("jaeger", [16686].into()),
        ("prometheus", [9090].into()),
        ("rabbitmq", [15672].into()),
        ("nats", [8222].into()),
    ]
    .into();
    let compose = compose();
    let mut problems = Vec::new();
    let mut published: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (name, service) in services(&compose) {
        for port in items(service.get("ports")) {
            let Some(text) = port.as_str() else {
                problems.push(format!(
                    "{name}: use the short \"127.0.0.1:HOST:CONTAINER\" form, not {port}"
                ));
                continue;
            };
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                ["127.0.0.1", host, container] if host == container => {
                    published
                        .entry(name.clone())
                        .or_default()
                        .insert(container.parse().unwrap_or(0));
                }
                _ => problems.push(format!(
                    "{name} publishes {text}: publish on 127.0.0.1 under the same port number"
                )),
            }
        }
    }
    for (name, ports) in &published {
        if expected.get(name.as_str()) != Some(ports) {
            problems.push(format!(
                "{name} publishes {ports:?}; expected {:?}",
                expected.get(name.as_str())
            ));
        }
    }
    for name in expected.keys() {
        if !published.contains_key(*name) {
            problems.push(format!(
                "{name} publishes nothing; expected {:?}",
                expected[name]
            ));
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn mounted_files_exist() {
    let compose = compose();
    let mut problems = Vec::new();
    for (name, service) in services(&compose) {
        for volume in items(service.get("volumes")) {
            let Some(text) = volume.as_str() else {
                continue;
            };
            let source = text.split(':').next().unwrap_or_default();
            if source.starts_with("./") && !repo_path(source).exists() {
                problems.push(format!("{name} mounts {source}, which does not exist"));
            }
        }
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn the_infrastructure_is_the_one_design_md_describes() {
    let compose = compose();
    let mut problems = Vec::new();
    let image = |name: &str| {
        compose
            .pointer(&format!("/services/{name}/image"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let env = |name: &str| {
        compose
            .pointer(&format!("/services/{name}"))
            .map(environment)
            .unwrap_or_default()
    };
    if !image("postgres").starts_with("postgres:") {
        problems.push("postgres: not the postgres image".to_owned());
    }
    let init = repo_path("deploy/postgres/init/01-databases.sql");
    let init = std::fs::read_to_string(&init).unwrap_or_default();
    for binary in CONTRACT {
        if let Some(database) = binary.database
            && !init.contains(&format!("CREATE DATABASE {database};"))
        {
            problems.push(format!(
                "deploy/postgres/init/01-databases.sql does not create {database}"
            ));
        }
    }
    if !image("rabbitmq").contains("-management") {
        problems.push("rabbitmq: not a management image".to_owned());
    }
    let plugins =
        std::fs::read_to_string(repo_path("deploy/rabbitmq/enabled_plugins")).unwrap_or_default();
    if !plugins.contains("rabbitmq_prometheus") || !plugins.contains("rabbitmq_management") {
        problems.push(format!(
            "deploy/rabbitmq/enabled_plugins lacks rabbitmq_management or rabbitmq_prometheus: {plugins}"
        ));
    }
    if !image("kafka").starts_with("apache/kafka:") {
        problems.push("kafka: not the official apache/kafka image".to_owned());
    }
    let kafka = env("kafka");
    if kafka.get("KAFKA_PROCESS_ROLES").map(String::as_str) != Some("broker,controller")
        || kafka.keys().any(|k| k.contains("ZOOKEEPER"))
    {
        problems.push(format!(
            "kafka: not a single KRaft node (broker,controller, no ZooKeeper): {kafka:?}"
        ));
    }
    let nats = compose
        .pointer("/services/nats/command")
        .map(|command| {
            items(Some(command))
                .iter()
                .filter_map(scalar)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !nats.iter().any(|arg| arg == "-js" || arg == "--jetstream")
        || !nats.iter().any(|arg| arg == "-m" || arg == "--http_port")
    {
        problems.push(format!(
            "nats: JetStream (-js) and monitoring (-m) not both on: {nats:?}"
        ));
    }
    let grafana = env("grafana");
    if grafana.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str) != Some("true")
        || grafana
            .get("GF_AUTH_ANONYMOUS_ORG_ROLE")
            .map(String::as_str)
            != Some("Viewer")
    {
        problems.push("grafana: anonymous viewer access not on".to_owned());
    }
    assert_no_problems(COMPOSE, &problems);
}

#[test]
fn prometheus_scrapes_every_service_on_its_http_port() {
    let config = yaml::load("deploy/prometheus.yml");
    let mut problems = Vec::new();
    let jobs: BTreeMap<String, (Vec<String>, String)> = items(config.get("scrape_configs"))
        .iter()
        .map(|job| {
            let name = str_at(job, "/job_name").unwrap_or_default().to_owned();
            let targets = items(job.get("static_configs"))
                .iter()
                .flat_map(|group| items(group.get("targets")))
                .filter_map(scalar)
                .collect();
            let path = str_at(job, "/metrics_path")
                .unwrap_or("/metrics")
                .to_owned();
            (name, (targets, path))
        })
        .collect();
    for binary in CONTRACT {
        let expected = format!("{}:{}", binary.name, binary.http_port);
        match jobs.get(binary.name) {
            Some((targets, path))
                if targets.as_slice() == std::slice::from_ref(&expected) && path == "/metrics" => {}
            other => problems.push(format!(
                "job {} should scrape {expected}/metrics, found {other:?}",
                binary.name
            )),
        }
    }
    match jobs.get("rabbitmq") {
        Some((targets, _)) if targets == &["rabbitmq:15692".to_owned()] => {}
        other => problems.push(format!(
            "job rabbitmq should scrape rabbitmq:15692, found {other:?}"
        )),
    }
    assert_no_problems("deploy/prometheus.yml", &problems);
}

#[test]
fn the_collector_takes_otlp_and_exports_traces_to_jaeger() {
    let config = yaml::load("deploy/otel-collector.yaml");
    let mut problems = Vec::new();
    if str_at(&config, "/receivers/otlp/protocols/grpc/endpoint") != Some("0.0.0.0:4317") {
        problems.push("receivers.otlp.protocols.grpc.endpoint should be 0.0.0.0:4317".to_owned());
    }
    let pipeline = config.pointer("/service/pipelines/traces");
    let receivers: Vec<String> = items(pipeline.and_then(|p| p.get("receivers")))
        .iter()
        .filter_map(scalar)
        .collect();
    if !receivers.contains(&"otlp".to_owned()) {
        problems.push(format!(
            "the traces pipeline does not receive otlp: {receivers:?}"
        ));
    }
    let exporters: Vec<String> = items(pipeline.and_then(|p| p.get("exporters")))
        .iter()
        .filter_map(scalar)
        .collect();
    let to_jaeger = exporters.iter().any(|exporter| {
        exporter.starts_with("otlp_grpc")
            && config
                .get("exporters")
                .and_then(|all| all.get(exporter.as_str()))
                .and_then(|e| str_at(e, "/endpoint"))
                == Some("jaeger:4317")
    });
    if !to_jaeger {
        problems.push(format!(
            "no otlp_grpc exporter of the traces pipeline sends to jaeger:4317: {exporters:?}"
        ));
    }
    for processor in items(pipeline.and_then(|p| p.get("processors"))) {
        let processor = scalar(processor).unwrap_or_default();
        if config
            .pointer(&format!("/processors/{processor}"))
            .is_none()
        {
            problems.push(format!("processor {processor} is used but not configured"));
        }
    }
    let health = str_at(&config, "/extensions/health_check/endpoint").unwrap_or_default();
    let extensions: Vec<String> = items(config.pointer("/service/extensions"))
        .iter()
        .filter_map(scalar)
        .collect();
    if port_of(health) != Some(13133) || !extensions.contains(&"health_check".to_owned()) {
        problems.push(format!(
            "the health_check extension should serve 13133 (the healthcheck and probes ask there): {health:?}, {extensions:?}"
        ));
    }
    let compose = compose();
    let collector_check = compose
        .pointer("/services/otel-collector/healthcheck/test")
        .map(|test| {
            items(Some(test))
                .iter()
                .filter_map(scalar)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if !collector_check.contains(":13133") {
        problems.push(format!(
            "the otel-collector healthcheck does not ask the health_check extension: {collector_check}"
        ));
    }
    assert_no_problems("deploy/otel-collector.yaml", &problems);
}

#[test]
fn grafana_is_provisioned_with_fixed_datasource_uids_and_the_dashboards_folder() {
    let datasources = yaml::load("deploy/grafana/provisioning/datasources/datasources.yaml");
    let mut problems = Vec::new();
    let by_uid: BTreeMap<String, (String, String)> = items(datasources.get("datasources"))
        .iter()
        .map(|source| {
            (
                str_at(source, "/uid").unwrap_or_default().to_owned(),
                (
                    str_at(source, "/type").unwrap_or_default().to_owned(),
                    str_at(source, "/url").unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect();
    for (uid, kind, url) in [
        ("prometheus", "prometheus", "http://prometheus:9090"),
        ("jaeger", "jaeger", "http://jaeger:16686"),
    ] {
        if by_uid.get(uid) != Some(&(kind.to_owned(), url.to_owned())) {
            problems.push(format!(
                "datasource uid {uid} should be a {kind} at {url}, found {:?}",
                by_uid.get(uid)
            ));
        }
    }
    let providers = yaml::load("deploy/grafana/provisioning/dashboards/dashboards.yaml");
    let path = items(providers.get("providers"))
        .first()
        .and_then(|provider| str_at(provider, "/options/path"))
        .unwrap_or_default()
        .to_owned();
    let compose = compose();
    let mount = format!("./deploy/grafana/dashboards:{path}:ro");
    let mounted = items(compose.pointer("/services/grafana/volumes"))
        .iter()
        .filter_map(Value::as_str)
        .any(|volume| volume == mount);
    if path.is_empty() || !mounted {
        problems.push(format!(
            "the dashboards provider reads {path:?}; grafana should mount {mount}"
        ));
    }
    if !repo_path("deploy/grafana/dashboards").is_dir() {
        problems.push("deploy/grafana/dashboards/ does not exist".to_owned());
    }
    assert_no_problems("deploy/grafana", &problems);
}
