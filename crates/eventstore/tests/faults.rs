//! Fault points. Fault points are process-global, so this binary holds a
//! single test that arms them one after the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{BalanceProjection, full_log, migrated_database, replay_balances};
use eventstore::projection::{BEFORE_CHECKPOINT_FAULT_POINT, checkpoint};
use eventstore::store::APPEND_FAULT_POINT;
use eventstore::{
    EventMetadata, EventStore, EventStoreError, ExpectedVersion, GlobalPosition, NewEvent,
    ProjectionConfig, ProjectionError, ProjectionRunner,
};
use platform::faults::{self, FaultAction};
use serde_json::json;

#[tokio::test]
async fn armed_fault_points_fail_cleanly_and_recovery_applies_once() {
    let database = migrated_database().await;
    let pool = database.pool.clone();
    BalanceProjection::create_tables(&pool).await;
    let store = EventStore::new(pool.clone());
    let metadata = EventMetadata::default();
    let deposit = |amount: i64| {
        NewEvent::new("Deposited", json!({"amount": amount, "currency": "EUR"}))
            .with_schema_version(2)
    };

    // eventstore.append: the append fails with a typed error and writes nothing.
    faults::set(
        APPEND_FAULT_POINT,
        Some(FaultAction::Error { probability: 1.0 }),
    );
    let error = store
        .append(
            "account-f",
            ExpectedVersion::NoStream,
            &[deposit(1)],
            &metadata,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EventStoreError::Fault(_)), "{error:?}");
    let mut transaction = pool.begin().await.unwrap();
    let error = store
        .append_in(
            &mut transaction,
            "account-f",
            ExpectedVersion::NoStream,
            &[deposit(1)],
            &metadata,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EventStoreError::Fault(_)), "{error:?}");
    transaction.rollback().await.unwrap();
    assert_eq!(store.stream_version("account-f").await.unwrap(), 0);
    faults::set(APPEND_FAULT_POINT, None);

    for amount in 1..=30 {
        store
            .append(
                "account-f",
                ExpectedVersion::Any,
                &[deposit(amount)],
                &metadata,
            )
            .await
            .unwrap();
    }

    // eventstore.projection.before_checkpoint: the batch was applied to the
    // read model, then the "crash": nothing of it may survive.
    let projection = Arc::new(BalanceProjection::new("balances"));
    let runner = ProjectionRunner::new(
        pool.clone(),
        projection.clone(),
        ProjectionConfig {
            batch_size: 10,
            ..ProjectionConfig::default()
        },
    );
    faults::set(
        BEFORE_CHECKPOINT_FAULT_POINT,
        Some(FaultAction::Error { probability: 1.0 }),
    );
    let error = runner.catch_up().await.unwrap_err();
    assert!(matches!(error, ProjectionError::Fault(_)), "{error:?}");
    assert_eq!(projection.applied_count(&pool).await, 0);
    assert_eq!(
        checkpoint(&pool, "balances").await.unwrap(),
        Some(GlobalPosition::START)
    );

    // Half the batches "crash": every retry starts from the last checkpoint.
    faults::set(
        BEFORE_CHECKPOINT_FAULT_POINT,
        Some(FaultAction::Error { probability: 0.5 }),
    );
    let mut crashes = 0;
    loop {
        match runner.catch_up().await {
            Ok(_) => break,
            Err(ProjectionError::Fault(_)) => crashes += 1,
            Err(other) => panic!("{other}"),
        }
        assert!(crashes < 200, "the fault kept firing");
    }
    faults::set(BEFORE_CHECKPOINT_FAULT_POINT, None);
    runner.catch_up().await.unwrap();
    assert_eq!(projection.applied_count(&pool).await, 30);
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&full_log(&store).await)
    );
    assert_eq!(
        projection.rows(&pool).await,
        vec![("account-f".to_owned(), (1..=30).sum::<i64>(), 30, 30)]
    );
}
