//! Transactions that each write three outbox messages — what PlaceOrder
//! does with its integration event and status notification, or a
//! reservation of three lines — one `INSERT` per message ([`enqueue`]) against
//! one statement for all three ([`enqueue_all`]).
//!
//! `cargo bench -p eventstore --bench enqueue` (needs the Postgres at
//! `TEST_DATABASE_URL`/`DATABASE_URL`, default 127.0.0.1:5432). 8 writers,
//! 250 committed transactions each, the two sides alternating over 5
//! rounds; the median rates and their ratio are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use eventstore::{OutboxMessage, enqueue, enqueue_all};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use testkit::bench::median;

const WRITERS: usize = 8;
const TRANSACTIONS: usize = 250;
const MESSAGES: usize = 3;
const ROUNDS: usize = 5;

fn messages(writer: usize, index: usize) -> Vec<OutboxMessage> {
    (0..MESSAGES)
        .map(|message| {
            OutboxMessage::json(
                "ferrishop.bench.events",
                format!("order-{writer}-{index}"),
                &serde_json::json!({ "message": message, "note": "benchmark event" }),
            )
            .unwrap()
            .with_header("ce_type", "bench.happened")
        })
        .collect()
}

/// Committed transactions per second, each writing its messages together
/// or one by one.
async fn transactions_per_second(pool: &PgPool, together: bool) -> f64 {
    sqlx::query("TRUNCATE outbox").execute(pool).await.unwrap();
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for index in 0..TRANSACTIONS {
                    let messages = messages(writer, index);
                    let mut transaction = pool.begin().await.unwrap();
                    if together {
                        enqueue_all(&mut transaction, &messages).await.unwrap();
                    } else {
                        for message in &messages {
                            enqueue(&mut transaction, message).await.unwrap();
                        }
                    }
                    transaction.commit().await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    (WRITERS * TRANSACTIONS) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let database = testkit::postgres::fresh_database().await;
    eventstore::migrate(&database.pool).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(WRITERS as u32)
        .connect(&database.url)
        .await
        .unwrap();
    transactions_per_second(&pool, true).await;
    let (mut one_by_one, mut together) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            one_by_one.push(transactions_per_second(&pool, false).await);
            together.push(transactions_per_second(&pool, true).await);
        } else {
            together.push(transactions_per_second(&pool, true).await);
            one_by_one.push(transactions_per_second(&pool, false).await);
        }
    }
    let (one_by_one, together) = (
        median(one_by_one).expect("a round ran"),
        median(together).expect("a round ran"),
    );
    println!(
        "{WRITERS} writers × {TRANSACTIONS} transactions of {MESSAGES} messages, medians of {ROUNDS} rounds"
    );
    println!("| enqueue, one by one | enqueue_all | ratio |");
    println!("|---:|---:|---:|");
    println!(
        "| {one_by_one:.0} tx/s | {together:.0} tx/s | {:.2}× |",
        together / one_by_one
    );
}
