use std::time::Duration;

use saga::{FailureKind, NewSaga, Phase, RetryPolicy, SagaDefinition, SagaStatus, StepOutcome};

use crate::common::*;

#[tokio::test]
async fn transient_failures_are_retried_with_exponential_backoff() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.queue("charge", Phase::Action, [Behaviour::Fail, Behaviour::Fail]);
    let backoff = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(100))
        .with_jitter(0.0);
    let definition = SagaDefinition::new(unique_saga_type("retry"))
        .step(call_step(&fakes, "reserve"))
        .step(call_step(&fakes, "charge").retry(backoff))
        .step(call_step(&fakes, "commit"));
    let engine = engine(pool, definition);
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("charge", 2),
            action("charge", 3),
            action("commit", 1),
        ]
    );
    let charges: Vec<_> = fakes
        .calls()
        .into_iter()
        .filter(|call| call.step == "charge")
        .map(|call| call.at)
        .collect();
    let first_pause = charges[1] - charges[0];
    let second_pause = charges[2] - charges[1];
    assert!(first_pause >= Duration::from_millis(100), "{first_pause:?}");
    assert!(
        second_pause >= Duration::from_millis(200),
        "doubles: {second_pause:?}"
    );

    let charge_log: Vec<_> = log_summary(&details)
        .into_iter()
        .filter(|(step, ..)| step == "charge")
        .map(|(_, _, attempt, outcome)| (attempt, outcome))
        .collect();
    assert_eq!(
        charge_log,
        [
            (1, StepOutcome::Retrying),
            (2, StepOutcome::Retrying),
            (3, StepOutcome::Succeeded)
        ]
    );
    let errors = &details.instance.errors;
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0].error.as_deref(),
        Some("charge unavailable (attempt 1)")
    );
}

#[tokio::test]
async fn a_step_that_keeps_failing_is_compensated_along_with_the_steps_before_it() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.always("charge", Phase::Action, Behaviour::Fail);
    let engine = engine(
        pool,
        sample_saga(
            &unique_saga_type("exhaust"),
            &["reserve", "charge", "commit"],
            &fakes,
        ),
    );
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(10)).await;
    running.stop().await;

    // The charge's outcome is unknown after its last failed attempt (the
    // participant may have charged and only the answer got lost), so its
    // own compensation runs too.
    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            action("charge", 1),
            action("charge", 2),
            action("charge", 3),
            compensation("charge", 1),
            compensation("reserve", 1),
        ]
    );
    let failure = details.instance.failure.unwrap();
    assert_eq!(failure.step, "charge");
    assert_eq!(failure.kind, FailureKind::Exhausted);
    assert!(
        failure.message.contains("gave up after 3 attempts"),
        "{}",
        failure.message
    );
    assert_eq!(
        details
            .steps
            .iter()
            .filter(|entry| entry.outcome == StepOutcome::Exhausted)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_call_that_outlives_its_timeout_is_a_transient_failure() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.queue("charge", Phase::Action, [Behaviour::Hang]);
    let definition = SagaDefinition::new(unique_saga_type("timeout"))
        .step(call_step(&fakes, "charge").timeout(Duration::from_millis(200)));
    let engine = engine(pool, definition);
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;

    assert_eq!(
        fakes.calls_of(id),
        [action("charge", 1), action("charge", 2)]
    );
    assert_eq!(
        details.steps[0].error.as_deref(),
        Some("timed out after 200ms")
    );
}

#[tokio::test]
async fn a_panicking_step_is_a_transient_failure_not_a_dead_worker() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let panics = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let first_call_panics = panics.clone();
    let definition = SagaDefinition::new(unique_saga_type("panic")).step(
        saga::Step::call("explode", move |_, order: Order| {
            let panics = first_call_panics.clone();
            async move {
                if panics.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    panic!("boom");
                }
                Ok(order)
            }
        })
        .retry(fast_retry()),
    );
    let engine = engine(pool, definition);
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(10)).await;
    running.stop().await;
    assert_eq!(
        details.steps[0].error.as_deref(),
        Some("the operation panicked: boom")
    );
}
