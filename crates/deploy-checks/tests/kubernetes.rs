//! k8s/: every overlay renders with `kubectl kustomize` and validates against
//! the Kubernetes schemas (kubernetes-validate, offline); the services'
//! probes, ports and environment agree with the binaries; every workload has
//! resources and runs as non-root; the canary overlay is the documented
//! Argo Rollouts canary; the dev overlay ships every Grafana dashboard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use deploy_checks::env::{Scope, check};
use deploy_checks::yaml::{entries, items, scalar, str_at};
use deploy_checks::{
    Binary, CONTRACT, accepted_env, assert_no_problems, describe, image_is_pinned, port_of, read,
    run_tool, scratch_dir, yaml,
};
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["dev", "prod", "canary"];

/// Kinds no offline schema covers (Argo Rollouts CRDs): checked by
/// `the_canary_overlay_rolls_the_gateway_out_in_steps_with_analysis` instead.
const CUSTOM_KINDS: [&str; 2] = ["Rollout", "AnalysisTemplate"];

/// Secrets the prod overlay expects to exist in the cluster (created outside
/// this repository), with the keys they provide.
fn external_secret_keys(name: &str) -> Option<Vec<&'static str>> {
    match name {
        "user-database" | "order-database" | "payment-database" | "inventory-database" => {
            Some(vec!["DATABASE_URL"])
        }
        "rabbitmq-url" => Some(vec!["AMQP_URL"]),
        "user-jwt" => Some(vec![]),
        _ => None,
    }
}

struct Rendered {
    overlay: String,
    file: std::path::PathBuf,
    docs: Vec<Value>,
}

impl Drop for Rendered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Rendered {
    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let kind = kind.to_owned();
        self.docs
            .iter()
            .filter(move |doc| str_at(doc, "/kind") == Some(kind.as_str()))
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs.iter().find(|doc| {
            str_at(doc, "/kind") == Some(kind) && str_at(doc, "/metadata/name") == Some(name)
        })
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.docs.iter().filter(|doc| {
            matches!(
                str_at(doc, "/kind"),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
    }
}

/// `kubectl kustomize k8s/<path>`, written to a scratch file and parsed.
fn render(path: &str) -> Rendered {
    let output = run_tool("kubectl", ["kustomize", &format!("k8s/{path}")]);
    assert!(
        output.status.success(),
        "kubectl kustomize k8s/{path}: {}",
        describe(&output)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let dir = scratch_dir("k8s");
    let file = dir.join(format!("{}.yaml", path.replace('/', "-")));
    std::fs::write(&file, &text).unwrap();
    let docs = yaml::parse_all(&text, &format!("kubectl kustomize k8s/{path}"));
    assert!(!docs.is_empty(), "k8s/{path} renders nothing");
    Rendered {
        overlay: path.to_owned(),
        file,
        docs,
    }
}

fn overlay(name: &str) -> Rendered {
    render(&format!("overlays/{name}"))
}

/// Whether a label selector (`matchLabels` or a Service's `selector`) is not
/// empty and matches the pod template of `workload`.
fn selects_pods(selector: Option<&Value>, workload: &Value) -> bool {
    let labels = workload.pointer("/spec/template/metadata/labels");
    let selector = entries(selector);
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.and_then(|l| l.get(key.as_str())) == Some(*value))
}

/// The first container of a workload's pod template named after it.
fn container<'a>(workload: &'a Value, name: &str) -> Option<&'a Value> {
    items(workload.pointer("/spec/template/spec/containers"))
        .iter()
        .find(|c| str_at(c, "/name") == Some(name))
}

/// A container port by name or number, as a number.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(number) => number.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => items(container.get("ports"))
            .iter()
            .find(|p| str_at(p, "/name") == Some(name))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

