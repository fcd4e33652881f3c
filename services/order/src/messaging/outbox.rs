//! Everything this service sends leaves through the transactional outbox:
//! integration events (Kafka), status notifications (NATS) and — written by
//! the saga engine — payment commands (RabbitMQ).
//!
//! Nothing is published from a use case. A state change writes its messages
//! into the `outbox` table in its own transaction ([`Announcements`] builds
//! them from the events being recorded), and relays publish committed rows
//! afterwards, so a message goes out if and only if its change committed —
//! also when a broker is down at that moment: the row waits.
//!
//! # One outbox, three brokers
//!
//! The event store's relay knows one [`Publisher`]; [`RoutingPublisher`]
//! picks the broker by destination: the payment commands exchange goes to the
//! commands broker, the events topic to the events broker, subjects under the
//! status prefix to the notifications broker. A destination it does not know
//! is refused for good (parked for an operator) rather than guessed.
//!
//! # A broker that is down holds up its own messages only
//!
//! The event store's relay holds back a destination whose broker cannot
//! take a message and keeps publishing the others, so a Kafka outage delays
//! integration events, not the payment commands behind them, and sagas go on.
//! Events and commands are never dropped: their destination waits until its
//! broker is back.
//!
//! A status notification is a hint (a browser that misses one refreshes),
//! and every order's status subject is a destination of its own, so a NATS
//! outage would cost each order's first notification a full publish timeout.
//! Notifications therefore get a short, bounded try and are then *parked* —
//! logged and kept in the outbox — the explicit fallback the platform asks
//! for ("a failed notification must never fail an order").
//!
//! Several relays run side by side (`OUTBOX_RELAYS`); the event store's
//! partition locks keep each key's messages in order across them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::{OutboxMessage, OutboxRelay, PublishError, Publisher, RelayConfig};
use integration::{EventAttributes, outbox_message};
use messaging::{Broker, DestinationSpec, MessagingError, OutgoingMessage, envelope};
use order_contract::{STATUS_CHANGED, StatusChanged};
use platform::db::Database;
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::contract::{self, LineV1, types};
use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;
use crate::domain::order::{OrderStatus, PlacedOrder};
use crate::error::OrderError;

/// How long an order's last status stays on the notifications stream, for a
/// stream opened later (the gateway's SSE) to start from; only the last one
/// of each order is kept.
const STATUS_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Where this service's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    /// The payment service's commands exchange.
    pub commands_exchange: String,
    /// This service's integration events topic.
    pub events_topic: String,
    /// Status subjects are `<status_prefix>.<order id>.status`.
    pub status_prefix: String,
}

impl Destinations {
    pub fn status_subject(&self, order_id: OrderId) -> String {
        order_contract::status_subject(&self.status_prefix, order_id)
    }

