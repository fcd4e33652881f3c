//! Running a binary: listeners, background tasks, graceful shutdown.
//!
//! Shutdown follows the order a load balancer needs: on SIGTERM or SIGINT the
//! process first reports itself not ready (`/readyz` 503, gRPC health
//! `NOT_SERVING`), then stops accepting connections, lets in-flight HTTP and
//! gRPC requests finish, tells background tasks (consumers, relays, sagas) to
//! stop at their next safe point, waits for all of that up to
//! `SHUTDOWN_TIMEOUT`, flushes telemetry and exits 0.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use futures::future::join_all;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::config::CommonArgs;
use crate::db::Database;
use crate::grpc::{GrpcServices, ObserveGrpcLayer, REQUEST_TIMEOUT, set_health};
use crate::health::Readiness;
use crate::startup::{StartupGate, StartupGateLayer, gate_http};
use crate::telemetry::{Telemetry, TelemetryError};
use crate::{faults, http_layers, metrics, telemetry};

type Task = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How often gRPC health follows readiness while running.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// One binary's servers and background tasks.
pub struct Service {
    shutdown_timeout: Duration,
    telemetry: Telemetry,
    wiring: Wiring,
}

/// What [`Running::start`] starts.
struct Wiring {
    name: &'static str,
    version: &'static str,
    http: Option<(SocketAddr, Router)>,
    grpc: Option<(SocketAddr, GrpcServices)>,
    readiness: Readiness,
    gate: StartupGate,
    tasks: Vec<(&'static str, Task)>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.wiring.name)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts describing a binary: installs telemetry and arms the fault
    /// points of `FAULTS`.
    pub fn new(
        name: &'static str,
        version: &'static str,
        common: &CommonArgs,
    ) -> Result<Self, TelemetryError> {
        let telemetry = telemetry::init(name, &common.telemetry)?;
        faults::arm(&common.faults);
        Ok(Self {
            shutdown_timeout: common.shutdown_timeout,
            telemetry,
            wiring: Wiring {
                name,
                version,
                http: None,
                grpc: None,
                readiness: Readiness::new(),
                gate: StartupGate::default(),
                tasks: Vec::new(),
                shutdown: CancellationToken::new(),
            },
        })
    }

    /// The token cancelled when shutdown begins, for wiring that needs it
    /// before [`Service::run`] (e.g. streaming responses that must end).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.wiring.shutdown.clone()
    }

    /// Serves `router` (plus `/healthz`, `/readyz`, `/metrics`) on `addr`.
    pub fn http(mut self, addr: SocketAddr, router: Router) -> Self {
        self.wiring.http = Some((addr, router));
        self
    }

    /// Serves `services` (plus health and reflection) on `addr`.
    pub fn grpc(mut self, addr: SocketAddr, services: GrpcServices) -> Self {
        self.wiring.grpc = Some((addr, services));
        self
    }

    /// Adds a readiness check (see [`Readiness::with_check`]).
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.wiring.readiness = self.wiring.readiness.with_check(name, check);
        self
    }

    /// The service's own database: created and migrated in the background
    /// (`database-bootstrap`), a `database` readiness check, and every
    /// request but the probes answered 503 / `UNAVAILABLE` until it is
    /// migrated (see [`crate::startup`]).
    pub fn database(self, database: Database) -> Self {
        let check = database.clone();
        let bootstrap = database.clone();
        let mut service = self
            .check("database", move || {
                let database = check.clone();
                async move { database.check().await }
            })
            .task("database-bootstrap", move |cancel| {
                bootstrap.bootstrap(cancel)
            });
        service.wiring.gate = StartupGate::new(database);
        service
    }

    /// Runs a background task until it returns or its token is cancelled at
    /// shutdown; it should then finish its current unit of work and return.
    pub fn task<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.wiring
            .tasks
            .push((name, Box::new(move |token| Box::pin(task(token)))));
        self
    }

    /// Runs until SIGTERM/SIGINT, then shuts down gracefully. Returns the
    /// process exit code.
    pub async fn run(self) -> ExitCode {
        let name = self.wiring.name;
        let telemetry = self.telemetry;
        let code = match Running::start(self.wiring).await {
            Ok(running) => running.until_shutdown(self.shutdown_timeout).await,
            Err(error) => {
                tracing::error!(service = name, %error, "failed to start");
                ExitCode::FAILURE
            }
        };
        if let Err(error) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
            eprintln!("telemetry shutdown panicked: {error}");
        }
        code
    }
}