#[test]
fn every_overlay_renders_and_validates_against_the_kubernetes_schemas() {
    let mut problems = Vec::new();
    for path in ["base"].into_iter().chain(
        OVERLAYS
            .map(|o| format!("overlays/{o}"))
            .iter()
            .map(String::as_str),
    ) {
        let rendered = render(path);
        let output = run_tool(
            "kubernetes-validate",
            [std::ffi::OsStr::new("--strict"), rendered.file.as_os_str()],
        );
        if !output.status.success() {
            problems.push(format!(
                "kubernetes-validate --strict k8s/{path}: {}",
                describe(&output)
            ));
            continue;
        }
        // Nothing may go unvalidated but the custom kinds checked elsewhere.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stdout.lines().chain(stderr.lines()) {
            let line = line.trim();
            if line.is_empty() || line.starts_with("INFO") {
                continue;
            }
            let custom = line.starts_with("WARN")
                && CUSTOM_KINDS.iter().any(|kind| {
                    line.contains(&format!("for kind {kind} with api version argoproj.io/"))
                });
            if !custom {
                problems.push(format!("kubernetes-validate k8s/{path}: {line}"));
            }
        }
        let validated = stdout.lines().filter(|l| l.starts_with("INFO")).count();
        let custom = rendered
            .docs
            .iter()
            .filter(|doc| CUSTOM_KINDS.contains(&str_at(doc, "/kind").unwrap_or_default()))
            .count();
        if validated + custom != rendered.docs.len() {
            problems.push(format!(
                "k8s/{path}: {} objects rendered, {validated} validated, {custom} custom",
                rendered.docs.len()
            ));
        }
    }
    assert_no_problems("k8s", &problems);
}

