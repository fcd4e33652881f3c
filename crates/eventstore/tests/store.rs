//! Appends, optimistic concurrency and reads against a real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Account, AccountCommand, migrated_database, pool_with, read_all_eventually};
use eventstore::{
    Aggregate, EventMetadata, EventStore, EventStoreError, ExpectedVersion, GlobalPosition,
    NewEvent, Repository,
};
use serde_json::json;
use sqlx::SqlSafeStr;
use uuid::Uuid;

fn events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|index| NewEvent::new("Happened", json!({ "index": index })))
        .collect()
}

async fn event_count(store: &EventStore, stream: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM es_events WHERE stream_id = $1")
        .bind(stream)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn versions_start_at_one_and_expected_versions_are_enforced() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();

    let first = store
        .append("s-1", ExpectedVersion::NoStream, &events(2), &metadata)
        .await
        .unwrap();
    assert_eq!(first.version, 2);

    let conflict = store
        .append("s-1", ExpectedVersion::NoStream, &events(1), &metadata)
        .await
        .unwrap_err();
    assert!(
        matches!(
            conflict,
            EventStoreError::ConcurrencyConflict {
                expected: ExpectedVersion::NoStream,
                actual: 2,
                ..
            }
        ),
        "{conflict:?}"
    );

    // Behind and ahead of the real version both conflict; neither leaves a
    // gap or a partial write.
    for expected in [1, 3] {
        let conflict = store
            .append(
                "s-1",
                ExpectedVersion::Exact(expected),
                &events(3),
                &metadata,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                conflict,
                EventStoreError::ConcurrencyConflict { actual: 2, .. }
            ),
            "{conflict:?}"
        );
    }
    assert_eq!(event_count(&store, "s-1").await, 2);

    let next = store
        .append("s-1", ExpectedVersion::Exact(2), &events(1), &metadata)
        .await
        .unwrap();
    assert_eq!(next.version, 3);
    assert!(next.position > first.position);
    let any = store
        .append("s-1", ExpectedVersion::Any, &events(2), &metadata)
        .await
        .unwrap();
    assert_eq!(any.version, 5);

    let versions: Vec<i64> = store
        .read_stream("s-1", 1)
        .await
        .unwrap()
        .iter()
        .map(|event| event.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let tail: Vec<i64> = store
        .read_stream("s-1", 4)
        .await
        .unwrap()
        .iter()
        .map(|event| event.version)
        .collect();
    assert_eq!(tail, vec![4, 5]);
    assert_eq!(store.stream_version("s-1").await.unwrap(), 5);
    assert_eq!(store.stream_version("unknown").await.unwrap(), 0);

    let empty = store
        .append("s-1", ExpectedVersion::Any, &[], &metadata)
        .await
        .unwrap_err();
    assert!(matches!(empty, EventStoreError::NoEvents { .. }));
}

