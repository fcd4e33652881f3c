use std::time::Duration;

use saga::query;
use saga::{NewSaga, SagaError, SagaStatus, StepOutcome};

use crate::common::*;

#[tokio::test]
async fn every_step_runs_once_in_order_and_the_saga_completes() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let engine = engine(
        pool,
        sample_saga(
            &unique_saga_type("happy"),
            &["reserve", "charge", "commit"],
            &fakes,
        ),
    );
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(7))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("commit", 1)
        ]
    );
    assert_eq!(
        log_summary(&details),
        ["reserve", "charge", "commit"].map(|step| (
            step.to_owned(),
            saga::Phase::Action,
            1,
            StepOutcome::Succeeded
        ))
    );
    let order: Order = serde_json::from_value(details.instance.data.clone()).unwrap();
    assert_eq!(
        order.visited,
        ["reserve", "charge", "commit"],
        "step outputs merge into the data"
    );
    assert_eq!(details.instance.current_step, None);
    assert!(details.instance.finished_at.is_some());
    let stopped = saga::query::get(pool, id).await.unwrap().unwrap();
    assert_eq!(stopped.instance.lease_owner, None, "the lease is released");
    // A page's logs in one query: the same entries, by instance.
    let unknown = uuid::Uuid::now_v7();
    let logs = saga::query::step_logs(pool, &[id, unknown]).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[&id], details.steps);
    assert_eq!(
        finish_records(pool, id).await,
        [("completed".to_owned(), None, None)],
        "the hook ran once, in the final transaction"
    );
}

#[tokio::test]
async fn a_saga_started_in_the_callers_transaction_exists_only_if_it_commits() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let engine = engine(
        pool,
        sample_saga(&unique_saga_type("atomic"), &["only"], &fakes),
    );

    let mut rolled_back = pool.begin().await.unwrap();
    let ghost = engine
        .start_in(&mut rolled_back, NewSaga::new(Order::number(1)))
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    assert!(query::get(pool, ghost).await.unwrap().is_none());

    let order_id = uuid::Uuid::now_v7();
    let mut transaction = pool.begin().await.unwrap();
    let id = engine
        .start_in(
            &mut transaction,
            NewSaga::new(Order::number(2)).with_id(order_id),
        )
        .await
        .unwrap();
    assert_eq!(id, order_id, "the caller chooses the id");
    transaction.commit().await.unwrap();

    let again = engine
        .start(NewSaga::new(Order::number(2)).with_id(order_id))
        .await;
    assert!(
        matches!(again, Err(SagaError::AlreadyStarted { id }) if id == order_id),
        "{again:?}"
    );

    let created = query::get(pool, id).await.unwrap().unwrap();
    assert_eq!(created.instance.status, SagaStatus::Created);
    assert_eq!(created.instance.current_step.as_deref(), Some("only"));

    assert_eq!(engine.process_due().await.unwrap(), 1);
    wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(5)).await;
    assert_eq!(fakes.calls_of(ghost), []);
}

/// The `NOTIFY` is sent after the writing transaction, never in it: a
/// notifying commit waits for every other notifying commit before it.
#[tokio::test]
async fn a_saga_started_in_a_transaction_is_announced_after_its_commit() {
    use sqlx::Connection as _;

    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let saga_type = unique_saga_type("announce");
    let engine = engine(pool, sample_saga(&saga_type, &["only"], &fakes));
    let mut listener = sqlx::postgres::PgListener::connect(&database.url)
        .await
        .unwrap();
    listener.listen(saga::NOTIFY_CHANNEL).await.unwrap();

    let mut writer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let writer_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut writer)
        .await
        .unwrap();
    let mut transaction = writer.begin().await.unwrap();
    engine
        .start_in(&mut transaction, NewSaga::new(Order::number(1)))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    engine.announce().await;

    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("announced within 5 s")
        .unwrap();
    assert_eq!(notification.payload(), saga_type);
    assert_ne!(
        notification.process_id(),
        writer_pid as u32,
        "the writing transaction sent the NOTIFY"
    );
}

#[tokio::test]
async fn a_saga_started_elsewhere_wakes_a_listening_worker_at_once() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let saga_type = unique_saga_type("listen");
    let build = || {
        saga::SagaEngine::builder(pool.clone(), sample_saga(&saga_type, &["only"], &fakes))
            .config(saga::EngineConfig {
                poll_interval: Duration::from_secs(60),
                ..fast_config()
            })
            .build()
            .unwrap()
    };
    let worker = build();
    let running = RunningEngine::spawn(&worker);
    // Listening: its connection's last statement was a LISTEN.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another replica (not running a worker) starts the saga.
    let started = std::time::Instant::now();
    let id = build().start(NewSaga::new(Order::number(1))).await.unwrap();
    wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(5)).await;
    running.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by NOTIFY, not by the 60 s poll"
    );
}