    fn route(&self, destination: &str) -> Option<Route> {
        if destination == self.commands_exchange {
            Some(Route::Commands)
        } else if destination == self.events_topic {
            Some(Route::Events)
        } else if destination
            .strip_prefix(&self.status_prefix)
            .is_some_and(|rest| rest.starts_with('.'))
        {
            Some(Route::Notifications)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Commands,
    Events,
    Notifications,
}

/// Builds the outbox messages that announce an order's new events.
#[derive(Debug, Clone)]
pub struct Announcements {
    destinations: Destinations,
}

impl Announcements {
    pub fn new(destinations: Destinations) -> Self {
        Self { destinations }
    }

    /// The integration event and the status notification of each event that
    /// changes what others see (`order` is the state after `events`).
    pub fn for_events(
        &self,
        order: &PlacedOrder,
        events: &[OrderEvent],
    ) -> Result<Vec<OutboxMessage>, OrderError> {
        let mut messages = Vec::new();
        for event in events {
            let (status, failure_reason) = match event {
                OrderEvent::Placed(e) => {
                    messages.push(self.event(
                        types::PLACED,
                        order,
                        &contract::OrderPlacedV1 {
                            order_id: order.id,
                            customer_id: order.customer_id,
                            lines: LineV1::all(&e.lines),
                            total: e.total,
                            placed_at: e.at,
                        },
                    )?);
                    (OrderStatus::Pending, None)
                }
                OrderEvent::Confirmed(e) => {
                    messages.push(self.event(
                        types::CONFIRMED,
                        order,
                        &contract::OrderConfirmedV1 {
                            order_id: order.id,
                            customer_id: order.customer_id,
                            lines: LineV1::all(&order.lines),
                            total: order.total(),
                            payment_id: order.payment_id,
                            confirmed_at: e.at,
                        },
                    )?);
                    (OrderStatus::Confirmed, None)
                }
                OrderEvent::Rejected(e) => {
                    messages.push(self.event(
                        types::REJECTED,
                        order,
                        &contract::OrderRejectedV1 {
                            order_id: order.id,
                            customer_id: order.customer_id,
                            reason: e.reason.to_string(),
                            rejected_at: e.at,
                        },
                    )?);
                    (OrderStatus::Rejected, Some(e.reason.to_string()))
                }
                OrderEvent::Cancelled(e) => {
                    messages.push(self.event(
                        types::CANCELLED,
                        order,
                        &contract::OrderCancelledV1 {
                            order_id: order.id,
                            customer_id: order.customer_id,
                            lines: LineV1::all(&order.lines),
                            total: order.total(),
                            cancelled_at: e.at,
                        },
                    )?);
                    (OrderStatus::Cancelled, None)
                }
                OrderEvent::StockReserved(_)
                | OrderEvent::PaymentCompleted(_)
                | OrderEvent::CancellationRequested(_)
                | OrderEvent::CancellationRejected(_) => continue,
            };
            let subject = self.destinations.status_subject(order.id);
            messages.push(self.message(
                &subject,
                STATUS_CHANGED,
                order,
                &StatusChanged {
                    order_id: order.id.as_uuid(),
                    status: status.as_str().to_owned(),
                    failure_reason,
                    occurred_at: event.at(),
                },
            )?);
        }
        Ok(messages)
    }

    fn event<T: Serialize>(
        &self,
        event_type: &str,
        order: &PlacedOrder,
        body: &T,
    ) -> Result<OutboxMessage, OrderError> {
        self.message(&self.destinations.events_topic, event_type, order, body)
    }

    /// A binary-mode CloudEvent keyed by the order (so one order's messages
    /// stay in order), continuing the current trace; its `ce_id` is the
    /// outbox message id.
    fn message<T: Serialize>(
        &self,
        destination: &str,
        event_type: &str,
        order: &PlacedOrder,
        body: &T,
    ) -> Result<OutboxMessage, OrderError> {
        let key = order.id.to_string();
        let attributes = EventAttributes {
            topic: destination,
            source: contract::SOURCE,
            event_type,
            key: &key,
            subject: &key,
            time: None,
        };
        outbox_message(&attributes, body).map_err(OrderError::internal)
    }
}

/// How long one try to publish a notification may take, and how many tries
/// it gets before it is parked.
const NOTIFICATION_TRY_TIMEOUT: Duration = Duration::from_secs(2);
const NOTIFICATION_TRIES: u32 = 2;
/// After a notification could not be delivered, the following ones are
/// parked at once for this long rather than each costing the relay its
/// tries: an outage must not slow down the commands behind them.
const NOTIFICATION_PAUSE: Duration = Duration::from_secs(10);

/// Publishes outbox rows through the broker their destination belongs to.
#[derive(Debug)]
pub struct RoutingPublisher {
    destinations: Destinations,
    commands: Broker,
    events: Broker,
    notifications: Broker,
    /// The JetStream stream that stores status notifications, created on
    /// first use (so a NATS outage at start-up holds nothing else up).
    status_stream: OnceCell<()>,
    /// Until when notifications are parked without a try.
    paused_until: Mutex<Option<Instant>>,
}

impl RoutingPublisher {
    pub fn new(
        destinations: Destinations,
        commands: Broker,
        events: Broker,
        notifications: Broker,
    ) -> Self {
        Self {
            destinations,
            commands,
            events,
            notifications,
            status_stream: OnceCell::new(),
            paused_until: Mutex::new(None),
        }
    }

    /// A row as the message to publish.
    fn outgoing(message: &OutboxMessage) -> OutgoingMessage {
        let mut headers = message.headers.clone();
        headers
            .entry(envelope::ID.to_owned())
            .or_insert_with(|| message.id.to_string());
        OutgoingMessage::from_parts(
            &message.destination,
            Some(message.key.clone()),
            headers,
            message.payload.clone(),
        )
    }

    async fn send(broker: &Broker, outgoing: OutgoingMessage) -> Result<(), MessagingError> {
        broker.publish(outgoing).await.map(drop)
    }

    async fn notify(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        let paused = self
            .paused_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until);
        if paused {
            return Err(PublishError::Rejected(
                "notification not tried: the notifications broker failed moments ago".into(),
            ));
        }
        let mut last_error = String::new();
        for _ in 0..NOTIFICATION_TRIES {
            let attempt = async {
                self.status_stream
                    .get_or_try_init(|| async {
                        let spec = DestinationSpec::new(&self.destinations.status_prefix)
                            .latest_per_subject()
                            .with_max_age(STATUS_RETENTION);
                        self.notifications.ensure_destination(&spec).await
                    })
                    .await?;
                let outgoing = Self::outgoing(message).with_destination_template(
                    order_contract::status_subject_template(&self.destinations.status_prefix),
                );
                Self::send(&self.notifications, outgoing).await
            };
            match tokio::time::timeout(NOTIFICATION_TRY_TIMEOUT, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_) => {
                    last_error = format!("no confirmation within {NOTIFICATION_TRY_TIMEOUT:?}")
                }
            }
        }
        tracing::warn!(
            destination = %message.destination,
            error = %last_error,
            pause_s = NOTIFICATION_PAUSE.as_secs(),
            "status notification not delivered; parked so it holds up no order"
        );
        if let Ok(mut until) = self.paused_until.lock() {
            *until = Some(Instant::now() + NOTIFICATION_PAUSE);
        }
        Err(PublishError::Rejected(format!(
            "notification not delivered: {last_error}"
        )))
    }
}

