use std::time::Duration;

use saga::{FailureKind, NewSaga, Phase, SagaStatus, StepOutcome};

use crate::common::*;

#[tokio::test]
async fn a_rejection_at_step_three_compensates_steps_two_and_one_in_reverse() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.always("commit", Phase::Action, Behaviour::Reject("OUT_OF_STOCK"));
    let engine = engine(
        pool,
        sample_saga(
            &unique_saga_type("reject"),
            &["reserve", "charge", "commit"],
            &fakes,
        ),
    );
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("commit", 1),
            compensation("charge", 1),
            compensation("reserve", 1),
        ],
        "a rejection is not retried and the rejected step itself is not undone"
    );
    let log: Vec<_> = log_summary(&details)
        .into_iter()
        .map(|(step, phase, _, outcome)| (step, phase, outcome))
        .collect();
    assert_eq!(
        log,
        [
            ("reserve".to_owned(), Phase::Action, StepOutcome::Succeeded),
            ("charge".to_owned(), Phase::Action, StepOutcome::Succeeded),
            ("commit".to_owned(), Phase::Action, StepOutcome::Rejected),
            (
                "charge".to_owned(),
                Phase::Compensation,
                StepOutcome::Succeeded
            ),
            (
                "reserve".to_owned(),
                Phase::Compensation,
                StepOutcome::Succeeded
            ),
        ]
    );
    let failure = details.instance.failure.clone().unwrap();
    assert_eq!(failure.step, "commit");
    assert_eq!(failure.kind, FailureKind::Rejected);
    assert_eq!(failure.code.as_deref(), Some("OUT_OF_STOCK"));
    let order: Order = serde_json::from_value(details.instance.data).unwrap();
    assert_eq!(order.undone, ["charge", "reserve"]);
    assert_eq!(
        finish_records(pool, id).await,
        [(
            "compensated".to_owned(),
            Some("commit".to_owned()),
            Some("OUT_OF_STOCK".to_owned())
        )]
    );
}

#[tokio::test]
async fn a_rejected_first_step_leaves_nothing_to_compensate() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.always(
        "reserve",
        Phase::Action,
        Behaviour::Reject("INSUFFICIENT_STOCK"),
    );
    let engine = engine(
        pool,
        sample_saga(&unique_saga_type("first"), &["reserve", "charge"], &fakes),
    );

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    engine.process_due().await.unwrap();

    wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(1)).await;
    assert_eq!(fakes.calls_of(id), [action("reserve", 1)]);
}
