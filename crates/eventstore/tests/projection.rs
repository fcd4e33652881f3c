//! Projection runner: effectively-once application, crash recovery,
//! rebuild, leases with fencing, read-your-writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::{
    Account, AccountCommand, BalanceProjection, account_upcasters, full_log, migrated_database,
    pool_with, replay_balances,
};
use eventstore::projection::checkpoint;
use eventstore::{
    ApplyError, EventMetadata, EventStore, ExpectedVersion, GlobalPosition, NewEvent, Projection,
    ProjectionConfig, ProjectionError, ProjectionRunner, RecordedEvent, Repository, WaitError,
    wait_for,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn fast_config() -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 50,
        idle_interval: Duration::from_millis(20),
        held_back_interval: Duration::from_millis(5),
        lease_ttl: Duration::from_secs(10),
        standby_interval: Duration::from_millis(20),
        lag_interval: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        listen_channel: None,
    }
}

/// Deposits into `accounts` accounts, `rounds` times each.
async fn write_history(
    store: &EventStore,
    prefix: &str,
    accounts: usize,
    rounds: usize,
) -> GlobalPosition {
    let repository = Repository::<Account>::new(store.clone());
    let metadata = EventMetadata::default();
    let mut last = GlobalPosition::START;
    for account in 0..accounts {
        let id = format!("{prefix}{account}");
        repository
            .execute(&id, AccountCommand::Open { owner: id.clone() }, &metadata)
            .await
            .unwrap();
        for round in 0..rounds {
            let (_, appended) = repository
                .execute(
                    &id,
                    AccountCommand::Deposit {
                        amount: (round as i64 + 1) * 10,
                    },
                    &metadata,
                )
                .await
                .unwrap();
            last = appended.unwrap().position;
        }
    }
    last
}

async fn setup() -> (testkit::postgres::TestDatabase, PgPool, EventStore) {
    let database = migrated_database().await;
    let pool = pool_with(&database, 10).await;
    BalanceProjection::create_tables(&pool).await;
    let store = EventStore::new(pool.clone());
    (database, pool, store)
}

#[tokio::test]
async fn a_running_projection_serves_read_your_writes() {
    let (_database, pool, store) = setup().await;
    let projection = Arc::new(BalanceProjection::new("balances"));
    let runner = Arc::new(ProjectionRunner::new(
        pool.clone(),
        projection.clone(),
        fast_config(),
    ));
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let runner = runner.clone();
        let cancel = cancel.clone();
        async move { runner.run(cancel).await }
    });

    let repository = Repository::<Account>::new(store.clone());
    let metadata = EventMetadata::default();
    repository
        .execute("rw", AccountCommand::Open { owner: "rw".into() }, &metadata)
        .await
        .unwrap();
    for amount in 1..=10 {
        let (_, appended) = repository
            .execute("rw", AccountCommand::Deposit { amount }, &metadata)
            .await
            .unwrap();
        let token = appended.unwrap().position;
        let reached = wait_for(&pool, "balances", token, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(reached >= token);
        let balance: i64 = sqlx::query_scalar(
            "SELECT balance FROM balances WHERE projection = 'balances' AND stream_id = 'account-rw'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            balance,
            (1..=amount).sum::<i64>(),
            "the query sees its write"
        );
    }
    cancel.cancel();
    running.await.unwrap();
    let owner: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT lease_owner FROM projection_checkpoints WHERE projection = 'balances'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owner, None, "a stopped runner releases its lease");
}

