//! deploy/Dockerfile: hadolint-clean, its stages copy only files that exist
//! and that the build context keeps, everything the compiler reads is copied,
//! the images are pinned, and the runtime image runs as a non-root user with
//! a healthcheck that works (tried against the real binaries).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deploy_checks::dockerfile::{self, DockerIgnore, Stage};
use deploy_checks::{
    CONTRACT, assert_no_problems, binary_path, describe, image_is_pinned, read, repo_path,
    repo_root, run, run_tool,
};

const DOCKERFILE: &str = "deploy/Dockerfile";

fn stages() -> Vec<Stage> {
    let stages = dockerfile::parse(&read(DOCKERFILE));
    assert!(!stages.is_empty(), "{DOCKERFILE} has no FROM");
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|stage| stage.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{DOCKERFILE} has no stage `{name}`"))
}

/// The context paths a stage copies (COPY/ADD without --from), and,
/// recursively, the stages it is built FROM.
fn copied_paths(stages: &[Stage], name: &str) -> Vec<String> {
    let this = stage(stages, name);
    let mut paths = match stages
        .iter()
        .find(|s| s.name.as_deref() == Some(&this.image))
    {
        Some(parent) => copied_paths(stages, parent.name.as_deref().unwrap_or_default()),
        None => Vec::new(),
    };
    for instruction in this.all("COPY").chain(this.all("ADD")) {
        let copy = dockerfile::copy(&instruction.args);
        if copy.from.is_none() {
            paths.extend(
                copy.sources
                    .iter()
                    .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned()),
            );
        }
    }
    paths
}

#[test]
fn hadolint_passes() {
    let output = run_tool("hadolint", [DOCKERFILE]);
    assert!(
        output.status.success(),
        "hadolint {DOCKERFILE}: {}",
        describe(&output)
    );
}

#[test]
fn every_copy_names_an_existing_file_the_context_keeps() {
    let stages = stages();
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut problems = Vec::new();
    for stage in &stages {
        for instruction in stage.all("COPY").chain(stage.all("ADD")) {
            let copy = dockerfile::copy(&instruction.args);
            if let Some(from) = &copy.from {
                if !names.contains(&from.as_str()) {
                    problems.push(format!(
                        "line {}: COPY --from={from}, which is not a stage of {DOCKERFILE}",
                        instruction.line
                    ));
                }
                continue;
            }
            if copy.sources.is_empty() {
                problems.push(format!("line {}: COPY without a source", instruction.line));
            }
            for source in &copy.sources {
                if source == "." {
                    problems.push(format!(
                        "line {}: COPY . copies the whole context; name what the stage needs",
                        instruction.line
                    ));
                    continue;
                }
                if source.contains(['*', '?', '$']) {
                    problems.push(format!(
                        "line {}: {source}: name files, not patterns or variables",
                        instruction.line
                    ));
                    continue;
                }
                let relative = source.trim_start_matches("./").trim_end_matches('/');
                if !repo_path(relative).exists() {
                    problems.push(format!(
                        "line {}: COPY {source}: no such file or directory",
                        instruction.line
                    ));
                } else if ignore.excludes(relative) {
                    problems.push(format!(
                        "line {}: COPY {source}: .dockerignore leaves it out of the build context",
                        instruction.line
                    ));
                }
            }
        }
    }
    assert_no_problems(DOCKERFILE, &problems);
}

#[test]
fn dockerignore_keeps_build_output_and_git_out() {
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let mut problems = Vec::new();
    for path in [
        "target",
        "target/debug/gateway",
        "crates/platform/target",
        ".git",
    ] {
        if !ignore.excludes(path) {
            problems.push(format!(".dockerignore lets {path} into the build context"));
        }
    }
    assert_no_problems(".dockerignore", &problems);
}

/// Top-level directories of the workspace members (`members = ["crates/*", ...]`).
fn member_roots() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let members = manifest
        .split_once("members")
        .and_then(|(_, rest)| rest.split_once('['))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("Cargo.toml has no workspace members list"));
    let mut roots: Vec<String> = members
        .split(',')
        .map(|member| member.trim().trim_matches('"'))
        .filter(|member| !member.is_empty())
        .filter_map(|member| member.split('/').next())
        .map(str::to_owned)
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// Every `.rs` file below `dir`, `target` directories excluded.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The crate directory (nearest ancestor with a Cargo.toml) of a source file.
fn crate_dir(file: &Path) -> PathBuf {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
        .map_or_else(repo_root, Path::to_path_buf)
}

