//! The sequence-gap test: 8 concurrent writers × 1,000 events, committing
//! out of order (random pauses between insert and commit, some rollbacks),
//! with a projection tailing the global order while they write. At the end
//! the read model equals a full replay and no event was skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BalanceProjection, full_log, migrated_database, pool_with, replay_balances};
use eventstore::{
    EventMetadata, EventStore, ExpectedVersion, GlobalPosition, NewEvent, ProjectionConfig,
    ProjectionRunner, wait_for,
};
use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A transaction holding back the snapshot horizon: database, xid, age in
/// seconds, query.
type HorizonHolder = (Option<String>, Option<String>, Option<f64>, Option<String>);

const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 1_000;
const STREAMS_PER_WRITER: usize = 10;

/// One writer: appends in its own transactions, pauses a random time
/// between the insert and the commit (so commits overtake each other), and
/// rolls back one transaction in 15 (leaving holes in `position`).
async fn write(
    store: EventStore,
    writer: usize,
    commit_order: Arc<Mutex<Vec<i64>>>,
) -> GlobalPosition {
    let mut versions = [0i64; STREAMS_PER_WRITER];
    let mut written = 0;
    let mut last = GlobalPosition::START;
    let mut transactions = 0u32;
    while written < EVENTS_PER_WRITER {
        let (stream_index, batch, pause_ms, roll_back) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..STREAMS_PER_WRITER),
                rng.random_range(1..=3).min(EVENTS_PER_WRITER - written),
                rng.random_range(0..3u64),
                rng.random_ratio(1, 15),
            )
        };
        transactions += 1;
        let stream = format!("account-w{writer}-s{stream_index}");
        let events: Vec<NewEvent> = (0..batch)
            .map(|index| {
                NewEvent::new(
                    "Deposited",
                    json!({ "amount": (written + index) as i64 + 1, "currency": "EUR" }),
                )
                .with_schema_version(2)
            })
            .collect();
        let expected = match versions[stream_index] {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(version),
        };
        let mut transaction = store.pool().begin().await.unwrap();
        let appended = store
            .append_in(
                &mut transaction,
                &stream,
                expected,
                &events,
                &EventMetadata::default(),
            )
            .await
            .unwrap();
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        } else {
            tokio::task::yield_now().await;
        }
        if roll_back && transactions > 1 {
            transaction.rollback().await.unwrap();
            continue;
        }
        transaction.commit().await.unwrap();
        commit_order
            .lock()
            .unwrap()
            .push(appended.position.position);
        versions[stream_index] = appended.version;
        written += batch;
        last = last.max(appended.position);
    }
    last
}

/// The classic broken subscriber, for contrast: it trusts `position` order
/// and remembers the highest position it saw.
async fn naive_tail(store: EventStore, cancel: CancellationToken) -> HashSet<i64> {
    let mut seen = HashSet::new();
    let mut after = 0i64;
    while !cancel.is_cancelled() {
        let positions: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM es_events WHERE position > $1 ORDER BY position LIMIT 500",
        )
        .bind(after)
        .fetch_all(store.pool())
        .await
        .unwrap();
        if let Some(&max) = positions.iter().max() {
            after = max;
        }
        seen.extend(positions);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_skipped_when_commits_overtake_each_other() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("eventstore=info")
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let database = migrated_database().await;
    let pool = pool_with(&database, 16).await;
    BalanceProjection::create_tables(&pool).await;
    let store = EventStore::new(pool.clone());

    let projection = Arc::new(BalanceProjection::new("gap"));
    let runner = Arc::new(ProjectionRunner::new(
        pool.clone(),
        projection.clone(),
        ProjectionConfig {
            batch_size: 250,
            idle_interval: Duration::from_millis(5),
            held_back_interval: Duration::from_millis(2),
            ..ProjectionConfig::default()
        },
    ));
    let cancel = CancellationToken::new();
    let tailing = tokio::spawn({
        let runner = runner.clone();
        let cancel = cancel.clone();
        async move { runner.run(cancel).await }
    });
    let naive = tokio::spawn(naive_tail(store.clone(), cancel.clone()));

    let commit_order = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write(store.clone(), writer, commit_order.clone())))
        .collect();
    let mut last = GlobalPosition::START;
    for writer in writers {
        last = last.max(writer.await.unwrap());
    }
    let written_in = started.elapsed();

    // The projection reaches the last write (read-your-writes token).
    if let Err(error) = wait_for(&pool, "gap", last, Duration::from_secs(30)).await {
        let running: Vec<HorizonHolder> = sqlx::query_as(
            "SELECT datname::text, backend_xid::text, extract(epoch FROM now() - xact_start)::float8, \
                    left(query, 120) \
               FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 5",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        panic!("{error}; transactions holding the horizon: {running:?}");
    }
    cancel.cancel();
    tailing.await.unwrap();
    let naive_seen = naive.await.unwrap();

    let log = full_log(&store).await;
    assert_eq!(log.len(), WRITERS * EVENTS_PER_WRITER);
    assert_eq!(
        projection.applied_count(&pool).await,
        (WRITERS * EVENTS_PER_WRITER) as i64,
        "every event applied exactly once"
    );
    let applied: HashSet<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id, position FROM applied_events WHERE projection = 'gap'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let skipped: Vec<GlobalPosition> = log
        .iter()
        .map(|event| event.position)
        .filter(|position| {
            !applied.contains(&(position.transaction_id.to_string(), position.position))
        })
        .collect();
    assert!(skipped.is_empty(), "skipped positions: {skipped:?}");
    assert_eq!(
        projection.rows(&pool).await,
        replay_balances(&log),
        "read model equals a full replay"
    );

    // The scenario really had commits overtaking each other.
    let order = commit_order.lock().unwrap().clone();
    let overtaken = order.windows(2).filter(|pair| pair[0] > pair[1]).count();
    let naive_missed = log
        .iter()
        .filter(|event| !naive_seen.contains(&event.position.position))
        .count();
    let max_position = log
        .iter()
        .map(|event| event.position.position)
        .max()
        .unwrap();
    let holes = max_position as usize - log.len();
    println!(
        "written in {written_in:?}, total {:?}; commits overtaken: {overtaken}; \
         position holes (rollbacks): {holes}; a position-only tail would have missed {naive_missed}",
        started.elapsed()
    );
    assert!(
        overtaken > 0,
        "no commit overtook another: the test proved nothing"
    );
}