/// The five services' checks, on one rendered overlay.
fn check_services(rendered: &Rendered, problems: &mut Vec<String>) {
    let overlay = &rendered.overlay;
    for binary in CONTRACT {
        let Some(deployment) = rendered.get("Deployment", binary.name) else {
            problems.push(format!("{overlay}: no Deployment {}", binary.name));
            continue;
        };
        let Some(container) = container(deployment, binary.name) else {
            problems.push(format!(
                "{overlay}: Deployment {0} has no container {0}",
                binary.name
            ));
            continue;
        };
        check_ports_and_probes(overlay, binary, container, problems);
        check_rollout_strategy(overlay, binary.name, deployment, problems);
        let service = rendered.get("Service", binary.name);
        let ports: BTreeMap<String, u64> = items(service.and_then(|s| s.pointer("/spec/ports")))
            .iter()
            .map(|p| {
                (
                    str_at(p, "/name").unwrap_or_default().to_owned(),
                    p.get("port").and_then(Value::as_u64).unwrap_or(0),
                )
            })
            .collect();
        let expected: BTreeMap<String, u64> = [
            ("http".to_owned(), u64::from(binary.http_port)),
            ("grpc".to_owned(), u64::from(binary.grpc_port)),
        ]
        .into();
        if ports != expected {
            problems.push(format!(
                "{overlay}: Service {} ports {ports:?}, expected {expected:?}",
                binary.name
            ));
        }
        let selects =
            |doc: &Value| selects_pods(doc.pointer("/spec/selector/matchLabels"), deployment);
        if !rendered.of_kind("PodDisruptionBudget").any(selects) {
            problems.push(format!(
                "{overlay}: no PodDisruptionBudget selects {}'s pods",
                binary.name
            ));
        }
        let annotations = deployment.pointer("/spec/template/metadata/annotations");
        if annotations.and_then(|a| str_at(a, "/prometheus.io~1scrape")) != Some("true") {
            problems.push(format!(
                "{overlay}: {}'s pods are not annotated prometheus.io/scrape: \"true\"",
                binary.name
            ));
        }
    }
    let scaled: BTreeSet<String> = rendered
        .of_kind("HorizontalPodAutoscaler")
        .filter(|hpa| {
            items(hpa.pointer("/spec/metrics"))
                .iter()
                .any(|metric| str_at(metric, "/resource/name") == Some("cpu"))
        })
        .filter(|hpa| {
            let kind = str_at(hpa, "/spec/scaleTargetRef/kind").unwrap_or_default();
            let name = str_at(hpa, "/spec/scaleTargetRef/name").unwrap_or_default();
            rendered.get(kind, name).is_some()
        })
        .filter_map(|hpa| str_at(hpa, "/spec/scaleTargetRef/name").map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = ["gateway", "inventory", "order"].map(String::from).into();
    if scaled != expected {
        problems.push(format!(
            "{overlay}: CPU HorizontalPodAutoscalers scale {scaled:?} (to existing targets); expected {expected:?}"
        ));
    }
}

fn check_ports_and_probes(
    overlay: &str,
    binary: Binary,
    container: &Value,
    problems: &mut Vec<String>,
) {
    let name = binary.name;
    let port_named = |port: &str| resolve_port(container, &Value::String(port.to_owned()));
    if port_named("http") != Some(binary.http_port) || port_named("grpc") != Some(binary.grpc_port)
    {
        problems.push(format!(
            "{overlay}: {name}'s container ports http/grpc are {:?}/{:?}, DESIGN.md says {}/{}",
            port_named("http"),
            port_named("grpc"),
            binary.http_port,
            binary.grpc_port
        ));
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = container.pointer(&format!("/{probe}/httpGet"));
        let actual_path = get.and_then(|g| str_at(g, "/path"));
        let port = get
            .and_then(|g| g.get("port"))
            .and_then(|p| resolve_port(container, p));
        if actual_path != Some(path) || port != Some(binary.http_port) {
            problems.push(format!(
                "{overlay}: {name}'s {probe} is GET {actual_path:?} on port {port:?}; expected GET {path} on {}",
                binary.http_port
            ));
        }
    }
    let grpc_probe = container
        .pointer("/startupProbe/grpc/port")
        .and_then(|p| resolve_port(container, p));
    if grpc_probe != Some(binary.grpc_port) {
        problems.push(format!(
            "{overlay}: {name}'s startupProbe should be the gRPC health check on {}, found port {grpc_probe:?}",
            binary.grpc_port
        ));
    }
}

fn check_rollout_strategy(
    overlay: &str,
    name: &str,
    deployment: &Value,
    problems: &mut Vec<String>,
) {
    let strategy = deployment.pointer("/spec/strategy");
    let kind = strategy.and_then(|s| str_at(s, "/type"));
    let surge = strategy
        .and_then(|s| s.pointer("/rollingUpdate/maxSurge"))
        .and_then(scalar);
    let unavailable = strategy
        .and_then(|s| s.pointer("/rollingUpdate/maxUnavailable"))
        .and_then(scalar);
    if kind != Some("RollingUpdate")
        || surge.as_deref() != Some("25%")
        || unavailable.as_deref() != Some("0")
    {
        problems.push(format!(
            "{overlay}: {name} rolls out with {kind:?} maxSurge {surge:?} maxUnavailable {unavailable:?}; expected RollingUpdate 25%/0"
        ));
    }
}

#[test]
fn probes_ports_scaling_and_budgets_match_the_binaries() {
    let mut problems = Vec::new();
    // DESIGN.md's ports are the binaries' defaults too.
    for binary in CONTRACT {
        let accepted = accepted_env(binary.name);
        for (var, port) in [
            ("HTTP_ADDR", binary.http_port),
            ("GRPC_ADDR", binary.grpc_port),
        ] {
            let default = accepted
                .get(var)
                .and_then(|v| v.default.as_deref())
                .and_then(port_of);
            if default != Some(port) {
                problems.push(format!(
                    "`{} --help`: {var} defaults to port {default:?}, DESIGN.md says {port}",
                    binary.name
                ));
            }
        }
    }
    for name in OVERLAYS {
        check_services(&overlay(name), &mut problems);
    }
    assert_no_problems("k8s", &problems);
}

/// Effective `runAsNonRoot` of a container: its own setting, else the pod's.
fn runs_as_non_root(pod: &Value, container: &Value) -> bool {
    let setting = |security: Option<&Value>, key: &str| security.and_then(|s| s.get(key)).cloned();
    let pod_security = pod.get("securityContext");
    let own = container.get("securityContext");
    let non_root = setting(own, "runAsNonRoot").or_else(|| setting(pod_security, "runAsNonRoot"))
        == Some(Value::Bool(true));
    let user = setting(own, "runAsUser").or_else(|| setting(pod_security, "runAsUser"));
    non_root && user.is_none_or(|uid| uid.as_u64() != Some(0))
}

#[test]
fn every_workload_has_resources_and_runs_as_non_root() {
    let mut problems = Vec::new();
    for name in OVERLAYS {
        let rendered = overlay(name);
        for workload in rendered.workloads() {
            let kind = str_at(workload, "/kind").unwrap_or_default();
            let workload_name = str_at(workload, "/metadata/name").unwrap_or_default();
            let pod = workload
                .pointer("/spec/template/spec")
                .unwrap_or(&Value::Null);
            let containers = items(pod.get("containers"))
                .iter()
                .chain(items(pod.get("initContainers")));
            for container in containers {
                let container_name = str_at(container, "/name").unwrap_or_default();
                let at = format!("{name}: {kind} {workload_name}, container {container_name}");
                for key in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        if container
                            .pointer(&format!("/resources/{key}/{resource}"))
                            .is_none()
                        {
                            problems.push(format!("{at}: no resources.{key}.{resource}"));
                        }
                    }
                }
                if !runs_as_non_root(pod, container) {
                    problems.push(format!(
                        "{at}: not runAsNonRoot (with a non-zero runAsUser)"
                    ));
                }
                if container.pointer("/securityContext/allowPrivilegeEscalation")
                    != Some(&Value::Bool(false))
                {
                    problems.push(format!("{at}: allowPrivilegeEscalation is not false"));
                }
                let drops: Vec<String> =
                    items(container.pointer("/securityContext/capabilities/drop"))
                        .iter()
                        .filter_map(scalar)
                        .collect();
                if !drops.contains(&"ALL".to_owned()) {
                    problems.push(format!("{at}: capabilities are not dropped (drop: [ALL])"));
                }
                if CONTRACT.iter().any(|b| b.name == workload_name)
                    && container.pointer("/securityContext/readOnlyRootFilesystem")
                        != Some(&Value::Bool(true))
                {
                    problems.push(format!("{at}: the root filesystem is not read-only"));
                }
                let image = str_at(container, "/image").unwrap_or_default();
                let ours = CONTRACT
                    .iter()
                    .any(|b| image.contains(&format!("ferrishop/{}:", b.name)));
                let pinned =
                    image_is_pinned(image) || (ours && name == "dev" && image.ends_with(":dev"));
                if !pinned {
                    problems.push(format!("{at}: image {image:?} is not pinned to a version"));
                }
            }
        }
    }
    assert_no_problems("k8s", &problems);
}

