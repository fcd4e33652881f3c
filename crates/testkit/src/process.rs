//! Service binaries as child processes, for end-to-end tests.
//!
//! A binary is started with `HTTP_ADDR`/`GRPC_ADDR` on port 0 and JSON logs;
//! the addresses it actually bound are read from its `started` log line, so
//! parallel tests never race for ports. Every log line is kept for
//! assertions and echoed to the test's output with the binary's name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The HTTP and gRPC addresses a binary reported in its `started` line.
type BoundAddrs = (Option<SocketAddr>, Option<SocketAddr>);

/// Path of a workspace binary, next to the running test executable
/// (`target/<profile>/deps/test-…` → `target/<profile>/<name>`).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test executable directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not built; run `cargo build --bins` (or `make test`, which builds every target)",
        path.display()
    );
    path
}

/// A running service binary.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    child: Child,
    /// The HTTP address it listens on.
    pub http_addr: Option<SocketAddr>,
    /// The gRPC address it listens on.
    pub grpc_addr: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The tasks reading stdout and stderr, done once the process has
    /// closed them.
    readers: Vec<JoinHandle<()>>,
}

/// How to start a binary.
#[derive(Debug, Clone)]
pub struct Spawn {
    name: String,
    env: Vec<(String, String)>,
    wait_for_start: bool,
}

impl Spawn {
    /// The workspace binary `name`, with JSON logs at `info` on port 0.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            env: vec![
                ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
                ("GRPC_ADDR".into(), "127.0.0.1:0".into()),
                ("LOG_FORMAT".into(), "json".into()),
                ("RUST_LOG".into(), "info".into()),
                ("SHUTDOWN_TIMEOUT".into(), "10s".into()),
                // No collector listens in tests, but a test's own may.
                ("OTEL_TRACES_EXPORTER".into(), "none".into()),
            ],
            wait_for_start: true,
        }
    }

    /// Sets (or overrides) one environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Returns right after spawning instead of waiting for the `started` line
    /// (for binaries expected to exit early).
    pub fn no_wait(mut self) -> Self {
        self.wait_for_start = false;
        self
    }

    pub async fn start(self) -> ServiceProcess {
        let mut command = Command::new(binary_path(&self.name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, mut started_rx) = watch::channel(None::<BoundAddrs>);
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(collect(
                self.name.clone(),
                out,
                stdout.clone(),
                Some(started_tx),
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(self.name.clone(), err, stderr.clone(), None));
        }
        let mut process = ServiceProcess {
            name: self.name.clone(),
            child,
            http_addr: None,
            grpc_addr: None,
            stdout,
            stderr,
            readers,
        };
        if self.wait_for_start {
            let started = tokio::time::timeout(
                Duration::from_secs(30),
                started_rx.wait_for(Option::is_some),
            )
            .await;
            match started {
                Ok(Ok(addrs)) => {
                    let (http, grpc) = (*addrs).unwrap_or_default();
                    process.http_addr = http;
                    process.grpc_addr = grpc;
                }
                _ => panic!(
                    "{} did not log its start line within 30 s; stderr: {:?}; stdout: {:?}",
                    self.name,
                    process.stderr_lines(),
                    process.stdout_lines()
                ),
            }
        }
        process
    }
}

/// Reads `stream` line by line into `sink` until it ends.
fn collect(
    name: String,
    stream: impl AsyncRead + Unpin + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    started: Option<watch::Sender<Option<BoundAddrs>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name}] {line}");
            if let Some(started) = &started
                && let Ok(json) = serde_json::from_str::<Value>(&line)
                && json["message"] == "started"
            {
                let addr = |key: &str| json[key].as_str().and_then(|a| a.parse().ok());
                started.send_replace(Some((addr("http_addr"), addr("grpc_addr"))));
            }
            sink.lock().unwrap().push(line);
        }
    })
}

impl ServiceProcess {
    /// `http://<http_addr>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr.expect("no HTTP address"))
    }

    /// `http://<grpc_addr>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr.expect("no gRPC address"))
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.http_url());
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match client
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => last = response.text().await.unwrap_or_default(),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} not ready within {within:?}; last /readyz: {last}",
            self.name
        );
    }

    /// Sends a signal (SIGTERM for a graceful stop, SIGKILL for a crash).
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("process already reaped");
        kill(Pid::from_raw(pid as i32), signal).expect("kill failed");
    }

    /// Waits for the process to exit and for every line it wrote to be
    /// read, so that the lines are all there when this returns.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let exited = async {
            let status = self.child.wait().await;
            for reader in self.readers.drain(..) {
                let _ = reader.await;
            }
            status
        };
        tokio::time::timeout(within, exited)
            .await
            .unwrap_or_else(|_| panic!("{} still running after {within:?}", self.name))
            .expect("wait failed")
    }

    /// SIGTERM, then [`wait`](Self::wait): a graceful stop, with every
    /// line the process wrote read.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait(within).await
    }

    /// Waits up to `within` until a line the process wrote to stdout
    /// contains every one of `needles`.
    pub async fn wait_for_line(&self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .stdout_lines()
                .iter()
                .any(|line| needles.iter().all(|needle| line.contains(needle)));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {needles:?} within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
