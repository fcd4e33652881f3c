//! How fast sagas start under concurrency, against plain INSERTs.
//!
//! `cargo bench -p saga --bench starts` (needs the Postgres at
//! `TEST_DATABASE_URL`/`DATABASE_URL`, default 127.0.0.1:5432). Sixteen
//! writers each start sagas, one committed transaction per start
//! ([`SagaEngine::start`]: the instance row, then the wake-up of the
//! workers), alternating over several rounds with the same number of
//! single-row INSERTs into a table of the same shape, so that background
//! load hits both alike. The median rate of each side and their ratio are
//! printed: what starting a saga costs beyond writing its row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use saga::{EngineConfig, NewSaga, SagaDefinition, SagaEngine, Step};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use testkit::bench::median;
use uuid::Uuid;

const ROUNDS: usize = 5;
const WRITERS: usize = 16;
const STARTS_PER_WRITER: usize = 250;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    number: usize,
}

fn engine(pool: &PgPool) -> SagaEngine<Order> {
    let definition =
        SagaDefinition::new("bench_order").step(Step::call("only", |_, order: Order| async move {
            Ok(order)
        }));
    SagaEngine::builder(pool.clone(), definition)
        .config(EngineConfig {
            listen: false,
            ..EngineConfig::default()
        })
        .build()
        .unwrap()
}

/// Runs `write` `STARTS_PER_WRITER` times in each of `WRITERS` tasks at
/// once (numbered per task); returns the writes per second.
async fn writes_per_second<F, Fut>(write: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let write = write.clone();
            tokio::spawn(async move {
                for number in 0..STARTS_PER_WRITER {
                    write(number).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (WRITERS * STARTS_PER_WRITER) as f64 / started.elapsed().as_secs_f64()
}

async fn run_starts(engine: &SagaEngine<Order>) -> f64 {
    let engine = engine.clone();
    writes_per_second(move |number| {
        let engine = engine.clone();
        async move {
            engine.start(NewSaga::new(Order { number })).await.unwrap();
        }
    })
    .await
}

async fn run_plain_inserts(pool: &PgPool) -> f64 {
    let pool = pool.clone();
    writes_per_second(move |number| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO plain_instances (id, saga_type, status, data, current_step) \
                 VALUES ($1, 'bench_order', 'CREATED', $2, 'only')",
            )
            .bind(Uuid::now_v7())
            .bind(serde_json::json!({ "number": number }))
            .execute(&pool)
            .await
            .unwrap();
        }
    })
    .await
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let database = testkit::postgres::fresh_database().await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(WRITERS as u32)
            .connect(&database.url)
            .await
            .unwrap();
        eventstore::migrate(&pool).await.unwrap();
        saga::migrate(&pool).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE plain_instances (id uuid PRIMARY KEY, saga_type text NOT NULL, \
             status text NOT NULL, data jsonb NOT NULL, current_step text, \
             created_at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&pool)
        .await
        .unwrap();
        let engine = engine(&pool);
        let (mut starts, mut inserts) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            starts.push(run_starts(&engine).await);
            inserts.push(run_plain_inserts(&pool).await);
        }
        let (starts, inserts) = (
            median(starts).expect("a round ran"),
            median(inserts).expect("a round ran"),
        );
        println!(
            "{WRITERS} writers, {STARTS_PER_WRITER} each, median of {ROUNDS} rounds: \
             saga starts {starts:.0}/s, plain INSERTs {inserts:.0}/s ({:.2}x)",
            starts / inserts
        );
    });
}