/// The variables a service's container gets: `env` names and the keys of the
/// ConfigMaps and Secrets it takes whole (`envFrom`). Values from Secrets
/// that live outside the repository are `None`.
fn container_env(
    rendered: &Rendered,
    container: &Value,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for source in items(container.get("envFrom")) {
        if let Some(name) = str_at(source, "/configMapRef/name") {
            match rendered.get("ConfigMap", name) {
                Some(map) => {
                    for (key, value) in entries(map.get("data")) {
                        env.insert(key.clone(), scalar(value));
                    }
                }
                None => problems.push(format!(
                    "{}: ConfigMap {name} is not rendered",
                    rendered.overlay
                )),
            }
        }
        if let Some(name) = str_at(source, "/secretRef/name") {
            match rendered.get("Secret", name) {
                Some(secret) => {
                    for (key, _) in entries(secret.get("data"))
                        .into_iter()
                        .chain(entries(secret.get("stringData")))
                    {
                        env.insert(key.clone(), None);
                    }
                }
                None => match external_secret_keys(name) {
                    Some(keys) if rendered.overlay != "overlays/dev" => {
                        for key in keys {
                            env.insert(key.to_owned(), None);
                        }
                    }
                    _ => problems.push(format!(
                        "{}: Secret {name} is not rendered",
                        rendered.overlay
                    )),
                },
            }
        }
    }
    for var in items(container.get("env")) {
        if let Some(name) = str_at(var, "/name") {
            env.insert(name.to_owned(), var.get("value").and_then(scalar));
        }
    }
    env
}

/// Each service binary's container in `rendered`, for the binaries its
/// Deployments run.
fn service_containers<'a>(
    rendered: &'a Rendered,
) -> impl Iterator<Item = (&'static Binary, &'a Value)> + 'a {
    let contract: &'static [Binary] = &CONTRACT;
    contract.iter().filter_map(|binary| {
        rendered
            .get("Deployment", binary.name)
            .and_then(|deployment| container(deployment, binary.name))
            .map(|container| (binary, container))
    })
}

#[test]
fn every_variable_set_is_one_the_binary_reads_and_none_it_needs_is_missing() {
    let mut problems = Vec::new();
    let accepted: BTreeMap<&str, _> = CONTRACT
        .iter()
        .map(|b| (b.name, accepted_env(b.name)))
        .collect();
    for name in OVERLAYS {
        let rendered = overlay(name);
        // The dev overlay brings its infrastructure; prod and canary use managed endpoints.
        let scope = if name == "dev" {
            Scope::Stack
        } else {
            Scope::External
        };
        for (binary, container) in service_containers(&rendered) {
            let env = container_env(&rendered, container, &mut problems);
            let place = format!(
                "k8s/overlays/{name} (k8s/base/config/{0}.env, the overlay's config and Secrets) for {0}",
                binary.name
            );
            problems.extend(check(
                binary.name,
                &env,
                &accepted[binary.name],
                &place,
                scope,
            ));
            if let Some(Some(addr)) = env.get("HTTP_ADDR")
                && port_of(addr) != Some(binary.http_port)
            {
                problems.push(format!(
                    "{name}: {} HTTP_ADDR={addr}, expected port {}",
                    binary.name, binary.http_port
                ));
            }
            if let Some(Some(addr)) = env.get("GRPC_ADDR")
                && port_of(addr) != Some(binary.grpc_port)
            {
                problems.push(format!(
                    "{name}: {} GRPC_ADDR={addr}, expected port {}",
                    binary.name, binary.grpc_port
                ));
            }
        }
    }
    assert_no_problems("k8s", &problems);
}

