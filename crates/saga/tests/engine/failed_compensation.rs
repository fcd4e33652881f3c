use std::time::Duration;

use saga::query::{self, SagaFilter};
use saga::{FailureKind, NewSaga, Phase, SagaStatus, StepOutcome};

use crate::common::*;

#[tokio::test]
async fn a_compensation_that_keeps_failing_fails_the_saga_visibly() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.always("commit", Phase::Action, Behaviour::Reject("OUT_OF_STOCK"));
    fakes.always("charge", Phase::Compensation, Behaviour::Fail);
    let saga_type = unique_saga_type("stuck");
    let engine = engine(
        pool,
        sample_saga(&saga_type, &["reserve", "charge", "commit"], &fakes),
    );
    let running = RunningEngine::spawn(&engine);

    let failing = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    wait_for_status(pool, failing, SagaStatus::Failed, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(failing),
        [
            action("reserve", 1),
            action("charge", 1),
            action("commit", 1),
            compensation("charge", 1),
            compensation("charge", 2),
            compensation("charge", 3),
            compensation("charge", 4),
            compensation("reserve", 1),
        ],
        "the compensation budget is its own, and the remaining compensations still run"
    );

    let page = query::list(pool, &SagaFilter::default().with_status(SagaStatus::Failed))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_cursor, None);
    let failed = &page.items[0];
    assert_eq!(failed.id, failing);
    assert_eq!(failed.saga_type, saga_type);
    assert_eq!(failed.compensation_failures, 1);
    let failure = failed.failure.as_ref().unwrap();
    assert_eq!(
        (failure.step.as_str(), failure.kind),
        ("commit", FailureKind::Rejected)
    );
    assert_eq!(
        failed.last_error.as_deref(),
        Some(
            "compensation of charge failed: gave up after 4 attempts: charge unavailable (attempt 4)"
        )
    );
    let errors: Vec<_> = failed
        .errors
        .iter()
        .map(|entry| {
            (
                entry.step.as_str(),
                entry.phase,
                entry.attempt,
                entry.outcome,
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("commit", Phase::Action, 1, StepOutcome::Rejected),
            ("charge", Phase::Compensation, 1, StepOutcome::Retrying),
            ("charge", Phase::Compensation, 2, StepOutcome::Retrying),
            ("charge", Phase::Compensation, 3, StepOutcome::Retrying),
            ("charge", Phase::Compensation, 4, StepOutcome::Exhausted),
        ]
    );
    assert_eq!(
        failed.errors[4].error.as_deref(),
        Some("charge unavailable (attempt 4)")
    );
    assert_eq!(failed.data["number"], 1, "the context comes with it");
    let json = serde_json::to_value(failed).unwrap();
    assert_eq!(json["status"], "FAILED");
    assert_eq!(json["failure"]["code"], "OUT_OF_STOCK");

    assert_eq!(
        finish_records(pool, failing).await,
        [(
            "failed".to_owned(),
            Some("commit".to_owned()),
            Some("OUT_OF_STOCK".to_owned())
        )]
    );
}

#[tokio::test]
async fn instances_are_listed_newest_first_by_status_and_type_with_a_cursor() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let completing = engine(
        pool,
        sample_saga(&unique_saga_type("done"), &["only"], &fakes),
    );
    let other_type = unique_saga_type("other");
    let waiting = engine(pool, sample_saga(&other_type, &["only"], &fakes));

    let mut completed = Vec::new();
    for number in 0..5 {
        completed.push(
            completing
                .start(NewSaga::new(Order::number(number)))
                .await
                .unwrap(),
        );
    }
    completing.process_due().await.unwrap();
    let created = waiting.start(NewSaga::new(Order::number(9))).await.unwrap();

    let first = query::list(
        pool,
        &SagaFilter::default()
            .with_status(SagaStatus::Completed)
            .with_limit(2),
    )
    .await
    .unwrap();
    let ids: Vec<_> = first.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [completed[4], completed[3]]);
    let cursor = first.next_cursor.unwrap();
    let rest = query::list(
        pool,
        &SagaFilter::default()
            .with_status(SagaStatus::Completed)
            .after(cursor),
    )
    .await
    .unwrap();
    let ids: Vec<_> = rest.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [completed[2], completed[1], completed[0]]);
    assert_eq!(rest.next_cursor, None);

    let by_type = query::list(pool, &SagaFilter::default().with_saga_type(&other_type))
        .await
        .unwrap();
    assert_eq!(by_type.items.len(), 1);
    assert_eq!(by_type.items[0].id, created);
    assert_eq!(by_type.items[0].status, SagaStatus::Created);

    let counts = query::count_by_status(pool).await.unwrap();
    let count_of = |status| {
        counts
            .iter()
            .find(|count| count.status == status)
            .map_or(0, |count| count.count)
    };
    assert_eq!(count_of(SagaStatus::Completed), 5);
    assert_eq!(count_of(SagaStatus::Created), 1);

    let details = query::get(pool, completed[0]).await.unwrap().unwrap();
    assert_eq!(details.steps.len(), 1);
    assert!(
        query::get(pool, uuid::Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
}