#[tokio::test]
async fn events_round_trip_with_their_metadata() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let metadata = EventMetadata::default()
        .with_correlation_id(correlation)
        .with_causation_id(causation)
        .with_user_id("user-7");
    let metadata = EventMetadata {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: Some("vendor=x".into()),
        ..metadata
    };
    let event = NewEvent::new("Opened", json!({"owner": "ada"})).with_schema_version(3);
    let appended = store
        .append(
            "s-meta",
            ExpectedVersion::NoStream,
            std::slice::from_ref(&event),
            &metadata,
        )
        .await
        .unwrap();

    let stored = store.read_stream("s-meta", 1).await.unwrap();
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(stored.event_id, event.event_id);
    assert_eq!(stored.event_type, "Opened");
    assert_eq!(stored.schema_version, 3);
    assert_eq!(stored.payload, json!({"owner": "ada"}));
    assert_eq!(stored.metadata, metadata);
    assert_eq!(stored.version, 1);
    assert_eq!(stored.position, appended.position);

    let all = read_all_eventually(&store, GlobalPosition::START, 1).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].position, appended.position);
    assert!(
        store
            .read_all(appended.position, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The text form of a position survives a round trip (it travels in headers).
    let text = appended.position.to_string();
    assert_eq!(text.parse::<GlobalPosition>().unwrap(), appended.position);
    assert!("12".parse::<GlobalPosition>().is_err());
    assert!("a.1".parse::<GlobalPosition>().is_err());
}

#[tokio::test]
async fn the_log_is_append_only() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    store
        .append(
            "s-ro",
            ExpectedVersion::NoStream,
            &events(1),
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    let update = sqlx::query("UPDATE es_events SET payload = '{}'")
        .execute(store.pool())
        .await;
    assert!(update.is_err(), "an UPDATE of an event must be refused");
    let delete = sqlx::query("DELETE FROM es_events")
        .execute(store.pool())
        .await;
    assert!(delete.is_err(), "a DELETE of an event must be refused");
    assert_eq!(event_count(&store, "s-ro").await, 1);
}

/// Two writers load the same version; one wins, the other gets a conflict
/// naming both versions, and none of its events is stored.
#[tokio::test]
async fn two_writers_on_one_version_one_wins_and_nothing_is_half_written() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let repository = Repository::<Account>::new(store.clone());
    let metadata = EventMetadata::default();
    repository
        .execute(
            "a-1",
            AccountCommand::Open {
                owner: "ada".into(),
            },
            &metadata,
        )
        .await
        .unwrap();
    repository
        .execute("a-1", AccountCommand::Deposit { amount: 50 }, &metadata)
        .await
        .unwrap();

    let mut first = repository.load("a-1").await.unwrap();
    let mut second = repository.load("a-1").await.unwrap();
    assert_eq!((first.version, second.version), (2, 2));

    let deposit = first
        .state
        .handle(AccountCommand::Deposit { amount: 10 })
        .unwrap();
    repository
        .save(&mut first, deposit, &metadata)
        .await
        .unwrap();
    assert_eq!(first.version, 3);

    // Close yields two events (payout + closed): neither may be stored.
    let close = second.state.handle(AccountCommand::Close).unwrap();
    assert_eq!(close.len(), 2);
    let conflict = repository
        .save(&mut second, close, &metadata)
        .await
        .unwrap_err();
    assert!(conflict.is_conflict(), "{conflict:?}");
    let message = conflict.to_string();
    assert!(
        message.contains("expected version 2") && message.contains("actual 3"),
        "{message}"
    );
    assert_eq!(second.version, 2, "the losing aggregate is not advanced");

    let stored = store.read_stream("account-a-1", 1).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|event| event.event_type != "Closed"));
    let reloaded = repository.load("a-1").await.unwrap();
    assert_eq!(reloaded.state.balance, 60);
    assert_eq!(reloaded.version, 3);
}

/// Many tasks race to create the same stream: exactly one succeeds, every
/// other one conflicts, and only the winner's events are stored.
#[tokio::test]
async fn racing_creators_of_one_stream_have_exactly_one_winner() {
    let database = migrated_database().await;
    let pool = pool_with(&database, 16).await;
    let store = EventStore::new(pool);
    let mut tasks = Vec::new();
    for writer in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<NewEvent> = (0..3)
                .map(|index| NewEvent::new("Created", json!({ "writer": writer, "index": index })))
                .collect();
            (
                writer,
                store
                    .append(
                        "contested",
                        ExpectedVersion::NoStream,
                        &batch,
                        &EventMetadata::default(),
                    )
                    .await,
            )
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (writer, result) = task.await.unwrap();
        match result {
            Ok(appended) => {
                assert_eq!(appended.version, 3);
                winners.push(writer);
            }
            Err(EventStoreError::ConcurrencyConflict {
                expected, actual, ..
            }) => {
                assert_eq!(expected, ExpectedVersion::NoStream);
                assert!(actual >= 1);
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let stored = store.read_stream("contested", 1).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|event| event.payload["writer"] == json!(winners[0]))
    );
}