/// The hosts an endpoint variable's value names (`kafka:9092`,
/// `nats://nats:4222`, `http://user:8081,http://user-2:8081`).
fn endpoint_hosts(value: &str) -> Vec<&str> {
    value
        .split(',')
        .filter_map(|endpoint| {
            let rest = endpoint
                .trim()
                .split_once("://")
                .map_or(endpoint.trim(), |(_, rest)| rest);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let host = rest.split([':', '/']).next().unwrap_or_default();
            (!host.is_empty()).then_some(host)
        })
        .collect()
}

#[test]
fn endpoint_hosts_are_read_from_every_form() {
    assert_eq!(endpoint_hosts("kafka:9092"), ["kafka"]);
    assert_eq!(endpoint_hosts("nats://nats:4222"), ["nats"]);
    assert_eq!(
        endpoint_hosts("http://user:8081, http://user-2:8081/x"),
        ["user", "user-2"]
    );
    assert_eq!(
        endpoint_hosts("amqp://guest:guest@rabbitmq:5672/%2f"),
        ["rabbitmq"]
    );
}

/// A binary pointed at `kafka:9092` in an overlay that renders no Service
/// `kafka` waits forever for a broker that is not there, and may still pass
/// its readiness probe.
#[test]
fn every_endpoint_a_binary_is_given_is_a_service_of_the_overlay_or_outside_the_cluster() {
    let mut problems = Vec::new();
    for name in OVERLAYS {
        let rendered = overlay(name);
        let services: BTreeSet<&str> = rendered
            .of_kind("Service")
            .filter_map(|service| str_at(service, "/metadata/name"))
            .collect();
        for (binary, container) in service_containers(&rendered) {
            for (variable, value) in container_env(&rendered, container, &mut problems) {
                let endpoint = ["_URL", "_BROKERS", "_ENDPOINT"]
                    .iter()
                    .any(|suffix| variable.ends_with(suffix));
                let Some(value) = value.filter(|_| endpoint) else {
                    continue;
                };
                for host in endpoint_hosts(&value) {
                    // A name with a dot is resolved outside the namespace.
                    if !host.contains('.') && !services.contains(host) {
                        problems.push(format!(
                            "{name}: {} has {variable}={value}, but the overlay renders no Service {host}",
                            binary.name
                        ));
                    }
                }
            }
        }
    }
    assert_no_problems("k8s", &problems);
}

#[test]
fn every_reference_resolves() {
    let mut problems = Vec::new();
    for name in OVERLAYS {
        let rendered = overlay(name);
        for workload in rendered.workloads() {
            let workload_name = str_at(workload, "/metadata/name").unwrap_or_default();
            let pod = workload
                .pointer("/spec/template/spec")
                .unwrap_or(&Value::Null);
            let labels = workload.pointer("/spec/template/metadata/labels");
            let selector = entries(workload.pointer("/spec/selector/matchLabels"));
            if selector.is_empty()
                || !selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k.as_str())) == Some(*v))
            {
                problems.push(format!(
                    "{name}: {workload_name}'s selector does not match its pod labels"
                ));
            }
            let mut wanted: Vec<(&str, String, bool)> = Vec::new();
            for volume in items(pod.get("volumes")) {
                if let Some(map) = str_at(volume, "/configMap/name") {
                    wanted.push((
                        "ConfigMap",
                        map.to_owned(),
                        volume.pointer("/configMap/optional") == Some(&Value::Bool(true)),
                    ));
                }
                if let Some(secret) = str_at(volume, "/secret/secretName") {
                    wanted.push((
                        "Secret",
                        secret.to_owned(),
                        volume.pointer("/secret/optional") == Some(&Value::Bool(true)),
                    ));
                }
            }
            for container in items(pod.get("containers")) {
                for var in items(container.get("env")) {
                    if let Some(secret) = var
                        .pointer("/valueFrom/secretKeyRef/name")
                        .and_then(Value::as_str)
                    {
                        wanted.push(("Secret", secret.to_owned(), false));
                    }
                    if let Some(map) = var
                        .pointer("/valueFrom/configMapKeyRef/name")
                        .and_then(Value::as_str)
                    {
                        wanted.push(("ConfigMap", map.to_owned(), false));
                    }
                }
            }
            if let Some(account) = str_at(pod, "/serviceAccountName") {
                wanted.push(("ServiceAccount", account.to_owned(), false));
            }
            for (kind, object, optional) in wanted {
                let external =
                    kind == "Secret" && name != "dev" && external_secret_keys(&object).is_some();
                if rendered.get(kind, &object).is_none() && !optional && !external {
                    problems.push(format!(
                        "{name}: {workload_name} uses {kind} {object}, which is not rendered"
                    ));
                }
            }
        }
        for service in rendered.of_kind("Service") {
            let service_name = str_at(service, "/metadata/name").unwrap_or_default();
            let selector = entries(service.pointer("/spec/selector"));
            let targets: Vec<&Value> = rendered
                .workloads()
                .filter(|w| {
                    !selector.is_empty() && selects_pods(service.pointer("/spec/selector"), w)
                })
                .collect();
            if targets.is_empty() {
                problems.push(format!(
                    "{name}: Service {service_name} selects no workload's pods"
                ));
                continue;
            }
            for port in items(service.pointer("/spec/ports")) {
                let Some(target) = port.get("targetPort") else {
                    continue;
                };
                let served = targets.iter().any(|w| {
                    items(w.pointer("/spec/template/spec/containers"))
                        .iter()
                        .any(|c| resolve_port(c, target).is_some())
                });
                if !served {
                    problems.push(format!("{name}: Service {service_name} targets port {target}, which its pods do not declare"));
                }
            }
        }
    }
    assert_no_problems("k8s", &problems);
}

