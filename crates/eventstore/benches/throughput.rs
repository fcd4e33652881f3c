//! Append throughput against plain INSERTs, and projection catch-up speed.
//!
//! `cargo bench -p eventstore --bench throughput` (needs the Postgres at
//! `TEST_DATABASE_URL`/`DATABASE_URL`, default 127.0.0.1:5432). Each
//! scenario runs event-store appends and the same number of plain
//! single-row INSERTs into a table with the same columns, with the same
//! durability (one committed transaction per write, the server's
//! `synchronous_commit`) and the same concurrency, alternating over several
//! rounds so background load hits both alike; the median rate of each side
//! is reported with their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{
    ApplyError, EventMetadata, EventStore, ExpectedVersion, NewEvent, Projection, ProjectionConfig,
    ProjectionRunner, RecordedEvent,
};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use testkit::bench::median;
use uuid::Uuid;

const ROUNDS: usize = 3;

fn payload(index: usize) -> serde_json::Value {
    json!({ "order_id": Uuid::now_v7(), "amount": index * 100 + 1, "currency": "EUR", "note": "benchmark event" })
}

fn metadata() -> EventMetadata {
    EventMetadata::default()
        .with_correlation_id(Uuid::now_v7())
        .with_user_id("bench-user")
}

/// How a scenario spreads its writes.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    writers: usize,
    streams_per_writer: usize,
    /// Every writer appends to one shared stream with `ExpectedVersion::Any`.
    shared_stream: bool,
    appends_per_writer: usize,
}