#[tokio::test]
async fn wait_for_times_out_when_the_projection_is_behind() {
    let (_database, pool, store) = setup().await;
    let appended = store
        .append(
            "account-x",
            ExpectedVersion::NoStream,
            &[NewEvent::new("Opened", json!({"owner": "x"}))],
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let error = wait_for(
        &pool,
        "nobody-runs-this",
        appended.position,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        matches!(error, WaitError::Timeout { reached: None, wanted, .. } if wanted == appended.position),
        "{error:?}"
    );
}

#[tokio::test]
async fn wait_for_refuses_a_position_no_append_issued() {
    let (_database, pool, store) = setup().await;
    let appended = store
        .append(
            "account-y",
            ExpectedVersion::NoStream,
            &[NewEvent::new("Opened", json!({"owner": "y"}))],
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    let forged = [
        GlobalPosition {
            transaction_id: u64::MAX,
            position: 1,
        },
        GlobalPosition {
            position: appended.position.position + 1,
            ..appended.position
        },
        GlobalPosition {
            transaction_id: appended.position.transaction_id + 1,
            ..appended.position
        },
    ];
    for position in forged {
        let error = wait_for(&pool, "nobody-runs-this", position, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(error, WaitError::NotIssued(refused) if refused == position),
            "{position}: {error:?}"
        );
    }
}

/// A projection that blocks forever on one event, after the events before
/// it in the batch were applied (inside the batch's transaction).
struct StallingProjection {
    inner: BalanceProjection,
    stall_at: usize,
    seen: AtomicUsize,
    stalled: Arc<Notify>,
}

#[async_trait::async_trait]
impl Projection for StallingProjection {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        self.inner.apply(connection, event).await?;
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.stall_at {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        self.inner.reset(connection).await
    }
}

/// A runner killed after applying part of a batch and before its
/// checkpoint: the partial batch is gone with the transaction, the
/// checkpoint did not move, and the next runner applies every event once.
#[tokio::test]
async fn a_crash_between_apply_and_checkpoint_cannot_double_apply() {
    let (_database, pool, store) = setup().await;
    let last = write_history(&store, "h1-", 4, 30).await;
    let stalled = Arc::new(Notify::new());
    let doomed = Arc::new(ProjectionRunner::new(
        pool.clone(),
        Arc::new(StallingProjection {
            inner: BalanceProjection::new("balances"),
            stall_at: 120,
            seen: AtomicUsize::new(0),
            stalled: stalled.clone(),
        }),
        ProjectionConfig {
            lease_ttl: Duration::from_millis(500),
            ..fast_config()
        },
    ));
    let task = tokio::spawn({
        let doomed = doomed.clone();
        async move { doomed.run(CancellationToken::new()).await }
    });
    tokio::time::timeout(Duration::from_secs(20), stalled.notified())
        .await
        .unwrap();
    // Whole batches committed before the stall; the stalled batch was
    // partly applied inside its open transaction.
    let projection = BalanceProjection::new("balances");
    let before = checkpoint(&pool, "balances").await.unwrap().unwrap();
    let committed = full_log(&store)
        .await
        .iter()
        .filter(|event| event.position <= before)
        .count() as i64;
    assert!(committed < 120);
    assert_eq!(projection.applied_count(&pool).await, committed);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(projection.applied_count(&pool).await, committed);
    assert_eq!(checkpoint(&pool, "balances").await.unwrap(), Some(before));

    // The dead runner never released its lease: the next one takes over
    // once it expires.
    let successor = ProjectionRunner::new(pool.clone(), Arc::new(projection), fast_config());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let applied = loop {
        match successor.catch_up().await {
            Ok(applied) => break applied,
            Err(ProjectionError::LeaseHeld { .. }) => {
                assert!(std::time::Instant::now() < deadline, "lease never expired");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(
        applied as i64,
        124 - committed,
        "only the events after the checkpoint"
    );
    assert!(successor.fencing_token() > doomed.fencing_token());
    assert_eq!(checkpoint(&pool, "balances").await.unwrap(), Some(last));
    let projection = BalanceProjection::new("balances");
    assert_eq!(projection.applied_count(&pool).await, 124);
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&full_log(&store).await)
    );
}

#[tokio::test]
async fn rebuild_produces_the_same_read_model() {
    let (_database, pool, store) = setup().await;
    write_history(&store, "h2-", 5, 8).await;
    let projection = Arc::new(BalanceProjection::new("balances"));
    let runner = ProjectionRunner::new(pool.clone(), projection.clone(), fast_config());
    assert_eq!(runner.catch_up().await.unwrap(), 45);
    let built = projection.rows(&pool).await;
    assert_eq!(built, replay_balances(&full_log(&store).await));

    // Damage the read model; a rebuild restores it from the log alone.
    sqlx::query("UPDATE balances SET balance = -1")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO balances VALUES ('balances', 'account-ghost', 5, 1, 1)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(runner.rebuild(Utc::now()).await.unwrap(), Some(45));
    assert_eq!(projection.rows(&pool).await, built);
    assert_eq!(projection.applied_count(&pool).await, 45);

    // Events written after the rebuild keep flowing in.
    write_history(&store, "h3-", 1, 1).await;
    assert_eq!(runner.catch_up().await.unwrap(), 2);
}

#[tokio::test]
async fn a_rebuild_asked_of_several_runners_is_done_once() {
    let (_database, pool, store) = setup().await;
    write_history(&store, "h11-", 3, 4).await;
    let projection = Arc::new(BalanceProjection::new("balances"));
    let first = ProjectionRunner::new(pool.clone(), projection.clone(), fast_config());
    let second = ProjectionRunner::new(pool.clone(), projection.clone(), fast_config());
    // Both replicas start with the flag set, at about the same time.
    let requested_at = Utc::now();
    assert_eq!(first.rebuild(requested_at).await.unwrap(), Some(15));
    assert!(matches!(
        second.rebuild(requested_at).await,
        Err(ProjectionError::LeaseHeld { .. })
    ));
    let built = projection.rows(&pool).await;

    // The second takes over; a reset now would remove the marker row.
    first.release().await.unwrap();
    sqlx::query("INSERT INTO balances VALUES ('balances', 'account-marker', 5, 1, 1)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(second.rebuild(requested_at).await.unwrap(), None);
    assert_ne!(projection.rows(&pool).await, built, "left as it was");

    // A rebuild asked later is done again.
    assert_eq!(second.rebuild(Utc::now()).await.unwrap(), Some(15));
    assert_eq!(projection.rows(&pool).await, built);
}

/// Only one runner holds a projection; a runner whose lease expired and was
/// taken over is fenced off and writes nothing, even if it keeps going.
#[tokio::test]
async fn a_superseded_runner_is_fenced_off() {
    let (_database, pool, store) = setup().await;
    write_history(&store, "h4-", 2, 5).await;
    let short = ProjectionConfig {
        lease_ttl: Duration::from_millis(300),
        ..fast_config()
    };
    let first = ProjectionRunner::new(
        pool.clone(),
        Arc::new(BalanceProjection::new("balances")),
        short.clone(),
    );
    let second = ProjectionRunner::new(
        pool.clone(),
        Arc::new(BalanceProjection::new("balances")),
        short,
    );
    assert_eq!(first.catch_up().await.unwrap(), 12);
    let error = second.catch_up().await.unwrap_err();
    assert!(
        matches!(error, ProjectionError::LeaseHeld { .. }),
        "{error:?}"
    );

    // The first runner stalls past its lease; the second takes over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    write_history(&store, "h5-", 1, 3).await;
    assert_eq!(second.catch_up().await.unwrap(), 4);
    let (old, new) = (
        first.fencing_token().unwrap(),
        second.fencing_token().unwrap(),
    );
    assert!(new > old, "fencing tokens grow: {old} then {new}");

    // The first wakes up believing it still holds the lease.
    write_history(&store, "h6-", 1, 2).await;
    let error = first.catch_up().await.unwrap_err();
    assert!(
        matches!(error, ProjectionError::LeaseLost { token, .. } if token == old),
        "{error:?}"
    );
    assert_eq!(first.fencing_token(), None);
    let projection = BalanceProjection::new("balances");
    assert_eq!(
        projection.applied_count(&pool).await,
        16,
        "nothing applied by the fenced runner"
    );
    assert_eq!(second.catch_up().await.unwrap(), 3);
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&full_log(&store).await)
    );

    // A released lease is free at once.
    second.release().await.unwrap();
    assert_eq!(first.catch_up().await.unwrap(), 0);
    assert!(first.fencing_token().unwrap() > new);
}

/// Two runners started together: one applies, the other stands by, and the
/// read model is applied exactly once.
#[tokio::test]
async fn concurrent_runners_apply_each_event_once() {
    let (_database, pool, store) = setup().await;
    let cancel = CancellationToken::new();
    let mut runners = Vec::new();
    for _ in 0..2 {
        let runner = Arc::new(ProjectionRunner::new(
            pool.clone(),
            Arc::new(BalanceProjection::new("balances")),
            fast_config(),
        ));
        let cancel = cancel.clone();
        runners.push(tokio::spawn({
            let runner = runner.clone();
            async move { runner.run(cancel).await }
        }));
    }
    let last = write_history(&store, "h7-", 3, 20).await;
    wait_for(&pool, "balances", last, Duration::from_secs(20))
        .await
        .unwrap();
    cancel.cancel();
    for runner in runners {
        runner.await.unwrap();
    }
    let projection = BalanceProjection::new("balances");
    assert_eq!(projection.applied_count(&pool).await, 63);
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&full_log(&store).await)
    );
}

