use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use saga::query::{self, SagaFilter};
use saga::{EngineConfig, NewSaga, Phase, SagaEngine, SagaStatus};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_share_fifty_sagas_and_never_run_a_step_twice() {
    let database = migrated_database().await;
    let fakes = Fakes::new();
    for step in ["reserve", "charge", "commit"] {
        fakes.always(
            step,
            Phase::Action,
            Behaviour::Sleep(Duration::from_millis(5)),
        );
    }
    let saga_type = unique_saga_type("replicas");
    let replica = |pool| {
        SagaEngine::builder(
            pool,
            sample_saga(&saga_type, &["reserve", "charge", "commit"], &fakes),
        )
        .config(EngineConfig {
            max_concurrent: 8,
            ..fast_config()
        })
        .hooks(Arc::new(RecordFinish))
        .build()
        .unwrap()
    };
    let first = replica(pool_with(&database, 6).await);
    let second = replica(pool_with(&database, 6).await);
    let running = [RunningEngine::spawn(&first), RunningEngine::spawn(&second)];

    let mut ids = Vec::new();
    for number in 0..50 {
        let starter = if number % 2 == 0 { &first } else { &second };
        ids.push(
            starter
                .start(NewSaga::new(Order::number(number)))
                .await
                .unwrap(),
        );
    }
    let pool = &database.pool;
    eventually(
        "all 50 sagas to complete",
        Duration::from_secs(60),
        || async {
            let completed = query::list(
                pool,
                &SagaFilter::default()
                    .with_status(SagaStatus::Completed)
                    .with_limit(100),
            )
            .await
            .unwrap();
            completed.items.len() == 50
        },
    )
    .await;
    for engine in running {
        engine.stop().await;
    }

    let mut calls_per_step: HashMap<(uuid::Uuid, String), usize> = HashMap::new();
    for call in fakes.calls() {
        *calls_per_step.entry((call.saga_id, call.step)).or_default() += 1;
    }
    assert_eq!(calls_per_step.len(), 150, "every step of every saga ran");
    assert!(
        calls_per_step.values().all(|count| *count == 1),
        "no step ran twice: {:?}",
        calls_per_step
            .iter()
            .filter(|(_, count)| **count > 1)
            .collect::<Vec<_>>()
    );

    let finished: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT saga_id, count(*) FROM finished_sagas GROUP BY saga_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(finished.len(), 50);
    assert!(
        finished.iter().all(|(_, count)| *count == 1),
        "each saga completed exactly once"
    );

    let executors: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT executed_by FROM saga_step_log")
            .fetch_all(pool)
            .await
            .unwrap();
    let executors: BTreeSet<String> = executors.into_iter().collect();
    assert_eq!(
        executors,
        [first.owner().to_owned(), second.owner().to_owned()].into(),
        "both replicas took part"
    );
    let log_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_step_log")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(log_rows, 150, "one step-log row per step");
}