#[async_trait::async_trait]
impl Publisher for RoutingPublisher {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        // A payment command must reach a queue: one the broker confirmed but
        // could route nowhere would be lost while its row said published.
        let (broker, outgoing) = match self.destinations.route(&message.destination) {
            Some(Route::Commands) => (&self.commands, Self::outgoing(message).must_be_routed()),
            Some(Route::Events) => (&self.events, Self::outgoing(message)),
            Some(Route::Notifications) => return self.notify(message).await,
            None => {
                return Err(PublishError::Rejected(format!(
                    "no broker is configured for destination {:?}",
                    message.destination
                )));
            }
        };
        Self::send(broker, outgoing).await.map_err(classify)
    }
}

/// Only a message that can never be sent is parked; anything that might be
/// the broker's passing trouble is retried.
fn classify(error: MessagingError) -> PublishError {
    match error {
        MessagingError::TooLarge { .. } | MessagingError::Invalid { .. } => {
            PublishError::Rejected(error.to_string())
        }
        other => PublishError::Unavailable(other.to_string()),
    }
}

/// Runs `relays` outbox relays until `cancel` fires: waits for the migrated
/// schema, then publishes, while the commands exchange and the events topic
/// are created (retried until their broker answers; until then their
/// messages wait in the outbox, and the other destination's go out).
pub async fn relay(
    database: Database,
    publisher: RoutingPublisher,
    relays: u32,
    cancel: CancellationToken,
) {
    if !database.migrated_unless_cancelled(&cancel).await {
        return;
    }
    let publisher = Arc::new(publisher);
    let essentials = [
        (
            &publisher.commands,
            DestinationSpec::new(&publisher.destinations.commands_exchange),
        ),
        (
            &publisher.events,
            DestinationSpec::new(&publisher.destinations.events_topic),
        ),
    ];
    let created = essentials.map(|(broker, spec)| {
        let cancel = cancel.clone();
        async move { integration::ensure_destination(broker, &spec, &cancel).await }
    });
    let config = RelayConfig {
        idle_interval: Duration::from_millis(100),
        ..RelayConfig::default()
    };
    let relays = (0..relays.max(1)).map(|_| {
        let publisher: Arc<dyn Publisher> = publisher.clone();
        let relay = OutboxRelay::new(database.pool().clone(), publisher, config.clone());
        let cancel = cancel.clone();
        async move { relay.run(cancel).await }
    });
    futures::join!(
        futures::future::join_all(created),
        futures::future::join_all(relays)
    );
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::events::{OrderConfirmed, OrderPlaced, StockReserved};
    use crate::domain::ids::{CustomerId, ProductId};
    use crate::domain::items::tests::offer;
    use crate::domain::items::{OrderItem, OrderItems, Quantity};

    fn destinations() -> Destinations {
        Destinations {
            commands_exchange: "commands".into(),
            events_topic: "events".into(),
            status_prefix: "shop.orders".into(),
        }
    }

    #[test]
    fn destinations_route_to_their_broker() {
        let destinations = destinations();
        assert_eq!(destinations.route("commands"), Some(Route::Commands));
        assert_eq!(destinations.route("events"), Some(Route::Events));
        let subject = destinations.status_subject(OrderId::generate());
        assert_eq!(destinations.route(&subject), Some(Route::Notifications));
        assert_eq!(destinations.route("shop.ordersX.1.status"), None);
        assert_eq!(destinations.route("elsewhere"), None);
    }

    #[test]
    fn status_changes_become_an_event_and_a_notification() {
        let product = ProductId::from_uuid(Uuid::now_v7());
        let lines = OrderItems::parse(vec![OrderItem {
            product_id: product,
            quantity: Quantity::new(2).unwrap(),
        }])
        .unwrap()
        .price(&[offer(product, 500)])
        .unwrap();
        let order_id = OrderId::generate();
        let placed = OrderPlaced {
            order_id,
            customer_id: CustomerId::from_uuid(Uuid::now_v7()),
            total: lines.total(),
            lines: lines.clone(),
            at: Utc::now(),
        };
        let order = PlacedOrder {
            id: order_id,
            customer_id: placed.customer_id,
            lines,
            status: OrderStatus::Confirmed,
            stock_reserved: true,
            payment_id: None,
            failure_reason: None,
            cancellation: None,
            placed_at: placed.at,
            updated_at: placed.at,
        };
        let events = [
            OrderEvent::Placed(placed),
            OrderEvent::StockReserved(StockReserved { at: Utc::now() }),
            OrderEvent::Confirmed(OrderConfirmed { at: Utc::now() }),
        ];
        let messages = Announcements::new(destinations())
            .for_events(&order, &events)
            .unwrap();
        let kinds: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.destination.as_str(), m.headers["ce_type"].as_str()))
            .collect();
        let subject = destinations().status_subject(order_id);
        assert_eq!(
            kinds,
            vec![
                ("events", types::PLACED),
                (subject.as_str(), STATUS_CHANGED),
                ("events", types::CONFIRMED),
                (subject.as_str(), STATUS_CHANGED),
            ]
        );
        for message in &messages {
            assert_eq!(message.key, order_id.to_string());
            assert_eq!(message.headers["ce_id"], message.id.to_string());
        }
        let confirmed: contract::OrderConfirmedV1 =
            serde_json::from_slice(&messages[2].payload).unwrap();
        assert_eq!(confirmed.lines[0].line_total.amount(), 1000);
        let status: StatusChanged = serde_json::from_slice(&messages[3].payload).unwrap();
        assert_eq!(status.status, "CONFIRMED");
    }
}
