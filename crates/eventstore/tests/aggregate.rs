//! Aggregates: load(save(events)) round trips (property test), snapshots
//! and upcasting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU64;

use common::{Account, AccountCommand, AccountEvent, Status, account_upcasters, migrated_database};
use eventstore::{
    Aggregate, EventMetadata, EventStore, ExpectedVersion, NewEvent, Repository, RepositoryError,
    SnapshotPolicy,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

fn command_strategy() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => "[a-z]{1,8}".prop_map(|owner| AccountCommand::Open { owner }),
        5 => (-5i64..200).prop_map(|amount| AccountCommand::Deposit { amount }),
        3 => (-5i64..150).prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => Just(AccountCommand::Freeze),
        1 => Just(AccountCommand::Unfreeze),
        1 => Just(AccountCommand::Close),
    ]
}

fn every(interval: u64) -> SnapshotPolicy {
    SnapshotPolicy::Every(NonZeroU64::new(interval).unwrap())
}

/// For random command sequences, the state rebuilt from the store equals
/// the state folded in memory, with and without snapshots (and with a
/// snapshotting repository and a replaying one agreeing on every stream).
#[test]
fn load_after_save_reproduces_the_state() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let database = runtime.block_on(migrated_database());
    let store = EventStore::new(database.pool.clone());
    let replaying = Repository::<Account>::new(store.clone());
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(command_strategy(), 1..40),
        prop_oneof![Just(None), (1u64..6).prop_map(Some)],
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |(commands, snapshot_interval)| {
            let id = format!(
                "prop-{}",
                case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let repository = match snapshot_interval {
                None => replaying.clone(),
                Some(interval) => replaying.clone().with_snapshots(every(interval)),
            };
            let (expected, expected_version, loaded, replayed, snapshot_version) = runtime
                .block_on(async {
                    let mut expected = Account::default();
                    // Start from the initial open so most commands apply.
                    let mut commands = commands;
                    commands.insert(0, AccountCommand::Open { owner: "p".into() });
                    let mut version = 0i64;
                    for command in commands {
                        match expected.handle(command.clone()) {
                            Ok(events) => {
                                for event in &events {
                                    expected.apply(event);
                                }
                                version += events.len() as i64;
                                let (saved, appended) = repository
                                    .execute(&id, command, &EventMetadata::default())
                                    .await
                                    .unwrap();
                                assert_eq!(appended.map(|a| a.version), Some(version));
                                assert_eq!(saved.state, expected);
                            }
                            Err(_) => {
                                let refused = repository
                                    .execute(&id, command, &EventMetadata::default())
                                    .await;
                                assert!(matches!(
                                    refused,
                                    Err(eventstore::CommandError::Rejected(_))
                                ));
                            }
                        }
                    }
                    let loaded = repository.load(&id).await.unwrap();
                    let replayed = replaying.load(&id).await.unwrap();
                    let snapshot_version: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM es_snapshots WHERE stream_id = $1")
                            .bind(Repository::<Account>::stream_id(&id))
                            .fetch_optional(&database.pool)
                            .await
                            .unwrap();
                    (expected, version, loaded, replayed, snapshot_version)
                });
            prop_assert_eq!(&loaded.state, &expected);
            prop_assert_eq!(loaded.version, expected_version);
            prop_assert_eq!(&replayed.state, &expected);
            prop_assert_eq!(replayed.version, expected_version);
            match snapshot_interval {
                None => prop_assert_eq!(snapshot_version, None),
                Some(interval) => {
                    let interval = interval as i64;
                    if expected_version >= interval {
                        let taken = snapshot_version
                            .ok_or_else(|| TestCaseError::fail("no snapshot was taken"))?;
                        // Taken by the save that crossed the last multiple
                        // of the interval (a command yields at most 2 events).
                        let multiple = expected_version / interval * interval;
                        prop_assert!(taken <= expected_version);
                        prop_assert!(
                            (multiple..=multiple + 1).contains(&taken),
                            "snapshot at {} for multiple {}",
                            taken,
                            multiple
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The snapshot is really what a load starts from, and one that cannot be
/// used (other shape version, or undecodable) is ignored in favour of a
/// full replay.
#[tokio::test]
async fn snapshots_are_used_on_load_and_unusable_ones_are_ignored() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let repository = Repository::<Account>::new(store.clone()).with_snapshots(every(3));
    let metadata = EventMetadata::default();
    repository
        .execute(
            "s",
            AccountCommand::Open {
                owner: "ada".into(),
            },
            &metadata,
        )
        .await
        .unwrap();
    for amount in [10, 20, 30, 40] {
        repository
            .execute("s", AccountCommand::Deposit { amount }, &metadata)
            .await
            .unwrap();
    }
    let (version, state): (i64, serde_json::Value) =
        sqlx::query_as("SELECT version, state FROM es_snapshots WHERE stream_id = 'account-s'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(version, 3, "snapshot taken when the version crossed 3");
    assert_eq!(state["balance"], json!(30));

    // Doctor the snapshot: a load that starts from it shows the doctored
    // balance plus the tail (events 4 and 5: +30 +40).
    sqlx::query(
        "UPDATE es_snapshots SET state = jsonb_set(state, '{balance}', '1000') WHERE stream_id = 'account-s'",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let loaded = repository.load("s").await.unwrap();
    assert_eq!(loaded.state.balance, 1070);
    assert_eq!(loaded.version, 5);

    // A snapshot of another shape version is ignored.
    sqlx::query("UPDATE es_snapshots SET schema_version = 99 WHERE stream_id = 'account-s'")
        .execute(&database.pool)
        .await
        .unwrap();
    assert_eq!(repository.load("s").await.unwrap().state.balance, 100);

    // So is one that no longer deserialises.
    sqlx::query(
        "UPDATE es_snapshots SET schema_version = 1, state = '{\"unexpected\": true}' WHERE stream_id = 'account-s'",
    )
    .execute(&database.pool)
    .await
    .unwrap();
    let loaded = repository.load("s").await.unwrap();
    assert_eq!(loaded.state.balance, 100);
    assert_eq!(loaded.state.deposits, 4);

    // The next save past a multiple of 3 replaces it with a good one.
    repository
        .execute("s", AccountCommand::Deposit { amount: 1 }, &metadata)
        .await
        .unwrap();
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM es_snapshots WHERE stream_id = 'account-s'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(version, 6);
    assert_eq!(repository.load("s").await.unwrap().state.balance, 101);
}

/// A snapshot is written in the append's transaction: when the append
/// conflicts, no snapshot of the rejected state is left behind.
#[tokio::test]
async fn a_conflicting_save_leaves_no_snapshot() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let repository = Repository::<Account>::new(store.clone()).with_snapshots(every(2));
    let metadata = EventMetadata::default();
    repository
        .execute(
            "c",
            AccountCommand::Open {
                owner: "ada".into(),
            },
            &metadata,
        )
        .await
        .unwrap();
    let mut stale = repository.load("c").await.unwrap();
    repository
        .execute("c", AccountCommand::Deposit { amount: 5 }, &metadata)
        .await
        .unwrap();
    let snapshot_before: (i64, serde_json::Value) =
        sqlx::query_as("SELECT version, state FROM es_snapshots WHERE stream_id = 'account-c'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    let events = stale
        .state
        .handle(AccountCommand::Deposit { amount: 999 })
        .unwrap();
    let error = repository
        .save(&mut stale, events, &metadata)
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    let snapshot_after: (i64, serde_json::Value) =
        sqlx::query_as("SELECT version, state FROM es_snapshots WHERE stream_id = 'account-c'")
            .fetch_one(&database.pool)
            .await
            .unwrap();
    assert_eq!(snapshot_before, snapshot_after);
    assert_eq!(repository.load("c").await.unwrap().state.balance, 5);
}

/// An event stored with schema version 1 loads as version 2 through the
/// registered upcaster; without it, the load fails with a typed error
/// naming the event instead of producing a wrong state.
#[tokio::test]
async fn version_one_events_load_as_version_two() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let metadata = EventMetadata::default();
    // What an older release wrote: Deposited v1 had no currency.
    store
        .append(
            "account-legacy",
            ExpectedVersion::NoStream,
            &[
                NewEvent::new("Opened", json!({"owner": "old"})),
                NewEvent::new("Deposited", json!({"amount": 25})).with_schema_version(1),
            ],
            &metadata,
        )
        .await
        .unwrap();
    let stored = store.read_stream("account-legacy", 1).await.unwrap();
    assert_eq!(
        stored[1].schema_version, 1,
        "stored history is not rewritten"
    );

    let without = Repository::<Account>::new(store.clone());
    let error = without.load("legacy").await.unwrap_err();
    assert!(
        matches!(
            &error,
            RepositoryError::Decode {
                version: 2,
                source: eventstore::EventDecodeError::UnsupportedSchemaVersion {
                    schema_version: 1,
                    ..
                },
                ..
            }
        ),
        "{error:?}"
    );

    let repository = Repository::<Account>::new(store.clone()).with_upcasters(account_upcasters());
    let mut loaded = repository.load("legacy").await.unwrap();
    assert_eq!(loaded.state.balance, 25);
    assert_eq!(loaded.state.currency, "EUR");
    assert_eq!(loaded.state.deposits, 1);
    assert_eq!(loaded.version, 2);

    // New events are written in the current shape (version 2) after the old ones.
    let events = loaded
        .state
        .handle(AccountCommand::Deposit { amount: 5 })
        .unwrap();
    assert_eq!(
        events,
        vec![AccountEvent::Deposited {
            amount: 5,
            currency: "EUR".into()
        }]
    );
    repository
        .save(&mut loaded, events, &metadata)
        .await
        .unwrap();
    let stored = store.read_stream("account-legacy", 3).await.unwrap();
    assert_eq!(stored[0].schema_version, 2);
    assert_eq!(stored[0].payload, json!({"amount": 5, "currency": "EUR"}));
    assert_eq!(repository.load("legacy").await.unwrap().state.balance, 30);

    // An upcaster that cannot convert reports which event and version.
    let broken = Repository::<Account>::new(store.clone()).with_upcasters(
        eventstore::Upcasters::new().register("Deposited", 1, |_| Err("unreadable".into())),
    );
    let error = broken.load("legacy").await.unwrap_err();
    assert!(
        matches!(&error, RepositoryError::Upcast(upcast) if upcast.from_version == 1 && upcast.event_type == "Deposited"),
        "{error:?}"
    );
}

/// A closed account refuses further deposits: the domain error surfaces as
/// `CommandError::Rejected` and nothing is appended.
#[tokio::test]
async fn rejected_commands_write_nothing() {
    let database = migrated_database().await;
    let store = EventStore::new(database.pool.clone());
    let repository = Repository::<Account>::new(store.clone());
    let metadata = EventMetadata::default();
    repository
        .execute("r", AccountCommand::Open { owner: "x".into() }, &metadata)
        .await
        .unwrap();
    repository
        .execute("r", AccountCommand::Close, &metadata)
        .await
        .unwrap();
    let refused = repository
        .execute("r", AccountCommand::Deposit { amount: 1 }, &metadata)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        eventstore::CommandError::Rejected(common::AccountError::WrongStatus(Status::Closed))
    ));
    assert_eq!(store.stream_version("account-r").await.unwrap(), 2);
}
