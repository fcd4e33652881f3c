//! A saga survives its engine: killed mid-step, or its process aborted at
//! any step boundary, it is picked up by a new engine once the lease
//! expires, and no step recorded as done runs again.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use saga::{EngineConfig, NewSaga, Phase, SagaStatus};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::*;

const STEPS: [&str; 3] = ["reserve", "charge", "commit"];

#[tokio::test]
async fn a_saga_whose_engine_dies_mid_step_is_finished_by_another_after_the_lease_expires() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    // The first charge never returns: the engine dies while it is in flight.
    fakes.queue("charge", Phase::Action, [Behaviour::Hang]);
    let saga_type = unique_saga_type("killed");
    let short_lease = EngineConfig {
        lease_ttl: Duration::from_secs(1),
        ..fast_config()
    };
    let build = || {
        saga::SagaEngine::builder(
            pool.clone(),
            sample_saga(&saga_type, &STEPS, &fakes).step(call_step(&fakes, "notify")),
        )
        .config(short_lease.clone())
        .hooks(std::sync::Arc::new(RecordFinish))
        .build()
        .unwrap()
    };
    let doomed = build();
    let running = RunningEngine::spawn(&doomed);
    let id = doomed.start(NewSaga::new(Order::number(1))).await.unwrap();
    eventually(
        "the charge to be in flight",
        Duration::from_secs(5),
        || async { fakes.calls_of(id).contains(&action("charge", 1)) },
    )
    .await;
    running.kill().await;
    let orphaned = saga::query::get(pool, id).await.unwrap().unwrap().instance;
    assert_eq!(
        orphaned.lease_owner.as_deref(),
        Some(doomed.owner()),
        "the dead engine still holds it"
    );

    let successor = build();
    let running = RunningEngine::spawn(&successor);
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("charge", 2),
            action("commit", 1),
            action("notify", 1),
        ],
        "reserve (recorded as done) never runs again; the charge whose outcome was never \
         recorded runs again, as its next attempt"
    );
    let executors: std::collections::BTreeSet<_> = details
        .steps
        .iter()
        .filter_map(|entry| entry.executed_by.clone())
        .collect();
    assert_eq!(
        executors,
        [doomed.owner().to_owned(), successor.owner().to_owned()].into(),
    );
    assert_eq!(finish_records(pool, id).await.len(), 1);
}

#[tokio::test]
async fn a_graceful_stop_finishes_the_step_in_hand_and_hands_the_saga_over() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.queue(
        "charge",
        Phase::Action,
        [Behaviour::Sleep(Duration::from_millis(400))],
    );
    let saga_type = unique_saga_type("graceful");
    let stopping = engine(pool, sample_saga(&saga_type, &STEPS, &fakes));
    let running = RunningEngine::spawn(&stopping);
    let id = stopping
        .start(NewSaga::new(Order::number(1)))
        .await
        .unwrap();
    eventually(
        "the charge to be in flight",
        Duration::from_secs(5),
        || async { fakes.calls_of(id).contains(&action("charge", 1)) },
    )
    .await;
    running.stop().await;

    let handed_over = saga::query::get(pool, id).await.unwrap().unwrap();
    assert_eq!(handed_over.instance.status, SagaStatus::Running);
    assert_eq!(
        handed_over.instance.current_step.as_deref(),
        Some("commit"),
        "the charge was recorded"
    );
    assert_eq!(
        handed_over.instance.lease_owner, None,
        "and the lease released"
    );

    let successor = engine(pool, sample_saga(&saga_type, &STEPS, &fakes));
    let started = std::time::Instant::now();
    let running = RunningEngine::spawn(&successor);
    wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "taken over at once, not after the 5 s lease"
    );
    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("commit", 1)
        ]
    );
}

/// Environment of the child process of [`process_abort_at_every_step_boundary_is_recovered`].
const CHILD_DATABASE: &str = "SAGA_CRASH_TEST_DATABASE_URL";
const CHILD_SAGA_TYPE: &str = "SAGA_CRASH_TEST_SAGA_TYPE";
const CHILD_FAULT_POINT: &str = "SAGA_CRASH_TEST_FAULT_POINT";

#[tokio::test]
async fn process_abort_at_every_step_boundary_is_recovered() {
    for (boundary, done_before_crash) in [
        ("before_reserve", 0),
        ("before_charge", 1),
        ("before_commit", 2),
        ("before_complete", 3),
    ] {
        let database = migrated_database().await;
        let pool = &database.pool;
        let saga_type = unique_saga_type("abort");
        let fakes = Fakes::recording_to(pool.clone());
        let engine = crash_engine(pool, &saga_type, &fakes);
        let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();

        let fault_point = format!("saga.{saga_type}.{boundary}");
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_resume::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_DATABASE, &database.url)
            .env(CHILD_SAGA_TYPE, &saga_type)
            .env(CHILD_FAULT_POINT, &fault_point)
            .output()
            .await
            .unwrap();
        assert_eq!(
            child.status.signal(),
            Some(6),
            "the child aborts at {fault_point}: {}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert_eq!(
            recorded_calls(pool, id).await.len(),
            done_before_crash,
            "steps done before {boundary}"
        );

        let running = RunningEngine::spawn(&engine);
        wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
        running.stop().await;
        assert_eq!(
            recorded_calls(pool, id).await,
            STEPS.map(|step| (step.to_owned(), 1)),
            "after a crash at {boundary}, every step ran exactly once"
        );
        assert_eq!(finish_records(pool, id).await.len(), 1);
    }
}

/// The crashing engine, run in a child process by the test above.
#[tokio::test]
#[ignore = "run by process_abort_at_every_step_boundary_is_recovered in a child process"]
async fn crash_child() {
    let (Ok(url), Ok(saga_type), Ok(fault_point)) = (
        std::env::var(CHILD_DATABASE),
        std::env::var(CHILD_SAGA_TYPE),
        std::env::var(CHILD_FAULT_POINT),
    ) else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    platform::faults::set(&fault_point, Some(platform::faults::FaultAction::Abort));
    let engine = crash_engine(&pool, &saga_type, &Fakes::recording_to(pool.clone()));
    let running = RunningEngine::spawn(&engine);
    tokio::time::sleep(Duration::from_secs(10)).await;
    running.stop().await;
    panic!("fault point {fault_point} was never reached");
}

/// Leases short enough that the parent takes over quickly from the
/// aborted child.
fn crash_engine(pool: &PgPool, saga_type: &str, fakes: &Fakes) -> saga::SagaEngine<Order> {
    saga::SagaEngine::builder(pool.clone(), sample_saga(saga_type, &STEPS, fakes))
        .config(EngineConfig {
            lease_ttl: Duration::from_millis(500),
            ..fast_config()
        })
        .hooks(std::sync::Arc::new(RecordFinish))
        .build()
        .unwrap()
}

/// `(step, attempt)` of the calls recorded in the database, in order.
async fn recorded_calls(pool: &PgPool, saga_id: Uuid) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT step, attempt FROM test_calls WHERE saga_id = $1 ORDER BY recorded_at")
        .bind(saga_id)
        .fetch_all(pool)
        .await
        .unwrap()
}