/// String literals passed to `macro!("...")` in `text`.
fn macro_paths(text: &str, name: &str) -> Vec<String> {
    let needle = format!("{name}!(\"");
    text.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn the_builder_copies_everything_the_compiler_reads() {
    let stages = stages();
    let copied = copied_paths(&stages, "builder");
    let planned = copied_paths(&stages, "planner");
    let mut problems = Vec::new();
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    needed.extend(member_roots());
    for path in &needed {
        if !copied.contains(path) {
            problems.push(format!("the builder stage does not copy {path}"));
        }
        if !planned.contains(path) {
            problems.push(format!(
                "the planner stage does not copy {path} (cargo chef prepare reads every manifest)"
            ));
        }
    }
    // The proto crate's build script compiles ../../proto.
    if !read("crates/proto/build.rs").contains("../../proto") {
        problems
            .push("crates/proto/build.rs no longer reads ../../proto: update this check".into());
    }
    if !copied.contains(&"proto".to_owned()) {
        problems
            .push("the builder stage does not copy proto/ (read by crates/proto/build.rs)".into());
    }
    // Paths compiled into the binaries: include_str!/include_bytes! (relative
    // to the file) and sqlx::migrate! (relative to the crate).
    let root = repo_root();
    let mut files = Vec::new();
    for dir in member_roots() {
        rust_files(&root.join(dir), &mut files);
    }
    let mut uses_offline_macros = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // Code only: doc comments show these macros in examples.
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut referenced = Vec::new();
        let base = file.parent().unwrap_or(&root).to_path_buf();
        for path in macro_paths(&code, "include_str")
            .into_iter()
            .chain(macro_paths(&code, "include_bytes"))
        {
            referenced.push(base.join(path));
        }
        for path in macro_paths(&code, "migrate") {
            referenced.push(crate_dir(file).join(path));
        }
        for target in referenced {
            let Ok(canonical) = target.canonicalize() else {
                continue;
            };
            let Ok(relative) = canonical.strip_prefix(root.canonicalize().unwrap_or(root.clone()))
            else {
                continue;
            };
            let top = relative
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if !copied.contains(&top) && !copied.contains(&relative.to_string_lossy().into_owned())
            {
                problems.push(format!(
                    "{} compiles in {}, which the builder stage does not copy",
                    file.strip_prefix(&root).unwrap_or(file).display(),
                    relative.display()
                ));
            }
        }
        if [
            "query!(",
            "query_as!(",
            "query_scalar!(",
            "query_file!(",
            "query_file_as!(",
        ]
        .iter()
        .any(|m| code.contains(&format!("sqlx::{m}")) || code.contains(&format!(" {m}")))
        {
            uses_offline_macros.push(
                file.strip_prefix(&root)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
            );
        }
    }
    // sqlx's compile-time checked queries build without a database only from
    // the offline data in .sqlx/ (SQLX_OFFLINE=true in the builder).
    if !uses_offline_macros.is_empty() && !copied.contains(&".sqlx".to_owned()) {
        problems.push(format!(
            "{} use sqlx's checked query macros: commit `cargo sqlx prepare --workspace`'s .sqlx/ and COPY .sqlx in the builder stage",
            uses_offline_macros.join(", ")
        ));
    }
    assert_no_problems(DOCKERFILE, &problems);
}

#[test]
fn every_base_image_is_pinned_and_the_toolchain_is_new_enough() {
    let stages = stages();
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut problems = Vec::new();
    for stage in &stages {
        if names.contains(&stage.image.as_str()) {
            continue;
        }
        if !image_is_pinned(&stage.image) {
            problems.push(format!("FROM {}: not pinned to a version", stage.image));
        }
    }
    let rust = stages
        .iter()
        .find(|stage| stage.image.starts_with("rust:"))
        .map(|stage| stage.image.clone())
        .unwrap_or_else(|| panic!("no stage builds FROM rust:"));
    let version = |text: &str| -> Vec<u32> {
        text.split(['.', '-'])
            .map_while(|part| part.parse().ok())
            .collect()
    };
    let image_version = version(rust.trim_start_matches("rust:"));
    let manifest = read("Cargo.toml");
    let required = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("rust-version = "))
        .map(|value| version(value.trim_matches('"')))
        .unwrap_or_else(|| panic!("Cargo.toml has no rust-version"));
    if image_version < required {
        problems.push(format!(
            "{rust} is older than the workspace's rust-version {required:?}"
        ));
    }
    // The binary links against the builder's glibc: build and run on the
    // same Debian release.
    let runtime = &stages.last().unwrap().image;
    let same_release = (rust.contains("trixie")
        && (runtime.contains(":13") || runtime.contains("trixie")))
        || (rust.contains("bookworm") && (runtime.contains(":12") || runtime.contains("bookworm")));
    if !same_release {
        problems.push(format!(
            "builder {rust} and runtime {runtime} are not the same Debian release"
        ));
    }
    assert_no_problems(DOCKERFILE, &problems);
}

