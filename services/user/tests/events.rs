//! `user.registered` reaches Kafka exactly as the outbox row wrote it, also
//! when the broker is down at registration time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use messaging::{Kafka, KafkaConfig, ReceivedMessage, Subscription};
use reqwest::StatusCode;
use serde_json::Value;
use support::{UserService, start, start_with};
use testkit::brokers::unique_name;
use testkit::net::{TcpProxy, free_port};

/// The outbox row of the only message in the outbox.
struct OutboxRow {
    message_id: uuid::Uuid,
    key: String,
    destination: String,
    headers: Value,
    payload: Vec<u8>,
    published: bool,
}

async fn outbox_row(service: &UserService) -> OutboxRow {
    let (message_id, key, destination, headers, payload, published): (
        uuid::Uuid,
        String,
        String,
        Value,
        Vec<u8>,
        bool,
    ) = sqlx::query_as(
        "SELECT message_id, message_key, destination, headers, payload, published_at IS NOT NULL \
           FROM outbox",
    )
    .fetch_one(&service.database.pool)
    .await
    .unwrap();
    OutboxRow {
        message_id,
        key,
        destination,
        headers,
        payload,
        published,
    }
}

/// The first message on the service's events topic, read by a new group.
async fn first_event(service: &UserService, within: Duration) -> ReceivedMessage {
    let brokers = testkit::brokers::kafka().await;
    let kafka = Kafka::new(KafkaConfig::new(brokers, unique_name("user-events-test")))
        .unwrap()
        .into_broker("/ferrishop/user-tests");
    let subscription = Subscription::new(&service.topic, unique_name("group"));
    let mut deliveries = kafka.subscribe(&subscription).await.unwrap();
    let delivery = tokio::time::timeout(within, deliveries.next())
        .await
        .expect("no event on the topic in time")
        .expect("the stream ended")
        .expect("delivery failed");
    let message = delivery.message().clone();
    delivery.ack().await.unwrap();
    message
}

fn assert_matches_outbox(message: &ReceivedMessage, row: &OutboxRow, user_id: &str) {
    assert_eq!(row.destination, message.destination);
    assert_eq!(row.key, user_id);
    assert_eq!(message.key.as_deref(), Some(user_id));
    assert_eq!(message.payload.as_ref(), row.payload.as_slice());
    let header = |name: &str| message.headers.get(name);
    assert_eq!(header("ce_id"), Some(row.message_id.to_string().as_str()));
    assert_eq!(header("ce_type"), Some("user.registered"));
    assert_eq!(header("ce_source"), Some("/ferrishop/user"));
    assert_eq!(header("ce_subject"), Some(user_id));
    assert_eq!(header("content-type"), Some("application/json"));
    for (name, value) in row.headers.as_object().unwrap() {
        if name == "traceparent" || name == "tracestate" {
            continue;
        }
        assert_eq!(header(name), value.as_str(), "header {name}");
    }
    // The broker hop is a child span of the registration's trace.
    let trace_id = |traceparent: &str| traceparent.split('-').nth(1).map(str::to_owned);
    let stored = row.headers["traceparent"]
        .as_str()
        .expect("traceparent in the outbox");
    assert_eq!(header("traceparent").and_then(trace_id), trace_id(stored));

    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload["user_id"], user_id);
    assert_eq!(payload["email"], "ann@example.com");
    assert_eq!(payload["name"], "Test User");
}

#[tokio::test]
async fn user_registered_is_published_as_the_outbox_row_says() {
    testkit::brokers::kafka().await;
    let service = start().await;
    let user_id = service.registered("ann@example.com").await;

    let message = first_event(&service, Duration::from_secs(30)).await;
    let row = outbox_row(&service).await;
    assert_matches_outbox(&message, &row, &user_id);
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_broker_is_down() {
    let kafka = testkit::brokers::kafka().await;
    let port = free_port();
    let service = start_with(|spawn| spawn.env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))).await;

    // Registration does not need the broker.
    let registered = service
        .register("ann@example.com", support::PASSWORD, "Test User")
        .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    let user_id = registered.text("id").to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = outbox_row(&service).await;
    assert!(!pending.published, "nothing can be published yet");

    // The broker comes back.
    let upstream = kafka.split(',').next().unwrap().parse().unwrap();
    let _proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap(), upstream).await;

    let message = first_event(&service, Duration::from_secs(90)).await;
    assert_matches_outbox(&message, &pending, &user_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !outbox_row(&service).await.published {
        assert!(
            std::time::Instant::now() < deadline,
            "the row was never marked published"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
