//! Publish throughput with broker confirmation on, this crate's API next to a
//! minimal raw client loop, per broker, in the same run.
//!
//! Three sides: the raw client with a bare message; the raw client with
//! headers the size of the CloudEvents envelope the API adds (and, on NATS,
//! the `Nats-Msg-Id` de-duplication the API turns on) — which separates what
//! the envelope costs the broker from what the API's own code costs; and the
//! API, recording its publish metric into the Prometheus recorder the
//! services install (no tracing subscriber: the producer span is disabled,
//! as it is in a service that exports no traces). Every side publishes the
//! same 1 KiB payloads with the same keys, the same number of publishes in
//! flight, each waiting for its own confirmation (RabbitMQ publisher confirm
//! of a persistent message routed to a durable queue, Kafka `acks=all`
//! idempotent delivery report, JetStream publish ack).
//!
//! Each round runs the three sides in a rotating order, emptying the queue or
//! stream between runs. Reported: each side's best round, the ratios of those,
//! and the median over rounds of the API's rate over the raw sides' rates in
//! the same round — on a shared machine the fairer figure, since a burst from
//! another process lands on one side's run, not on a whole round's. Also the
//! client's CPU time per message (all threads of this process, lowest round),
//! which separates the API's own cost from the broker's.
//!
//! ```text
//! cargo bench -p messaging --bench publish_throughput
//! BENCH_MESSAGES=20000 BENCH_IN_FLIGHT=128 BENCH_ROUNDS=3 BENCH_BROKERS=rabbitmq,kafka,nats \
//!     cargo bench -p messaging --bench publish_throughput
//! ```
//!
//! `BENCH_SIDES=api` (or `raw`, `raw+env`, comma-separated) runs only those
//! sides, e.g. under a profiler; `BENCH_VERBOSE=1` prints every run;
//! `BENCH_NO_RECORDER=1` leaves the metrics recorder out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use messaging::{
    Broker, DestinationSpec, Kafka, KafkaConfig, Nats, NatsConfig, OutgoingMessage, RabbitMq,
    RabbitMqConfig,
};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use testkit::bench::{median, setting};

struct Settings {
    messages: usize,
    in_flight: usize,
    rounds: usize,
    payload: Bytes,
}

/// CPU time this process has used so far (all threads), from
/// `/proc/self/task/*/schedstat`; `None` where that is not available.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// One side's run: throughput and the client's CPU time per message.
#[derive(Clone, Copy, Default)]
struct Run {
    rate: f64,
    cpu_per_message: Option<Duration>,
}

