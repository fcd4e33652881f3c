//! The `loadgen` binary against the five real binaries: without an
//! administrator and with nothing in stock it refuses to start and says what
//! to set; with one, it orders from a catalogue of its own, so a small
//! catalogue already in the shop runs out for nobody, and its report shows
//! every order settled and no call failed; stopped by SIGTERM, it still
//! reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use e2e::stack::{ADMIN_EMAIL, PASSWORD, PATIENCE, Stack};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use testkit::process::binary_path;
use tokio::process::Command;

/// `loadgen` with two shoppers for 3 s, reporting JSON, plus `env`.
fn loadgen(stack: &Stack, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary_path("loadgen"));
    command
        .env_clear()
        .env("GATEWAY_URL", stack.gateway_url())
        .env("LOADGEN_SHOPPERS", "2")
        .env("LOADGEN_DURATION", "3s")
        .env("LOADGEN_CANCEL_RATIO", "0.5")
        .env("LOADGEN_REPORT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The JSON report a successful run printed.
fn report(run: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{:?}: {stderr}", run.status);
    serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&run.stdout)))
}

const AS_ADMIN: [(&str, &str); 2] = [
    ("LOADGEN_ADMIN_EMAIL", ADMIN_EMAIL),
    ("LOADGEN_ADMIN_PASSWORD", PASSWORD),
];

#[tokio::test]
async fn loadgen_orders_from_its_own_catalogue_and_reports_every_order_settled() {
    let stack = Stack::start().await;

    let refused = loadgen(&stack, &[]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("LOADGEN_ADMIN_EMAIL"), "{stderr}");

    // A catalogue that two shoppers would empty within a second.
    let admin = stack.admin().await;
    for _ in 0..10 {
        stack.product(&admin, 500, 1).await;
    }

    let report = report(&loadgen(&stack, &AS_ADMIN).output().await.unwrap());

    let orders = report["orders"].as_object().expect("orders by status");
    let confirmed = orders.get("CONFIRMED").and_then(Value::as_u64).unwrap_or(0);
    assert!(confirmed > 0, "{report}");
    for absent in ["REJECTED", "STUCK"] {
        assert!(orders.get(absent).is_none(), "{absent}: {report}");
    }
    let operations = report["operations"].as_object().expect("operations");
    for name in ["orders.place", "orders.settle"] {
        assert!(
            operations[name]["calls"].as_u64().unwrap_or(0) > 0,
            "{name}: {report}"
        );
    }
    for (name, operation) in operations {
        assert_eq!(operation["failed"], 0, "{name}: {report}");
    }
}

/// `docker stop` sends SIGTERM: the run ends early and still reports.
#[tokio::test]
async fn loadgen_stopped_by_sigterm_reports_what_it_measured() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let child = loadgen(&stack, &AS_ADMIN)
        .env("LOADGEN_DURATION", "10m")
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    // Set up (the catalogue, the shoppers), then orders. A shopper starts
    // a saga only once its last order has settled, so three sagas from two
    // shoppers mean an order has settled in loadgen's eyes.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let sagas = admin.api.get("/api/v1/admin/sagas?limit=3").await;
        if sagas.body["items"]
            .as_array()
            .is_some_and(|items| items.len() >= 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "too few orders placed: {sagas}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(pid, Signal::SIGTERM).unwrap();
    let run = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("loadgen ends soon after SIGTERM")
        .unwrap();
    let report = report(&run);
    let elapsed = report["elapsed_seconds"].as_f64().unwrap();
    assert!(elapsed < 60.0, "{report}");
    assert!(
        report["operations"]["orders.place"]["calls"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
}