#[test]
fn the_canary_overlay_rolls_the_gateway_out_in_steps_with_analysis() {
    let rendered = overlay("canary");
    let mut problems = Vec::new();
    let rollout = rendered
        .get("Rollout", "gateway")
        .unwrap_or_else(|| panic!("k8s/overlays/canary renders no Rollout gateway"));
    if str_at(rollout, "/apiVersion") != Some("argoproj.io/v1alpha1") {
        problems.push("the Rollout is not argoproj.io/v1alpha1".into());
    }
    let workload = rollout.pointer("/spec/workloadRef");
    let referenced = workload
        .and_then(|w| Some((str_at(w, "/kind")?, str_at(w, "/name")?)))
        .and_then(|(kind, name)| rendered.get(kind, name));
    if referenced.is_none() {
        problems.push(format!(
            "the Rollout's workloadRef {workload:?} is not rendered"
        ));
    }
    let selector = rollout.pointer("/spec/selector/matchLabels");
    let deployment_selector = referenced.and_then(|d| d.pointer("/spec/selector/matchLabels"));
    if selector.is_none() || selector != deployment_selector {
        problems.push("the Rollout's selector differs from its workload's".into());
    }
    let canary = rollout.pointer("/spec/strategy/canary");
    let steps = items(canary.and_then(|c| c.get("steps")));
    let shape: Vec<String> = steps
        .iter()
        .map(|step| {
            if let Some(weight) = step.get("setWeight") {
                format!("setWeight {weight}")
            } else if step.get("pause").is_some() {
                "pause".to_owned()
            } else if let Some(analysis) = step.get("analysis") {
                let templates: Vec<String> = items(analysis.get("templates"))
                    .iter()
                    .filter_map(|t| str_at(t, "/templateName").map(str::to_owned))
                    .collect();
                format!("analysis {}", templates.join(","))
            } else {
                format!("{step}")
            }
        })
        .collect();
    let expected = [
        "setWeight 10",
        "pause",
        "setWeight 50",
        "analysis gateway-error-rate",
        "setWeight 100",
    ];
    if shape != expected {
        problems.push(format!("canary steps {shape:?}, expected {expected:?}"));
    }
    for key in ["canaryService", "stableService"] {
        let service = canary.and_then(|c| str_at(c, &format!("/{key}")));
        if service.is_none_or(|s| rendered.get("Service", s).is_none()) {
            problems.push(format!("{key} {service:?} is not a rendered Service"));
        }
    }
    let surge = canary.and_then(|c| c.get("maxSurge")).and_then(scalar);
    let unavailable = canary
        .and_then(|c| c.get("maxUnavailable"))
        .and_then(scalar);
    if surge.as_deref() != Some("25%") || unavailable.as_deref() != Some("0") {
        problems.push(format!(
            "canary maxSurge {surge:?} maxUnavailable {unavailable:?}, expected 25%/0"
        ));
    }
    match rendered.get("AnalysisTemplate", "gateway-error-rate") {
        None => problems.push("no AnalysisTemplate gateway-error-rate".into()),
        Some(template) => {
            let metrics = items(template.pointer("/spec/metrics"));
            let query = metrics
                .first()
                .and_then(|m| str_at(m, "/provider/prometheus/query"))
                .unwrap_or_default();
            for needle in [
                "http_server_request_duration_seconds_count",
                r#"http_response_status_code=~"5..""#,
                r#"job="gateway""#,
            ] {
                if !query.contains(needle) {
                    problems.push(format!(
                        "the analysis query does not select {needle}: {query}"
                    ));
                }
            }
            // Both the errors and the total of the canary's pods alone.
            let canary_only = r#"rollouts_pod_template_hash="{{args.canary-hash}}""#;
            if query.matches(canary_only).count() != 2 {
                problems.push(format!(
                    "the analysis query does not measure the canary's pods apart ({canary_only} in both sums): {query}"
                ));
            }
            let passed = steps.iter().any(|step| {
                items(step.pointer("/analysis/args")).iter().any(|arg| {
                    str_at(arg, "/name") == Some("canary-hash")
                        && str_at(arg, "/valueFrom/podTemplateHashValue") == Some("Latest")
                })
            });
            if !passed {
                problems.push(
                    "the analysis step does not pass canary-hash as podTemplateHashValue: Latest"
                        .into(),
                );
            }
            // Argo fails an analysis when failures exceed failureLimit: 0
            // makes one failed measurement abort the rollout, as documented.
            let failure_limit = metrics
                .first()
                .and_then(|m| m.get("failureLimit"))
                .and_then(scalar);
            if failure_limit.as_deref() != Some("0") {
                problems.push(format!(
                    "the analysis failureLimit is {failure_limit:?}, not 0: one failed measurement must abort"
                ));
            }
            let condition = metrics.first().and_then(|m| str_at(m, "/successCondition"));
            if condition.is_none() {
                problems.push("the analysis metric has no successCondition".into());
            }
            let address = metrics
                .first()
                .and_then(|m| str_at(m, "/provider/prometheus/address"))
                .unwrap_or_default();
            if address.is_empty() {
                problems.push("the analysis has no Prometheus address".into());
            }
        }
    }
    let hpa_target = rendered
        .get("HorizontalPodAutoscaler", "gateway")
        .and_then(|hpa| str_at(hpa, "/spec/scaleTargetRef/kind"));
    if hpa_target != Some("Rollout") {
        problems.push(format!(
            "the gateway's HPA scales {hpa_target:?}, not the Rollout"
        ));
    }
    assert_no_problems("k8s/overlays/canary", &problems);
}

