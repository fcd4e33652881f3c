//! Outbox relay throughput to each real broker: a batch published one
//! message at a time (`max_in_flight: 1`) against the relay's default, many
//! keys in flight at once, in the same run.
//!
//! Each run writes `BENCH_MESSAGES` CloudEvents (the services' own
//! [`integration::outbox_message`], 200-byte JSON bodies) over `BENCH_KEYS`
//! keys into an empty outbox, then times one relay publishing them through
//! [`integration::BrokerPublisher`] until none is pending: every message
//! confirmed by its broker (RabbitMQ publisher confirm of a persistent
//! message routed to a durable queue, Kafka `acks=all` idempotent delivery
//! report, JetStream publish ack) and marked published. The two sides take
//! turns going first over `BENCH_ROUNDS` rounds; reported per broker are the
//! median rates and their ratio.
//!
//! ```text
//! cargo bench -p integration --bench relay
//! BENCH_MESSAGES=5000 BENCH_KEYS=500 BENCH_ROUNDS=5 BENCH_BROKERS=rabbitmq,kafka,nats \
//!     cargo bench -p integration --bench relay
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use eventstore::outbox::pending_count;
use eventstore::{OutboxRelay, RelayConfig, enqueue_all};
use integration::{BrokerPublisher, EventAttributes, outbox_message};
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use messaging::{
    Broker, DestinationSpec, Kafka, KafkaConfig, Nats, NatsConfig, RabbitMq, RabbitMqConfig,
};
use sqlx::PgPool;
use testkit::bench::{median, setting};

const SOURCE: &str = "/ferrishop/relay-bench";

struct Settings {
    messages: usize,
    keys: usize,
    rounds: usize,
}

/// A broker with a fresh destination the benchmark alone uses.
struct Target {
    name: String,
    broker: Broker,
    destination: String,
    /// RabbitMQ's queue bound to the destination, deleted at the end.
    queue: Option<(Connection, String)>,
}

async fn target(name: &str) -> Target {
    let connection_name = testkit::brokers::unique_name("relay-bench");
    let destination = testkit::brokers::unique_name("relay-bench");
    let broker = match name {
        "rabbitmq" => RabbitMq::new(RabbitMqConfig::new(
            testkit::brokers::rabbitmq().await,
            &connection_name,
        ))
        .into_broker(SOURCE),
        "kafka" => Kafka::new(KafkaConfig::new(
            testkit::brokers::kafka().await,
            &connection_name,
        ))
        .expect("Kafka client")
        .into_broker(SOURCE),
        "nats" => Nats::new(NatsConfig::new(
            testkit::brokers::nats().await,
            &connection_name,
        ))
        .into_broker(SOURCE),
        other => panic!("unknown broker {other}: rabbitmq, kafka or nats"),
    };
    broker
        .ensure_destination(&DestinationSpec::new(&destination).with_partitions(3))
        .await
        .expect("destination");
    let queue = if name == "rabbitmq" {
        Some(bound_queue(&destination).await)
    } else {
        None
    };
    Target {
        name: name.to_owned(),
        broker,
        destination,
        queue,
    }
}

/// A durable queue taking every message of `exchange`, so RabbitMQ confirms
/// a message once it is written to a queue, as it does in the platform.
async fn bound_queue(exchange: &str) -> (Connection, String) {
    let url = testkit::brokers::rabbitmq().await;
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ connection");
    let channel = connection.create_channel().await.expect("channel");
    let queue = format!("{exchange}.queue");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    (connection, queue)
}

/// Writes `settings.messages` events over `settings.keys` keys, a hundred
/// to a transaction.
async fn fill_outbox(pool: &PgPool, destination: &str, settings: &Settings) {
    let body = serde_json::json!({ "note": "x".repeat(180) });
    let keys: Vec<String> = (0..settings.keys)
        .map(|key| format!("order-{key}"))
        .collect();
    for chunk in (0..settings.messages).collect::<Vec<_>>().chunks(100) {
        let messages: Vec<_> = chunk
            .iter()
            .map(|index| {
                let key = &keys[index % keys.len()];
                let attributes = EventAttributes {
                    topic: destination,
                    source: SOURCE,
                    event_type: "bench.happened",
                    key,
                    subject: key,
                    time: None,
                };
                outbox_message(&attributes, &body).expect("message")
            })
            .collect();
        let mut transaction = pool.begin().await.expect("begin");
        enqueue_all(&mut transaction, &messages)
            .await
            .expect("enqueue");
        transaction.commit().await.expect("commit");
    }
}

/// Messages per second for one relay draining the outbox.
async fn drain(pool: &PgPool, target: &Target, max_in_flight: usize, settings: &Settings) -> f64 {
    sqlx::query("TRUNCATE outbox")
        .execute(pool)
        .await
        .expect("truncate");
    fill_outbox(pool, &target.destination, settings).await;
    let relay = OutboxRelay::new(
        pool.clone(),
        Arc::new(BrokerPublisher::new(target.broker.clone())),
        RelayConfig {
            max_in_flight,
            ..RelayConfig::default()
        },
    );
    let started = Instant::now();
    let mut published = 0;
    while published < settings.messages {
        let pass = relay.relay_once().await.expect("relay pass");
        published += pass.published;
        assert_eq!(pass.parked, 0, "no message parked");
    }
    let elapsed = started.elapsed();
    assert_eq!(pending_count(pool).await.expect("pending"), 0);
    settings.messages as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let settings = Settings {
        messages: setting("BENCH_MESSAGES", 2000),
        keys: setting("BENCH_KEYS", 200).max(1),
        rounds: setting("BENCH_ROUNDS", 3).max(1),
    };
    let brokers = std::env::var("BENCH_BROKERS").unwrap_or_else(|_| "rabbitmq,kafka,nats".into());
    let default_in_flight = RelayConfig::default().max_in_flight;
    let database = testkit::postgres::fresh_database().await;
    eventstore::migrate(&database.pool)
        .await
        .expect("migrations");
    println!(
        "relay throughput: {} messages over {} keys, {} rounds, one relay, batches of {}",
        settings.messages,
        settings.keys,
        settings.rounds,
        RelayConfig::default().batch_size
    );
    println!();
    println!("| broker | one at a time | {default_in_flight} in flight | ratio |");
    println!("|---|---:|---:|---:|");
    for name in brokers.split(',').map(str::trim) {
        let target = target(name).await;
        // Connections, metadata and the destination warmed up by a short run.
        let warm_up = Settings {
            messages: 200,
            ..settings
        };
        drain(&database.pool, &target, default_in_flight, &warm_up).await;
        let (mut sequential, mut pipelined) = (Vec::new(), Vec::new());
        for round in 0..settings.rounds {
            if round % 2 == 0 {
                sequential.push(drain(&database.pool, &target, 1, &settings).await);
                pipelined.push(drain(&database.pool, &target, default_in_flight, &settings).await);
            } else {
                pipelined.push(drain(&database.pool, &target, default_in_flight, &settings).await);
                sequential.push(drain(&database.pool, &target, 1, &settings).await);
            }
        }
        let (sequential, pipelined) = (
            median(sequential).expect("a round ran"),
            median(pipelined).expect("a round ran"),
        );
        println!(
            "| {} | {sequential:.0} msg/s | {pipelined:.0} msg/s | {:.1}× |",
            target.name,
            pipelined / sequential
        );
        if let Some((connection, queue)) = target.queue {
            let channel = connection.create_channel().await.expect("channel");
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .expect("queue delete");
        }
    }
}
