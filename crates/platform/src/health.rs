//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP: a failing liveness
//! probe gets the process restarted, so it must not depend on anything
//! outside it. `/readyz` runs every registered dependency check concurrently,
//! each bounded by a short timeout, and answers 503 naming each failing check
//! while any fails or while the process is shutting down, so a load balancer
//! stops sending traffic before the listeners close.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::join_all;
use http::StatusCode;
use serde::Serialize;

/// How long one dependency check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named dependency checks behind `/readyz` and gRPC health.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
    shutting_down: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// The result of one readiness evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// `ready`, `not_ready` or `shutting_down`.
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, CheckOutcome>,
}

/// One check's outcome in a [`ReadinessReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    /// `ok` or `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency check; `Err` carries a short reason.
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// From now on the process reports itself not ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Runs every check concurrently, each within [`CHECK_TIMEOUT`].
    pub async fn report(&self) -> ReadinessReport {
        let outcomes = join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => CheckOutcome {
                    status: "ok",
                    error: None,
                },
                Ok(Err(error)) => CheckOutcome {
                    status: "error",
                    error: Some(error),
                },
                Err(_) => CheckOutcome {
                    status: "error",
                    error: Some(format!("no answer within {CHECK_TIMEOUT:?}")),
                },
            };
            (*name, outcome)
        }))
        .await;
        let checks: BTreeMap<_, _> = outcomes.into_iter().collect();
        let status = if self.shutting_down.load(Ordering::SeqCst) {
            "shutting_down"
        } else if checks.values().all(|outcome| outcome.status == "ok") {
            "ready"
        } else {
            "not_ready"
        };
        ReadinessReport { status, checks }
    }

    /// `/healthz` and `/readyz`.
    pub fn routes(self) -> axum::Router {
        axum::Router::new()
            .route(
                "/healthz",
                get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
            )
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failing_check_is_named_and_makes_the_report_not_ready() {
        let readiness = Readiness::new()
            .with_check("database", || async {
                Err("connection refused".to_owned())
            })
            .with_check("broker", || async { Ok(()) });
        let report = readiness.report().await;
        assert_eq!(report.status, "not_ready");
        assert_eq!(
            report.checks["database"].error.as_deref(),
            Some("connection refused")
        );
        assert_eq!(report.checks["broker"].status, "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_times_out() {
        let readiness = Readiness::new().with_check("slow", std::future::pending);
        let report = readiness.report().await;
        assert_eq!(report.checks["slow"].status, "error");
    }

    #[tokio::test]
    async fn shutdown_turns_ready_into_shutting_down() {
        let readiness = Readiness::new().with_check("database", || async { Ok(()) });
        assert!(readiness.report().await.is_ready());
        readiness.begin_shutdown();
        assert_eq!(readiness.report().await.status, "shutting_down");
    }
}