/// Why a binary could not start serving.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics recorder: {0}")]
    Metrics(#[from] metrics::InstallError),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

struct Running {
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    async fn start(wiring: Wiring) -> Result<Self, StartError> {
        let Wiring {
            name,
            version,
            http,
            grpc,
            readiness,
            gate,
            tasks,
            shutdown,
        } = wiring;
        metrics::install()?;
        let mut servers = Vec::new();
        let mut http_addr = None;
        let mut grpc_addr = None;

        spawn_signal_listener(shutdown.clone(), readiness.clone()).map_err(StartError::Signal)?;

        if let Some((addr, router)) = http {
            let listener = bind(addr).await?;
            http_addr = listener.local_addr().ok();
            let router = if gate.is_always_open() {
                router
            } else {
                router.layer(from_fn_with_state(gate.clone(), gate_http))
            };
            let app = router
                .route("/metrics", get(metrics::render))
                .merge(readiness.clone().routes())
                // One `route_layer` call for both, outermost first: axum
                // boxes the service each call makes, and every request
                // clones the route's service box by box.
                .route_layer(
                    ServiceBuilder::new()
                        .layer(http_layers::trace_layer())
                        .layer(metrics::TrackHttpLayer),
                );
            let stop = shutdown.clone();
            servers.push(tokio::spawn(async move {
                let service = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(error) = axum::serve(listener, service)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%error, "HTTP server failed");
                }
            }));
        }

        if let Some((addr, services)) = grpc {
            let listener = bind(addr).await?;
            grpc_addr = listener.local_addr().ok();
            let (routes, reporter, names) = services.finish()?;
            set_health(&reporter, &names, false).await;
            let stop = shutdown.clone();
            servers.push(tokio::spawn(async move {
                let incoming = TcpListenerStream::new(listener);
                if let Err(error) = tonic::transport::Server::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .layer(ObserveGrpcLayer)
                    .layer(StartupGateLayer::new(gate))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%error, "gRPC server failed");
                }
            }));
            let stop = shutdown.clone();
            let readiness = readiness.clone();
            servers.push(tokio::spawn(async move {
                loop {
                    let ready = readiness.report().await.is_ready();
                    set_health(&reporter, &names, ready && !stop.is_cancelled()).await;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                    }
                }
                set_health(&reporter, &names, false).await;
            }));
        }

        let tasks = tasks
            .into_iter()
            .map(|(task_name, task)| (task_name, tokio::spawn(task(shutdown.child_token()))))
            .collect();

        tracing::info!(
            service = name,
            version,
            http_addr = http_addr.map(|a| a.to_string()),
            grpc_addr = grpc_addr.map(|a| a.to_string()),
            "started"
        );
        Ok(Self {
            shutdown,
            servers,
            tasks,
        })
    }

    async fn until_shutdown(self, deadline: Duration) -> ExitCode {
        self.shutdown.cancelled().await;
        tracing::info!(
            deadline_ms = deadline.as_millis() as u64,
            "shutting down: draining requests and tasks"
        );
        let drain = async {
            join_all(self.servers).await;
            for (name, outcome) in self.tasks {
                if let Err(error) = outcome.await {
                    tracing::error!(task = name, %error, "background task panicked");
                }
            }
        };
        match tokio::time::timeout(deadline, drain).await {
            Ok(()) => tracing::info!("shutdown complete"),
            Err(_) => tracing::warn!("shutdown deadline passed; abandoning unfinished work"),
        }
        ExitCode::SUCCESS
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Listens for the signals that ask a process to stop — SIGTERM (what
/// `docker stop` and Kubernetes send) and SIGINT (Ctrl-C) — from this call
/// on; the future completes with the name of the first that arrives.
pub fn stop_signals() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

fn spawn_signal_listener(shutdown: CancellationToken, readiness: Readiness) -> std::io::Result<()> {
    let stop = stop_signals()?;
    tokio::spawn(async move {
        let signal = tokio::select! {
            signal = stop => signal,
            () = shutdown.cancelled() => return,
        };
        tracing::info!(signal, "shutdown requested");
        readiness.begin_shutdown();
        shutdown.cancel();
    });
    Ok(())
}