/// Concurrent `Any` appends to one stream all succeed, with distinct,
/// gap-free versions.
#[tokio::test]
async fn concurrent_any_appends_serialise_without_gaps() {
    let database = migrated_database().await;
    let pool = pool_with(&database, 12).await;
    let store = Arc::new(EventStore::new(pool));
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for index in 0..20 {
                store
                    .append(
                        "shared",
                        ExpectedVersion::Any,
                        &[NewEvent::new(
                            "Tick",
                            json!({ "writer": writer, "index": index }),
                        )],
                        &EventMetadata::default(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let versions: Vec<i64> = store
        .read_stream("shared", 1)
        .await
        .unwrap()
        .iter()
        .map(|event| event.version)
        .collect();
    assert_eq!(versions, (1..=120).collect::<Vec<_>>());
}

/// `append_in` commits with the caller's transaction, and rolls back with it.
#[tokio::test]
async fn append_in_shares_the_callers_transaction() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();

    let mut transaction = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut transaction,
            "tx-1",
            ExpectedVersion::NoStream,
            &events(2),
            &metadata,
        )
        .await
        .unwrap();
    eventstore::enqueue(
        &mut transaction,
        &eventstore::OutboxMessage::new("topic", "tx-1", b"hello".to_vec()),
    )
    .await
    .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(event_count(&store, "tx-1").await, 0);
    assert_eq!(
        eventstore::outbox::pending_count(store.pool())
            .await
            .unwrap(),
        0
    );

    let mut transaction = store.pool().begin().await.unwrap();
    let appended = store
        .append_in(
            &mut transaction,
            "tx-1",
            ExpectedVersion::NoStream,
            &events(2),
            &metadata,
        )
        .await
        .unwrap();
    // A second append to the same stream in the same transaction continues it.
    let again = store
        .append_in(
            &mut transaction,
            "tx-1",
            ExpectedVersion::Exact(2),
            &events(1),
            &metadata,
        )
        .await
        .unwrap();
    eventstore::enqueue(
        &mut transaction,
        &eventstore::OutboxMessage::new("topic", "tx-1", b"hello".to_vec()),
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!((appended.version, again.version), (2, 3));
    assert_eq!(
        appended.position.transaction_id, again.position.transaction_id,
        "one transaction"
    );
    assert_eq!(event_count(&store, "tx-1").await, 3);
    assert_eq!(
        eventstore::outbox::pending_count(store.pool())
            .await
            .unwrap(),
        1
    );
}

/// A writer in another transaction waits for the stream lock and then sees
/// the committed head instead of colliding with it.
#[tokio::test]
async fn a_writer_blocked_by_an_open_transaction_sees_its_outcome() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();

    let mut transaction = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut transaction,
            "blocked",
            ExpectedVersion::NoStream,
            &events(1),
            &metadata,
        )
        .await
        .unwrap();
    let contender = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    "blocked",
                    ExpectedVersion::NoStream,
                    &events(1),
                    &EventMetadata::default(),
                )
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !contender.is_finished(),
        "the contender waits for the open transaction"
    );
    transaction.commit().await.unwrap();
    let outcome = contender.await.unwrap();
    assert!(
        matches!(
            outcome,
            Err(EventStoreError::ConcurrencyConflict { actual: 1, .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(event_count(&store, "blocked").await, 1);
}

/// A transaction that took its id before the stream's latest append would
/// sort before the events it follows: it is refused, and a retry in a new
/// transaction succeeds.
#[tokio::test]
async fn an_append_from_an_older_transaction_is_refused() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();
    sqlx::query("CREATE TABLE side_effects (note text)")
        .execute(store.pool())
        .await
        .unwrap();

    let mut old = store.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO side_effects VALUES ('first write takes a transaction id')")
        .execute(&mut *old)
        .await
        .unwrap();
    store
        .append("ordered", ExpectedVersion::NoStream, &events(1), &metadata)
        .await
        .unwrap();
    let refused = store
        .append_in(
            &mut old,
            "ordered",
            ExpectedVersion::Exact(1),
            &events(1),
            &metadata,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EventStoreError::TransactionTooOld { .. }),
        "{refused:?}"
    );
    assert!(refused.is_conflict());
    old.rollback().await.unwrap();

    let mut fresh = store.pool().begin().await.unwrap();
    let appended = store
        .append_in(
            &mut fresh,
            "ordered",
            ExpectedVersion::Exact(1),
            &events(1),
            &metadata,
        )
        .await
        .unwrap();
    fresh.commit().await.unwrap();
    assert_eq!(appended.version, 2);
    let positions: Vec<GlobalPosition> = read_all_eventually(&store, GlobalPosition::START, 2)
        .await
        .iter()
        .map(|event| event.position)
        .collect();
    assert_eq!(positions.len(), 2);
    assert!(positions[0] < positions[1]);
}

/// read_all holds back events of transactions that are newer than a
/// transaction still running, and releases them once it ends.
#[tokio::test]
async fn read_all_waits_for_older_transactions_before_moving_on() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();

    let mut slow = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut slow,
            "slow",
            ExpectedVersion::NoStream,
            &events(1),
            &metadata,
        )
        .await
        .unwrap();
    let fast = store
        .append("fast", ExpectedVersion::NoStream, &events(1), &metadata)
        .await
        .unwrap();
    // The fast event is committed, but an older transaction is still open:
    // reading it now would let the slow event land behind the reader.
    for _ in 0..10 {
        assert!(
            store
                .read_all(GlobalPosition::START, 10)
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    slow.commit().await.unwrap();
    let streams: Vec<String> = read_all_eventually(&store, GlobalPosition::START, 2)
        .await
        .into_iter()
        .map(|event| event.stream_id)
        .collect();
    assert_eq!(streams, vec!["slow".to_owned(), "fast".to_owned()]);
    let after_fast = store.read_all(fast.position, 10).await.unwrap();
    assert!(after_fast.is_empty());
}

#[tokio::test]
async fn migrations_are_idempotent_and_coexist_with_a_service_migrator() {
    let database = migrated_database().await;
    eventstore::migrate(&database.pool).await.unwrap();
    // A service's own migrator, with a version number that also exists in
    // the crate's set, on the same database.
    let service = sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
        1,
        "service table".into(),
        sqlx::migrate::MigrationType::Simple,
        "CREATE TABLE orders (id uuid PRIMARY KEY)".into_sql_str(),
        false,
    )]);
    service.run(&database.pool).await.unwrap();
    service.run(&database.pool).await.unwrap();
    eventstore::migrate(&database.pool).await.unwrap();
    let crate_versions: i64 = sqlx::query_scalar("SELECT count(*) FROM _eventstore_migrations")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(crate_versions, eventstore::MIGRATOR.iter().count() as i64);
    let service_versions: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(service_versions, 1);
}