async fn run_appends(store: &EventStore, scenario: Scenario, round: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..scenario.writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut versions = vec![0i64; scenario.streams_per_writer];
                for index in 0..scenario.appends_per_writer {
                    let event = [NewEvent::new("OrderPlaced", payload(index))];
                    if scenario.shared_stream {
                        let stream = format!("{}-r{round}-shared", scenario.name);
                        store
                            .append(&stream, ExpectedVersion::Any, &event, &metadata())
                            .await
                            .unwrap();
                    } else {
                        let slot = index % scenario.streams_per_writer;
                        let stream = format!("{}-r{round}-w{writer}-s{slot}", scenario.name);
                        let expected = match versions[slot] {
                            0 => ExpectedVersion::NoStream,
                            version => ExpectedVersion::Exact(version),
                        };
                        versions[slot] = store
                            .append(&stream, expected, &event, &metadata())
                            .await
                            .unwrap()
                            .version;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (scenario.writers * scenario.appends_per_writer) as f64 / started.elapsed().as_secs_f64()
}

async fn run_plain_inserts(pool: &PgPool, scenario: Scenario, round: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..scenario.writers)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let metadata = serde_json::to_value(metadata()).unwrap();
                for index in 0..scenario.appends_per_writer {
                    let slot = index % scenario.streams_per_writer.max(1);
                    sqlx::query(
                        "INSERT INTO plain_events (stream_id, version, event_id, event_type, schema_version, payload, metadata) \
                         VALUES ($1, $2, $3, $4, 1, $5, $6)",
                    )
                    .bind(format!("{}-r{round}-w{writer}-s{slot}", scenario.name))
                    .bind(index as i64 + 1)
                    .bind(Uuid::now_v7())
                    .bind("OrderPlaced")
                    .bind(payload(index))
                    .bind(&metadata)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (scenario.writers * scenario.appends_per_writer) as f64 / started.elapsed().as_secs_f64()
}

/// A read model that counts events and sums amounts per stream, written
/// with one multi-row upsert per batch.
struct BulkCounter;

/// The same read model, one upsert per event.
struct PerEventCounter;

const UPSERT: &str = "INSERT INTO stream_totals AS t (stream_id, events, amount, last_version) \
     SELECT s, e, a, v FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(s, e, a, v) \
     ON CONFLICT (stream_id) DO UPDATE \
        SET events = t.events + EXCLUDED.events, amount = t.amount + EXCLUDED.amount, \
            last_version = EXCLUDED.last_version";

#[async_trait::async_trait]
impl Projection for BulkCounter {
    fn name(&self) -> &str {
        "bench-bulk"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        self.apply_batch(connection, std::slice::from_ref(event))
            .await
    }

    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ApplyError> {
        let mut totals: std::collections::BTreeMap<&str, (i64, i64, i64)> = Default::default();
        for event in events {
            let total = totals.entry(&event.stream_id).or_default();
            total.0 += 1;
            total.1 += event.payload["amount"].as_i64().unwrap_or(0);
            total.2 = event.version;
        }
        let streams: Vec<&str> = totals.keys().copied().collect();
        let counts: Vec<i64> = totals.values().map(|t| t.0).collect();
        let amounts: Vec<i64> = totals.values().map(|t| t.1).collect();
        let versions: Vec<i64> = totals.values().map(|t| t.2).collect();
        sqlx::query(UPSERT)
            .bind(&streams)
            .bind(&counts)
            .bind(&amounts)
            .bind(&versions)
            .execute(connection)
            .await?;
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        sqlx::query("TRUNCATE stream_totals")
            .execute(connection)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Projection for PerEventCounter {
    fn name(&self) -> &str {
        "bench-per-event"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        sqlx::query(UPSERT)
            .bind([event.stream_id.as_str()])
            .bind([1i64])
            .bind([event.payload["amount"].as_i64().unwrap_or(0)])
            .bind([event.version])
            .execute(connection)
            .await?;
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        sqlx::query("TRUNCATE stream_totals")
            .execute(connection)
            .await?;
        Ok(())
    }
}

async fn catch_up_rate(
    pool: &PgPool,
    projection: Arc<dyn Projection>,
    events: usize,
) -> (f64, Duration) {
    sqlx::query("TRUNCATE stream_totals")
        .execute(pool)
        .await
        .unwrap();
    let runner = ProjectionRunner::new(
        pool.clone(),
        projection,
        ProjectionConfig {
            batch_size: 1000,
            ..ProjectionConfig::default()
        },
    );
    let started = Instant::now();
    let applied = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(applied as usize, events);
    runner.release().await.unwrap();
    (applied as f64 / elapsed.as_secs_f64(), elapsed)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let database = testkit::postgres::fresh_database().await;
        eventstore::migrate(&database.pool).await.unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&database.url)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE plain_events (
                 position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 stream_id text NOT NULL, version bigint NOT NULL, event_id uuid NOT NULL,
                 event_type text NOT NULL, schema_version integer NOT NULL,
                 payload jsonb NOT NULL, metadata jsonb NOT NULL,
                 recorded_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE stream_totals (
                 stream_id text PRIMARY KEY, events bigint NOT NULL, amount bigint NOT NULL,
                 last_version bigint NOT NULL);",
        )
        .execute(&pool)
        .await
        .unwrap();
        let settings: (String, String) =
            sqlx::query_as("SELECT current_setting('synchronous_commit'), current_setting('fsync')")
                .fetch_one(&pool)
                .await
                .unwrap();
        let version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
            .fetch_one(&pool)
            .await
            .unwrap();
        println!(
            "PostgreSQL {version}, synchronous_commit={}, fsync={}; {} cores; {ROUNDS} alternating rounds, medians",
            settings.0,
            settings.1,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        let store = EventStore::new(pool.clone());

        let scenarios = [
            Scenario { name: "one-stream-1w", writers: 1, streams_per_writer: 1, shared_stream: false, appends_per_writer: 1500 },
            Scenario { name: "one-stream-4w", writers: 4, streams_per_writer: 1, shared_stream: true, appends_per_writer: 400 },
            Scenario { name: "100-streams-4w", writers: 4, streams_per_writer: 25, shared_stream: false, appends_per_writer: 1000 },
        ];
        println!();
        println!("| scenario | writers | appends | event store appends/s | plain INSERTs/s | ratio |");
        println!("|---|---|---|---|---|---|");
        for scenario in scenarios {
            let mut appends = Vec::new();
            let mut inserts = Vec::new();
            for round in 0..ROUNDS {
                inserts.push(run_plain_inserts(&pool, scenario, round).await);
                appends.push(run_appends(&store, scenario, round).await);
            }
            let (appends, inserts) = (
        median(appends).expect("a round ran"),
        median(inserts).expect("a round ran"),
    );
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.2} |",
                scenario.name,
                scenario.writers,
                scenario.writers * scenario.appends_per_writer,
                appends,
                inserts,
                appends / inserts
            );
        }

        // Projection catch-up from a cold start over 100,000 events.
        sqlx::query("TRUNCATE es_events").execute(&pool).await.unwrap();
        let total = 100_000;
        let streams = 1_000;
        let per_append = 100;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for stream in (writer..streams).step_by(4) {
                    let batch: Vec<NewEvent> = (0..per_append)
                        .map(|index| NewEvent::new("OrderPlaced", payload(index)))
                        .collect();
                    store
                        .append(&format!("catchup-{stream}"), ExpectedVersion::NoStream, &batch, &metadata())
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let loaded = started.elapsed();
        let in_log: i64 = sqlx::query_scalar("SELECT count(*) FROM es_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        let other = in_log as usize - total;
        println!();
        println!(
            "loaded {total} events in {loaded:.1?} ({:.0} events/s in appends of {per_append}); log holds {in_log} events",
            total as f64 / loaded.as_secs_f64()
        );
        println!();
        println!("| projection (cold start, batch 1000) | events | time | events/s |");
        println!("|---|---|---|---|");
        for (label, projection) in [
            ("bulk upsert per batch (`apply_batch`)", Arc::new(BulkCounter) as Arc<dyn Projection>),
            ("one upsert per event (`apply`)", Arc::new(PerEventCounter) as Arc<dyn Projection>),
        ] {
            let (rate, elapsed) = catch_up_rate(&pool, projection, total + other).await;
            println!("| {label} | {} | {elapsed:.1?} | {rate:.0} |", total + other);
        }
    });
}