#[test]
fn the_runtime_image_runs_one_service_as_a_non_root_user_with_a_healthcheck() {
    let stages = stages();
    let runtime = stages.last().unwrap();
    let mut problems = Vec::new();
    let args: Vec<&str> = runtime.all("ARG").map(|i| i.args.as_str()).collect();
    if !args
        .iter()
        .any(|arg| *arg == "SERVICE" || arg.starts_with("SERVICE="))
    {
        problems.push("the runtime stage has no ARG SERVICE".into());
    }
    match runtime.all("USER").last() {
        Some(user) => {
            let uid = user.args.split(':').next().unwrap_or_default();
            if uid.parse::<u32>().map_or(true, |uid| uid == 0) {
                problems.push(format!(
                    "USER {}: use a numeric, non-zero uid (Kubernetes' runAsNonRoot checks it)",
                    user.args
                ));
            }
        }
        None => problems.push("the runtime stage has no USER: it would run as root".into()),
    }
    match runtime.all("HEALTHCHECK").last() {
        Some(check) if check.args.contains("CMD") && !check.args.contains("NONE") => {}
        _ => problems.push("the runtime stage has no HEALTHCHECK".into()),
    }
    if runtime.all("ENTRYPOINT").next().is_none() {
        problems.push("the runtime stage has no ENTRYPOINT".into());
    }
    let labels: String = runtime
        .all("LABEL")
        .map(|l| l.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    for label in [
        "title",
        "description",
        "source",
        "licenses",
        "version",
        "revision",
    ] {
        if !labels.contains(&format!("org.opencontainers.image.{label}=")) {
            problems.push(format!("no org.opencontainers.image.{label} label"));
        }
    }
    // The runtime copies the healthcheck, and the image runs what the healthcheck asks.
    if !copied_paths(
        &stages,
        stages.last().unwrap().name.as_deref().unwrap_or("runtime"),
    )
    .contains(&"deploy/healthcheck.sh".to_owned())
    {
        problems.push("the runtime stage does not copy deploy/healthcheck.sh".into());
    }
    assert_no_problems(DOCKERFILE, &problems);
}

#[test]
fn the_healthcheck_reads_each_binarys_default_http_port() {
    let mut problems = Vec::new();
    for binary in CONTRACT {
        let output = run(Command::new("bash")
            .arg(repo_path("deploy/healthcheck.sh"))
            .arg("--default-port")
            .arg(binary_path(binary.name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()));
        let port = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || port != binary.http_port.to_string() {
            problems.push(format!(
                "healthcheck --default-port {}: expected {}, got {}",
                binary.name,
                binary.http_port,
                describe(&output)
            ));
        }
    }
    assert_no_problems("deploy/healthcheck.sh", &problems);
}

/// A service binary running on loopback, killed on drop.
struct Running {
    child: Child,
    http_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` on port 0 and reads the HTTP port it bound from its
/// `started` log line.
fn start(binary: &str, extra: &[(&str, &str)]) -> Running {
    let mut child = Command::new(binary_path(binary))
        .env_clear()
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["message"] == "started"
            {
                let port = json["http_addr"].as_str().and_then(deploy_checks::port_of);
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{binary} did not log `started` with its http_addr within 30 s"));
    Running {
        child,
        http_port: port,
    }
}

/// Runs the healthcheck against `port` until `done` accepts its outcome (or
/// 20 s pass); returns whether it passed and what it said.
fn healthcheck_until(port: u16, done: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = run(Command::new("bash")
            .arg(repo_path("deploy/healthcheck.sh"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HTTP_ADDR", format!("0.0.0.0:{port}")));
        let healthy = output.status.success();
        let text = describe(&output);
        if done(healthy, &text) || Instant::now() > deadline {
            return (healthy, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_healthcheck_passes_on_a_ready_service_and_fails_otherwise() {
    // Ready: the gateway has no dependency to wait for.
    let gateway = start("gateway", &[]);
    let port = gateway.http_port;
    let (healthy, output) = healthcheck_until(port, |healthy, _| healthy);
    assert!(
        healthy,
        "healthcheck against a ready gateway failed: {output}"
    );
    drop(gateway);
    let (healthy, output) = healthcheck_until(port, |healthy, _| !healthy);
    assert!(
        !healthy,
        "healthcheck passed with nothing listening: {output}"
    );

    // Live but not ready: the user service without its database answers 503.
    let unreachable = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let user = start(
        "user",
        &[(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{unreachable}/users"),
        )],
    );
    let (healthy, output) = healthcheck_until(user.http_port, |_, text| text.contains(" 503"));
    assert!(
        !healthy,
        "healthcheck passed while /readyz cannot be ready: {output}"
    );
    assert!(
        output.contains(" 503"),
        "expected the 503 in the message: {output}"
    );
}