#[tokio::test]
async fn appended_events_decode_as_domain_events() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let repository = Repository::<Account>::new(store.clone());
    let (account, appended) = repository
        .execute(
            "d-1",
            AccountCommand::Open {
                owner: "bob".into(),
            },
            &EventMetadata::default(),
        )
        .await
        .unwrap();
    assert!(appended.is_some());
    assert_eq!(account.state.owner, "bob");
    let rejected = repository
        .execute(
            "d-1",
            AccountCommand::Withdraw { amount: 5 },
            &EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            rejected,
            eventstore::CommandError::Rejected(common::AccountError::InsufficientFunds)
        ),
        "{rejected:?}"
    );
    assert_eq!(store.stream_version("account-d-1").await.unwrap(), 1);
}

/// The global order compares transaction ids as numbers: ids with fewer
/// digits come first (a text comparison would put "1000" before "99" and
/// make a reader skip everything between them).
#[tokio::test]
async fn the_global_order_compares_transaction_ids_numerically() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    // Rows as transactions long finished would have left them (ids below
    // any running transaction), inserted out of numeric order; as text they
    // would sort 10, 100, 1000, 9. A young server is first moved past them.
    while sqlx::query_scalar::<_, i64>("SELECT txid_current()::text::bigint")
        .fetch_one(store.pool())
        .await
        .unwrap()
        < 2_000
    {}
    for (transaction_id, version) in [(100_i64, 3), (9, 1), (1000, 4), (10, 2)] {
        sqlx::query(
            "INSERT INTO es_events (transaction_id, stream_id, version, event_id, event_type, schema_version, payload) \
             VALUES ($1::text::xid8, 'digits', $2, $3, 'Happened', 1, '{}')",
        )
        .bind(transaction_id.to_string())
        .bind(version)
        .bind(Uuid::now_v7())
        .execute(store.pool())
        .await
        .unwrap();
    }
    let order: Vec<u64> = read_all_eventually(&store, GlobalPosition::START, 4)
        .await
        .iter()
        .map(|event| event.position.transaction_id)
        .collect();
    assert_eq!(order, vec![9, 10, 100, 1000]);
    let second = read_all_eventually(&store, GlobalPosition::START, 4).await[1].position;
    let rest: Vec<u64> = store
        .read_all(second, 10)
        .await
        .unwrap()
        .iter()
        .map(|event| event.position.transaction_id)
        .collect();
    assert_eq!(rest, vec![100, 1000]);
}