/// A projection fails on an event it cannot read (a version-1 payload):
/// nothing of its batch is kept and the checkpoint stays before it; with
/// the upcaster registered, the same events apply. (The events before it
/// may have been applied in an earlier batch: another transaction on the
/// server can hold part of the history back for a moment.)
#[tokio::test]
async fn projections_see_upcast_events_and_stop_on_unreadable_ones() {
    let (_database, pool, store) = setup().await;
    write_history(&store, "h8-", 1, 2).await;
    store
        .append(
            "account-h8-0",
            ExpectedVersion::Exact(3),
            &[NewEvent::new("Deposited", json!({"amount": 7})).with_schema_version(1)],
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    let projection = Arc::new(BalanceProjection::new("balances"));
    let plain = ProjectionRunner::new(pool.clone(), projection.clone(), fast_config());
    let error = plain.catch_up().await.unwrap_err();
    assert!(
        matches!(
            &error,
            ProjectionError::Apply {
                source: ApplyError::AtEvent { event_type, .. },
                ..
            } if event_type == "Deposited"
        ),
        "{error:?}"
    );
    let log = full_log(&store).await;
    assert_eq!(log.len(), 4);
    let applied = usize::try_from(projection.applied_count(&pool).await).unwrap();
    assert!(applied < 4, "the unreadable event was applied");
    let covered = applied
        .checked_sub(1)
        .map_or(GlobalPosition::START, |last| log[last].position);
    assert_eq!(
        checkpoint(&pool, "balances").await.unwrap(),
        Some(covered),
        "the checkpoint covers exactly what was applied"
    );
    plain.release().await.unwrap();

    let upcasting = ProjectionRunner::new(pool.clone(), projection.clone(), fast_config())
        .with_upcasters(account_upcasters());
    assert_eq!(upcasting.catch_up().await.unwrap(), 4 - applied as u64);
    assert_eq!(
        projection.rows(&pool).await,
        vec![("account-h8-0".to_owned(), 37, 4, 4)]
    );
}

/// With notifications, an idle runner wakes on an append instead of at its
/// (here very long) next poll.
#[tokio::test]
async fn notifications_wake_an_idle_runner() {
    let (_database, pool, store) = setup().await;
    let store = store.with_notifications("es_events");
    let runner = Arc::new(ProjectionRunner::new(
        pool.clone(),
        Arc::new(BalanceProjection::new("balances")),
        ProjectionConfig {
            idle_interval: Duration::from_secs(60),
            listen_channel: Some("es_events".into()),
            ..fast_config()
        },
    ));
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let runner = runner.clone();
        let cancel = cancel.clone();
        async move { runner.run(cancel).await }
    });
    // Let the runner take its lease and go idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runner.fencing_token().is_none() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended = store
        .append(
            "account-n",
            ExpectedVersion::NoStream,
            &[NewEvent::new("Opened", json!({"owner": "n"}))],
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    wait_for(
        &pool,
        "balances",
        appended.position,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    cancel.cancel();
    running.await.unwrap();
}

/// A rebuild requested on a runner that is tailing (an admin action in a
/// live service) interleaves with it: the read model still ends equal to a
/// full replay, each event applied once since the reset.
#[tokio::test]
async fn rebuild_while_running_converges_to_the_replay() {
    let (_database, pool, store) = setup().await;
    write_history(&store, "h9-", 4, 25).await;
    let projection = Arc::new(BalanceProjection::new("balances"));
    let runner = Arc::new(ProjectionRunner::new(
        pool.clone(),
        projection.clone(),
        ProjectionConfig {
            batch_size: 10,
            ..fast_config()
        },
    ));
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let runner = runner.clone();
        let cancel = cancel.clone();
        async move { runner.run(cancel).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while projection.applied_count(&pool).await < 30 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner.rebuild(Utc::now()).await.unwrap();
    let last = write_history(&store, "h10-", 1, 5).await;
    wait_for(&pool, "balances", last, Duration::from_secs(20))
        .await
        .unwrap();
    cancel.cancel();
    running.await.unwrap();
    assert_eq!(projection.applied_count(&pool).await, 110);
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&full_log(&store).await)
    );
}