#[test]
fn the_dev_overlay_shares_the_compose_stacks_configuration() {
    let mut problems = Vec::new();
    for (copy, original) in [
        (
            "k8s/overlays/dev/config/otel-collector.yaml",
            "deploy/otel-collector.yaml",
        ),
        (
            "k8s/overlays/dev/config/grafana/datasources.yaml",
            "deploy/grafana/provisioning/datasources/datasources.yaml",
        ),
        (
            "k8s/overlays/dev/config/grafana/dashboards.yaml",
            "deploy/grafana/provisioning/dashboards/dashboards.yaml",
        ),
        (
            "k8s/overlays/dev/config/postgres-init.sql",
            "deploy/postgres/init/01-databases.sql",
        ),
        (
            "k8s/overlays/dev/config/rabbitmq-enabled-plugins",
            "deploy/rabbitmq/enabled_plugins",
        ),
    ] {
        if read(copy) != read(original) {
            problems.push(format!(
                "{copy} differs from {original}: copy it over (`cp {original} {copy}`)"
            ));
        }
    }
    let rendered = overlay("dev");
    let mut images = BTreeMap::new();
    for workload in rendered.workloads() {
        for c in items(workload.pointer("/spec/template/spec/containers")) {
            let image = str_at(c, "/image").unwrap_or_default();
            if let Some((name, _)) = image.rsplit_once(':') {
                images.insert(name.to_owned(), image.to_owned());
            }
        }
    }
    // The same versions as docker-compose.yml.
    let compose = yaml::load("docker-compose.yml");
    for (service, spec) in entries(compose.get("services")) {
        let Some(image) = str_at(spec, "/image") else {
            continue;
        };
        let Some((name, _)) = image.rsplit_once(':') else {
            continue;
        };
        if let Some(k8s) = images.get(name)
            && k8s != image
        {
            problems.push(format!(
                "{service}: docker-compose.yml runs {image}, k8s/overlays/dev {k8s}"
            ));
        }
    }
    // The services' pods are scraped on their port named http by the dev Prometheus.
    let prometheus = yaml::load("k8s/overlays/dev/config/prometheus.yml");
    let text = prometheus.to_string();
    for needle in [
        "kubernetes_sd_configs",
        "prometheus_io_scrape",
        "http|metrics",
        "app_kubernetes_io_name",
    ] {
        if !text.contains(needle) {
            problems.push(format!(
                "k8s/overlays/dev/config/prometheus.yml no longer uses {needle}"
            ));
        }
    }
    let grafana = rendered.get("Deployment", "grafana");
    let provider = yaml::load("deploy/grafana/provisioning/dashboards/dashboards.yaml");
    let path = items(provider.get("providers"))
        .first()
        .and_then(|p| str_at(p, "/options/path"))
        .unwrap_or_default()
        .to_owned();
    let mounted = grafana
        .and_then(|g| container(g, "grafana"))
        .map(|c| {
            items(c.get("volumeMounts"))
                .iter()
                .any(|m| str_at(m, "/mountPath") == Some(path.as_str()))
        })
        .unwrap_or(false);
    if !mounted {
        problems.push(format!(
            "grafana does not mount its dashboards at the provider's path {path}"
        ));
    }
    assert_no_problems("k8s/overlays/dev", &problems);
}