/// Runs `publish(i)` for `messages` indices with `in_flight` tasks.
async fn measure<F, Fut>(settings: &Settings, publish: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let publish = Arc::new(publish);
    let per_task = settings.messages / settings.in_flight;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = (0..settings.in_flight)
        .map(|task| {
            let publish = publish.clone();
            tokio::spawn(async move {
                for n in 0..per_task {
                    publish(task * per_task + n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let sent = per_task * settings.in_flight;
    let cpu_per_message = cpu_before
        .zip(process_cpu())
        .map(|(before, after)| after.saturating_sub(before) / u32::try_from(sent).unwrap());
    Run {
        rate: sent as f64 / elapsed.as_secs_f64(),
        cpu_per_message,
    }
}

fn key(i: usize) -> String {
    format!("key-{}", i % 64)
}

/// Headers with the names and sizes of the envelope the API adds.
fn envelope(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("ce_id", uuid::Uuid::now_v7().to_string()),
        ("ce_specversion", "1.0".into()),
        ("ce_source", "/bench".into()),
        ("ce_type", "bench-01a2040bd5a07a4e9d4e3cfd7a3c1f10".into()),
        ("ce_time", "2026-11-22T16:43:01.123456Z".into()),
        ("ce_partitionkey", key(i)),
    ]
}

/// The three sides, as `BENCH_SIDES` and `BENCH_VERBOSE` name them.
const SIDES: [&str; 3] = ["raw", "raw+env", "api"];

/// Which sides a run measures (`BENCH_SIDES`; all three by default), e.g.
/// `api` alone under a profiler.
fn measured(column: usize) -> bool {
    std::env::var("BENCH_SIDES").map_or(true, |sides| {
        sides.split(',').any(|side| side.trim() == SIDES[column])
    })
}

/// Prints `run` when `BENCH_VERBOSE` is set; the run, for the figures.
fn note(round: usize, column: usize, run: Run) -> Option<Run> {
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        let cpu = run
            .cpu_per_message
            .map_or(f64::NAN, |cpu| cpu.as_secs_f64() * 1e6);
        println!(
            "  round {round} {:<7} {:>8.0} msg/s {cpu:>5.1} µs/msg",
            SIDES[column], run.rate
        );
    }
    Some(run)
}

/// Every round's run of the three sides: raw, raw + envelope, API.
type Figures = Vec<[Option<Run>; 3]>;

/// What one broker's rounds come to.
struct Summary {
    /// Best rate of each side.
    rate: [f64; 3],
    /// Lowest client CPU per message of each side.
    cpu: [Option<Duration>; 3],
    /// Median over rounds of the API's rate over the raw sides' in the same
    /// round (raw, raw + envelope): the fairer ratio on a shared machine,
    /// where another process's burst can favour one side's best round.
    median_ratio: [Option<f64>; 2],
}

fn summarise(figures: &Figures) -> Summary {
    let side = |column: usize| figures.iter().filter_map(move |round| round[column]);
    let rate = [0, 1, 2].map(|column| side(column).map(|run| run.rate).fold(0.0, f64::max));
    let cpu = [0, 1, 2].map(|column| side(column).filter_map(|run| run.cpu_per_message).min());
    let median_ratio = [0, 1].map(|column| {
        median(
            figures
                .iter()
                .filter_map(|round| Some(round[2]?.rate / round[column]?.rate))
                .collect(),
        )
    });
    Summary {
        rate,
        cpu,
        median_ratio,
    }
}

async fn api_round(settings: &Settings, broker: &Broker, destination: &str) -> Run {
    let broker = broker.clone();
    let destination = destination.to_owned();
    let payload = settings.payload.clone();
    measure(settings, move |i| {
        let broker = broker.clone();
        let message = OutgoingMessage::new(destination.clone(), payload.clone()).with_key(key(i));
        async move {
            broker.publish(message).await.unwrap();
        }
    })
    .await
}

async fn rabbitmq(settings: &Settings) -> Figures {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let queue = format!("{exchange}.sink");

    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let setup = connection.create_channel().await.unwrap();
    setup
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    setup
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let channel = Arc::new(channel);

    let broker = RabbitMq::new(RabbitMqConfig::new(&url, "messaging-bench")).into_broker("/bench");
    broker
        .ensure_destination(&DestinationSpec::new(&exchange))
        .await
        .unwrap();

    let mut figures: Figures = vec![[None; 3]; settings.rounds];
    for (round, runs) in figures.iter_mut().enumerate() {
        // Rotating the order keeps a growing queue or stream from favouring
        // whichever side runs first.
        for step in 0..3 {
            let column = (round + step) % 3;
            if !measured(column) {
                continue;
            }
            if column == 2 {
                runs[2] = note(round, 2, api_round(settings, &broker, &exchange).await);
                setup
                    .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                    .await
                    .unwrap();
                continue;
            }
            let with_envelope = column == 1;
            let channel = channel.clone();
            let exchange = exchange.clone();
            let payload = settings.payload.clone();
            let raw = measure(settings, move |i| {
                let channel = channel.clone();
                let exchange = exchange.clone();
                let payload = payload.clone();
                async move {
                    let mut properties = BasicProperties::default().with_delivery_mode(2);
                    if with_envelope {
                        let mut table = FieldTable::default();
                        for (name, value) in envelope(i) {
                            table.insert(name.into(), AMQPValue::LongString(value.into()));
                        }
                        properties = properties.with_headers(table);
                    }
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key(i).into(),
                            BasicPublishOptions::default(),
                            &payload,
                            properties,
                        )
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    assert!(confirm.is_ack());
                }
            })
            .await;
            runs[column] = note(round, column, raw);
            setup
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap();
        }
    }
    let _ = setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = setup
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    figures
}

async fn kafka(settings: &Settings) -> Figures {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let broker = Kafka::new(KafkaConfig::new(&brokers, "messaging-bench"))
        .unwrap()
        .into_broker("/bench");
    broker
        .ensure_destination(&DestinationSpec::new(&topic).with_partitions(3))
        .await
        .unwrap();
    // The producer settings the crate uses.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let producer = Arc::new(producer);

    let mut figures: Figures = vec![[None; 3]; settings.rounds];
    for (round, runs) in figures.iter_mut().enumerate() {
        // Rotating the order keeps a growing queue or stream from favouring
        // whichever side runs first.
        for step in 0..3 {
            let column = (round + step) % 3;
            if !measured(column) {
                continue;
            }
            if column == 2 {
                runs[2] = note(round, 2, api_round(settings, &broker, &topic).await);

                continue;
            }
            let with_envelope = column == 1;
            let producer = producer.clone();
            let topic = topic.clone();
            let payload = settings.payload.clone();
            let raw = measure(settings, move |i| {
                let producer = producer.clone();
                let topic = topic.clone();
                let payload = payload.clone();
                async move {
                    let key = key(i);
                    let mut record = FutureRecord::to(&topic).payload(payload.as_ref()).key(&key);
                    if with_envelope {
                        let mut headers = OwnedHeaders::new();
                        for (name, value) in envelope(i) {
                            headers = headers.insert(Header {
                                key: name,
                                value: Some(&value),
                            });
                        }
                        record = record.headers(headers);
                    }
                    producer
                        .send(record, Timeout::After(Duration::from_secs(30)))
                        .await
                        .unwrap();
                }
            })
            .await;
            runs[column] = note(round, column, raw);
        }
    }
    figures
}

async fn nats(settings: &Settings) -> Figures {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let subject = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let broker = Nats::new(NatsConfig::new(&url, "messaging-bench")).into_broker("/bench");
    // Creates the stream every side publishes to.
    broker
        .ensure_destination(&DestinationSpec::new(&subject))
        .await
        .unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let js = Arc::new(jetstream::new(client));
    let purger = js.clone();
    let stream_name = messaging::nats::sanitize_name(&subject);

    let mut figures: Figures = vec![[None; 3]; settings.rounds];
    for (round, runs) in figures.iter_mut().enumerate() {
        // Rotating the order keeps a growing queue or stream from favouring
        // whichever side runs first.
        for step in 0..3 {
            let column = (round + step) % 3;
            if !measured(column) {
                continue;
            }
            if column == 2 {
                runs[2] = note(round, 2, api_round(settings, &broker, &subject).await);
                purger
                    .get_stream(&stream_name)
                    .await
                    .unwrap()
                    .purge()
                    .await
                    .unwrap();
                continue;
            }
            let with_envelope = column == 1;
            let js = js.clone();
            let subject = subject.clone();
            let payload = settings.payload.clone();
            let raw = measure(settings, move |i| {
                let js = js.clone();
                let subject = subject.clone();
                let payload = payload.clone();
                async move {
                    if with_envelope {
                        let mut headers = async_nats::HeaderMap::new();
                        for (name, value) in envelope(i) {
                            if name == "ce_id" {
                                headers.insert("Nats-Msg-Id", value.as_str());
                            }
                            headers.insert(name, value);
                        }
                        js.publish_with_headers(subject, headers, payload)
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                    } else {
                        js.publish(subject, payload).await.unwrap().await.unwrap();
                    }
                }
            })
            .await;
            runs[column] = note(round, column, raw);
            purger
                .get_stream(&stream_name)
                .await
                .unwrap()
                .purge()
                .await
                .unwrap();
        }
    }
    let _ = js
        .delete_stream(messaging::nats::sanitize_name(&subject))
        .await;
    figures
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    if std::env::var("BENCH_NO_RECORDER").is_err() {
        platform::metrics::install().unwrap();
    }
    let settings = Settings {
        messages: setting("BENCH_MESSAGES", 20_000),
        in_flight: setting("BENCH_IN_FLIGHT", 128).max(1),
        rounds: setting("BENCH_ROUNDS", 3).max(1),
        payload: Bytes::from(vec![b'x'; 1024]),
    };
    let brokers = std::env::var("BENCH_BROKERS").unwrap_or_else(|_| "rabbitmq,kafka,nats".into());
    println!(
        "publish throughput, 1 KiB payload, {} messages per round, {} in flight, {} rounds",
        settings.messages, settings.in_flight, settings.rounds
    );
    println!(
        "best round of each side; ratios: of the best rounds, and (median) the median of the \
         rounds' own ratios"
    );
    println!(
        "{:<9} {:>10} {:>14} {:>10} {:>8} {:>12} {:>17} {:>21}",
        "broker",
        "raw msg/s",
        "raw+env msg/s",
        "API msg/s",
        "API/raw",
        "API/raw+env",
        "median API/raw",
        "median API/raw+env"
    );
    let mut cpu_lines = Vec::new();
    for broker in brokers.split(',').map(str::trim) {
        let figures = match broker {
            "rabbitmq" => rabbitmq(&settings).await,
            "kafka" => kafka(&settings).await,
            "nats" => nats(&settings).await,
            other => {
                eprintln!("unknown broker {other:?} (rabbitmq, kafka, nats)");
                continue;
            }
        };
        let Summary {
            rate: [raw, raw_envelope, api],
            cpu,
            median_ratio,
        } = summarise(&figures);
        let ratio =
            |ratio: Option<f64>| ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
        println!(
            "{broker:<9} {raw:>10.0} {raw_envelope:>14.0} {api:>10.0} {:>8.2} {:>12.2} {:>17} {:>21}",
            api / raw,
            api / raw_envelope,
            ratio(median_ratio[0]),
            ratio(median_ratio[1]),
        );
        let [raw, raw_envelope, api] = cpu.map(|cpu| {
            cpu.map_or_else(
                || "n/a".to_owned(),
                |cpu| format!("{:.1}", cpu.as_secs_f64() * 1e6),
            )
        });
        cpu_lines.push(format!(
            "{broker:<9} client CPU µs/msg (lowest round): raw {raw}, raw+env {raw_envelope}, API {api}"
        ));
    }
    for line in cpu_lines {
        println!("{line}");
    }
}
