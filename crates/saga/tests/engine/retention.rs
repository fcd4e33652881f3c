use std::time::Duration;

use saga::{EngineConfig, NewSaga, Phase, SagaStatus};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::*;

/// Moves a saga's end back by `days`, as if it had finished then.
async fn finished_days_ago(pool: &PgPool, id: Uuid, days: i32) {
    sqlx::query(
        "UPDATE saga_instances SET finished_at = finished_at - make_interval(days => $2) \
          WHERE id = $1",
    )
    .bind(id)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

async fn exists(pool: &PgPool, id: Uuid) -> bool {
    saga::query::get(pool, id).await.unwrap().is_some()
}

async fn step_log_rows(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM saga_step_log WHERE saga_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Completed and compensated sagas past the retention go, with their step
/// logs; a FAILED one, a recent one and one still running stay, and so do
/// another saga type's.
#[tokio::test]
async fn finished_sagas_past_the_retention_are_deleted_and_failed_ones_kept() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let other_engine = engine(
        pool,
        sample_saga(&unique_saga_type("other"), &["reserve"], &fakes),
    );
    let engine = engine(
        pool,
        sample_saga(
            &unique_saga_type("retained"),
            &["reserve", "charge"],
            &fakes,
        ),
    );
    let running = RunningEngine::spawn(&engine);
    let other_running = RunningEngine::spawn(&other_engine);
    let wait = Duration::from_secs(10);

    let completed = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    wait_for_status(pool, completed, SagaStatus::Completed, wait).await;
    fakes.queue("charge", Phase::Action, [Behaviour::Reject("NO_FUNDS")]);
    let compensated = engine.start(NewSaga::new(Order::number(2))).await.unwrap();
    wait_for_status(pool, compensated, SagaStatus::Compensated, wait).await;
    fakes.queue("charge", Phase::Action, [Behaviour::Reject("NO_FUNDS")]);
    fakes.queue(
        "reserve",
        Phase::Compensation,
        [
            Behaviour::Fail,
            Behaviour::Fail,
            Behaviour::Fail,
            Behaviour::Fail,
        ],
    );
    let failed = engine.start(NewSaga::new(Order::number(3))).await.unwrap();
    wait_for_status(pool, failed, SagaStatus::Failed, wait).await;
    let recent = engine.start(NewSaga::new(Order::number(4))).await.unwrap();
    wait_for_status(pool, recent, SagaStatus::Completed, wait).await;
    let elsewhere = other_engine
        .start(NewSaga::new(Order::number(5)))
        .await
        .unwrap();
    wait_for_status(pool, elsewhere, SagaStatus::Completed, wait).await;
    fakes.queue("reserve", Phase::Action, [Behaviour::Hang]);
    let in_progress = engine.start(NewSaga::new(Order::number(6))).await.unwrap();
    wait_for_status(pool, in_progress, SagaStatus::Running, wait).await;

    for old in [completed, compensated, failed, elsewhere] {
        finished_days_ago(pool, old, 8).await;
    }
    assert!(step_log_rows(pool, completed).await > 0);
    assert_eq!(engine.purge_finished().await.unwrap(), 2);

    assert!(!exists(pool, completed).await);
    assert!(!exists(pool, compensated).await);
    assert_eq!(step_log_rows(pool, completed).await, 0, "the log goes too");
    assert_eq!(step_log_rows(pool, compensated).await, 0);
    for kept in [failed, recent, in_progress, elsewhere] {
        assert!(exists(pool, kept).await, "{kept} is kept");
    }
    assert_eq!(engine.purge_finished().await.unwrap(), 0, "nothing left");
    running.kill().await;
    other_running.stop().await;
}

/// The worker loop deletes what is past the retention by itself, and a
/// retention of `None` keeps everything.
#[tokio::test]
async fn the_worker_deletes_expired_sagas_unless_retention_is_off() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let saga_type = unique_saga_type("expiring");
    let keeping =
        saga::SagaEngine::builder(pool.clone(), sample_saga(&saga_type, &["reserve"], &fakes))
            .config(EngineConfig {
                retention: None,
                ..fast_config()
            })
            .build()
            .unwrap();
    let id = keeping.start(NewSaga::new(Order::number(1))).await.unwrap();
    keeping.process_due().await.unwrap();
    wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    finished_days_ago(pool, id, 365).await;
    assert_eq!(keeping.purge_finished().await.unwrap(), 0);

    let purging = engine(pool, sample_saga(&saga_type, &["reserve"], &fakes));
    let running = RunningEngine::spawn(&purging);
    eventually(
        "the expired saga is deleted",
        Duration::from_secs(10),
        || async { !exists(pool, id).await },
    )
    .await;
    running.stop().await;
}