/// The `*.json` file names of a directory below the repository root.
fn json_files(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(deploy_checks::repo_path(dir))
        .unwrap_or_else(|error| panic!("cannot list {dir}: {error}"))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect()
}

#[test]
fn the_dev_overlay_ships_every_dashboard() {
    const DASHBOARDS: &str = "deploy/grafana/dashboards";
    const COPIES: &str = "k8s/overlays/dev/config/grafana/dashboards";
    let dashboards = json_files(DASHBOARDS);
    assert!(!dashboards.is_empty(), "no dashboards in {DASHBOARDS}");
    let mut problems = Vec::new();
    // kustomize reads nothing outside k8s/overlays/dev: each dashboard has a
    // copy there, identical to its original.
    let copies = json_files(COPIES);
    for name in &dashboards {
        if !copies.contains(name) {
            problems.push(format!(
                "{DASHBOARDS}/{name} has no copy: `cp {DASHBOARDS}/{name} {COPIES}/` and list it in the grafana-dashboards configMapGenerator"
            ));
        } else if read(format!("{COPIES}/{name}")) != read(format!("{DASHBOARDS}/{name}")) {
            problems.push(format!(
                "{COPIES}/{name} differs from {DASHBOARDS}/{name}: copy it over"
            ));
        }
    }
    for name in copies.difference(&dashboards) {
        problems.push(format!(
            "{COPIES}/{name} is no dashboard of {DASHBOARDS} any more: remove it"
        ));
    }
    // The rendered ConfigMap holds them all, one key per file, and it is
    // what Grafana mounts.
    let rendered = overlay("dev");
    let configmap = rendered.of_kind("ConfigMap").find(|doc| {
        str_at(doc, "/metadata/name").is_some_and(|name| {
            name == "grafana-dashboards" || name.starts_with("grafana-dashboards-")
        })
    });
    match configmap {
        None => problems.push("k8s/overlays/dev renders no ConfigMap grafana-dashboards".into()),
        Some(configmap) => {
            let keys: BTreeSet<String> = entries(configmap.get("data"))
                .into_iter()
                .map(|(key, _)| key.clone())
                .collect();
            if keys != dashboards {
                problems.push(format!(
                    "ConfigMap grafana-dashboards holds {keys:?}, {DASHBOARDS} has {dashboards:?}"
                ));
            }
            for name in keys.intersection(&dashboards) {
                let shipped = str_at(configmap, &format!("/data/{name}")).unwrap_or_default();
                if shipped != read(format!("{DASHBOARDS}/{name}")) {
                    problems.push(format!(
                        "ConfigMap grafana-dashboards: {name} is not {DASHBOARDS}/{name}"
                    ));
                }
            }
            let name = str_at(configmap, "/metadata/name").unwrap_or_default();
            let mounted = rendered
                .get("Deployment", "grafana")
                .map(|grafana| {
                    items(grafana.pointer("/spec/template/spec/volumes"))
                        .iter()
                        .any(|volume| str_at(volume, "/configMap/name") == Some(name))
                })
                .unwrap_or(false);
            if !mounted {
                problems.push(format!("grafana mounts no volume of ConfigMap {name}"));
            }
        }
    }
    assert_no_problems("k8s/overlays/dev dashboards", &problems);
}
