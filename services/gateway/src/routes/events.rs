//! `GET /api/v1/orders/{id}/events`: an order's status as Server-Sent Events.
//!
//! The order service announces every status an order reaches on the NATS
//! subject `<ORDER_STATUS_SUBJECT_PREFIX>.<id>.status` (its outbox publishes
//! them through JetStream, so they are also stored; a core subscription
//! receives them all the same). A browser following its order wants the
//! current status at once and each change as it happens, so the stream:
//!
//! 1. checks that the id is a UUID — it becomes part of a subject, and `*`
//!    or `>` there would follow every order;
//! 2. subscribes to the order's subject (core NATS: a live view needs no
//!    consumer state on the server, and the subscription ends with the
//!    connection) *before* reading the order, so a change landing between
//!    the read and the subscription cannot be missed;
//! 3. reads the order through the order service's `GetOrder` with the
//!    caller's identity: another user's order (or a missing one) is a 404
//!    problem, answered before any stream starts;
//! 4. sends the current status, then each change, as an event named
//!    `status` whose data is [`OrderStatusEvent`] JSON;
//! 5. ends after a terminal status.
//!
//! # Duplicates and stale answers
//!
//! The status read in step 3 and the notifications overlap (a notification
//! of the status just read may still arrive), and a read model can lag
//! behind a notification. So the first status sent is the further along of
//! the order as read and the last notification stored for it (JetStream
//! keeps them): a stream opened just after the order settled starts from
//! the settled status, not from a stale one it would then hold for a
//! recheck. Statuses only move forward (PENDING → CONFIRMED
//! | REJECTED, CONFIRMED → CANCELLED), so the stream sends a status only if
//! it is further along than the last one sent; anything else is a duplicate
//! or stale and is dropped.
//!
//! # When the stream ends
//!
//! DESIGN.md calls CONFIRMED, REJECTED and CANCELLED terminal, and the
//! route "closes after a terminal status", so the stream ends after any of
//! them — a client watching its order sees PENDING, then CONFIRMED or
//! REJECTED, and is done. CONFIRMED can still become CANCELLED; a client
//! that asked for a cancellation and opens the stream while it runs (the
//! order is CONFIRMED with `cancellation_pending`) is not done: that stream
//! stays open until CANCELLED, or until a re-read shows the cancellation
//! was refused (then it sends CONFIRMED without `cancellation_pending` and
//! ends).
//!
//! # Missed notifications
//!
//! Notifications are a hint: the order service parks one NATS could not
//! take rather than hold up an order. So the stream also re-reads the order
//! every [`RECHECK`] (every [`RECHECK_WITHOUT_FEED`] when it has no NATS
//! subscription — NATS down or the subscription lost), and an order whose
//! notification never comes still reaches its terminal status on the
//! stream. With NATS down the route works, only with polling latency.
//!
//! # Connection, heartbeats, disconnects
//!
//! Every 15 s without an event the stream sends a comment line, so proxies
//! and browsers keep an idle connection open. When the client goes away,
//! axum drops the stream, and with it the NATS subscription (async-nats
//! unsubscribes on drop). At shutdown every stream ends, so open streams do
//! not hold the process up until its shutdown deadline.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use messaging::propagation::NatsHeaderExtractor;
use opentelemetry::trace::TraceContextExt;
use order_contract::StatusChanged;
use platform::problem::PathParams;
use platform::telemetry::SpanTrace;
use proto::ferrishop::order::v1 as pb;
use proto::ferrishop::order::v1::order_service_client::OrderServiceClient;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tower_http::request_id::RequestId;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;
use uuid::Uuid;

use super::orders::OrderStatus;
use super::translation::{self, ProblemDocument};
use super::{AppState, upstream_request};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rate_limit::{StreamSlot, Subject};
use crate::upstreams::GrpcUpstream;

/// The SSE event name of a status.
pub const EVENT_NAME: &str = "status";
/// A comment line is sent after this long without an event.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// When a caller holding all its open streams may try again.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often an open stream re-reads its order, in case a notification was
/// lost.
pub const RECHECK: Duration = Duration::from_secs(15);
/// The same, for a stream without a NATS subscription.
pub const RECHECK_WITHOUT_FEED: Duration = Duration::from_secs(2);
/// How long a request waits for the NATS connection before it goes on
/// without a subscription.
const NATS_WAIT: Duration = Duration::from_secs(1);

/// How far along an order's life a status is: statuses never go back.
fn rank(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Pending => 0,
        OrderStatus::Confirmed => 1,
        OrderStatus::Rejected | OrderStatus::Cancelled => 2,
    }
}

/// The data of one `status` event: the status an order reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderStatusEvent {
    /// The order's id.
    pub id: Uuid,
    /// The status reached.
    pub status: OrderStatus,
    /// Why a REJECTED order was rejected, as a stable code
    /// (`INSUFFICIENT_STOCK`, `INSUFFICIENT_FUNDS`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// A CONFIRMED order whose cancellation is running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancellation_pending: bool,
    /// When the order reached the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl OrderStatusEvent {
    /// The current status of an order read through `GetOrder`.
    pub fn of_order(order: &pb::Order) -> Result<Self, ApiError> {
        let id = Uuid::parse_str(&order.id)
            .map_err(|_| ApiError::Internal(format!("order id {:?} is not a UUID", order.id)))?;
        let status = OrderStatus::try_from(order.status)?;
        Ok(Self {
            id,
            status,
            failure_reason: Some(order.failure_reason.clone()).filter(|reason| !reason.is_empty()),
            cancellation_pending: order.cancellation_pending,
            occurred_at: translation::optional_timestamp(order.updated_at),
        })
    }

    /// An `order.status_changed` notification of order `id`.
    fn of_notification(id: Uuid, payload: &[u8]) -> Result<Self, String> {
        let notification: StatusChanged =
            serde_json::from_slice(payload).map_err(|error| error.to_string())?;
        if notification.order_id != id {
            return Err(format!(
                "the notification is about order {}",
                notification.order_id
            ));
        }
        let status = OrderStatus::parse(&notification.status)
            .map_err(|error| format!("status {:?} {error}", notification.status))?;
        Ok(Self {
            id,
            status,
            failure_reason: notification
                .failure_reason
                .filter(|reason| !reason.is_empty()),
            cancellation_pending: false,
            occurred_at: Some(notification.occurred_at),
        })
    }

    /// The SSE event: `event: status`, the JSON as data.
    pub fn to_sse(&self) -> Event {
        Event::default()
            .event(EVENT_NAME)
            .json_data(self)
            .unwrap_or_else(|_| Event::default().comment("unserializable status"))
    }
}

/// What the stream has told its client so far, and so whether an update is
/// news and whether the stream is done.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    /// The last status sent and whether it had a cancellation pending.
    last: Option<(OrderStatus, bool)>,
}

impl Tracker {
    /// Whether `update` is news to the client (it then counts as sent).
    /// `knows_pending`: the update comes from a read of the order, which
    /// knows whether a cancellation is pending; notifications do not.
    pub fn admit(&mut self, update: &OrderStatusEvent, knows_pending: bool) -> bool {
        let news = match self.last {
            None => true,
            Some((status, pending)) => {
                rank(update.status) > rank(status)
                    || (update.status == status
                        && knows_pending
                        && update.cancellation_pending != pending)
            }
        };
        if news {
            self.last = Some((update.status, update.cancellation_pending));
        }
        news
    }

    /// Whether the last status sent ends the stream.
    pub fn finished(&self) -> bool {
        match self.last {
            None | Some((OrderStatus::Pending, _)) => false,
            Some((OrderStatus::Confirmed, pending)) => !pending,
            Some((OrderStatus::Rejected | OrderStatus::Cancelled, _)) => true,
        }
    }
}

/// Reads one order with the caller's identity.
#[derive(Debug, Clone)]
struct OrderReader {
    client: OrderServiceClient<GrpcUpstream>,
    id: Uuid,
    caller: Caller,
    request_id: Option<RequestId>,
}

impl OrderReader {
    /// The order's current status; 404 for an order that is not the
    /// caller's (admins included: the route is the owner's).
    async fn current(&self) -> Result<OrderStatusEvent, ApiError> {
        let request = upstream_request(
            pb::GetOrderRequest {
                order_id: self.id.to_string(),
                consistency_token: String::new(),
            },
            Some(&self.caller),
            self.request_id.as_ref(),
        );
        let order = self
            .client
            .clone()
            .get_order(request)
            .await?
            .into_inner()
            .order
            .ok_or_else(|| ApiError::Internal("GetOrder answered without an order".into()))?;
        if order.customer_id != self.caller.user_id.to_string() {
            return Err(self.not_found());
        }
        OrderStatusEvent::of_order(&order)
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(format!("order {} not found", self.id))
    }
}

/// One open stream: the subscription, the re-reads, and what was sent.
struct Follower {
    reader: OrderReader,
    first: Option<OrderStatusEvent>,
    tracker: Tracker,
    feed: Option<BoxStream<'static, Bytes>>,
    recheck: Interval,
    shutdown: CancellationToken,
    /// One of the caller's open streams, for as long as this one lasts.
    _slot: StreamSlot,
}

impl Follower {
    /// The next event to send; `None` ends the stream.
    async fn next_event(&mut self) -> Option<OrderStatusEvent> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if self.tracker.finished() {
                return None;
            }
            let (update, knows_pending) = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                payload = next_payload(&mut self.feed) => match payload {
                    Some(payload) => {
                        match OrderStatusEvent::of_notification(self.reader.id, &payload) {
                            Ok(update) => (update, false),
                            Err(error) => {
                                tracing::warn!(order_id = %self.reader.id, %error, "unreadable status notification");
                                continue;
                            }
                        }
                    }
                    None => {
                        tracing::warn!(order_id = %self.reader.id, "status subscription ended; following the order by re-reading it");
                        self.feed = None;
                        self.recheck = recheck_interval(RECHECK_WITHOUT_FEED);
                        continue;
                    }
                },
                _ = self.recheck.tick() => match self.reader.current().await {
                    Ok(update) => (update, true),
                    // Gone (or no longer the caller's): nothing more to follow.
                    Err(error) if error.problem().status == 404 => return None,
                    Err(error) => {
                        tracing::debug!(order_id = %self.reader.id, %error, "re-reading the order failed");
                        continue;
                    }
                },
            };
            if self.tracker.admit(&update, knows_pending) {
                return Some(update);
            }
        }
    }
}

async fn next_payload(feed: &mut Option<BoxStream<'static, Bytes>>) -> Option<Bytes> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// Ticks every `period`, the first time one period from now.
fn recheck_interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Subscribes to the order's notifications, or returns `None` (and the
/// stream polls) when NATS cannot be reached right now.
async fn subscribe(state: &AppState, id: Uuid) -> Option<BoxStream<'static, Bytes>> {
    let subject = order_contract::status_subject(&state.settings.order_status_subject_prefix, id);
    let client = match tokio::time::timeout(NATS_WAIT, state.nats.client()).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            tracing::warn!(%error, "NATS unavailable; the order stream polls instead");
            return None;
        }
        Err(_) => {
            tracing::warn!("NATS not connected yet; the order stream polls instead");
            return None;
        }
    };
    match client.subscribe(subject.clone()).await {
        Ok(subscriber) => {
            // The subscription is on its way to the server before the order
            // is read (it is buffered until then otherwise).
            if let Err(error) = client.flush().await {
                tracing::debug!(%error, "flushing the subscription failed");
            }
            let follower = tracing::Span::current()
                .trace_context()
                .span()
                .span_context()
                .clone();
            Some(
                subscriber
                    .map(move |message| {
                        received(&subject, message.headers.as_ref(), &follower);
                        message.payload
                    })
                    .boxed(),
            )
        }
        Err(error) => {
            tracing::warn!(%error, %subject, "cannot subscribe; the order stream polls instead");
            None
        }
    }
}

/// The last notification stored for the order, if NATS has one and answers
/// within [`NATS_WAIT`].
async fn last_notification(state: &AppState, id: Uuid) -> Option<OrderStatusEvent> {
    let subject = order_contract::status_subject(&state.settings.order_status_subject_prefix, id);
    let lookup = async {
        let jetstream = state.nats.jetstream().await.ok()?;
        let stream = jetstream.stream_by_subject(subject.as_str()).await.ok()?;
        let stored = jetstream
            .get_stream_no_info(stream)
            .await
            .ok()?
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        OrderStatusEvent::of_notification(id, &stored.payload).ok()
    };
    tokio::time::timeout(NATS_WAIT, lookup).await.ok().flatten()
}

/// A consumer span for one notification: the child of the order service's
/// publish span whose context the message's headers carry, so the order's
/// trace reaches the edge, linked to the span of the request following it.
fn received(
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    follower: &opentelemetry::trace::SpanContext,
) {
    let span = tracing::info_span!(
        "messaging.receive",
        otel.name = %format_args!("receive {subject}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.destination.name = subject,
        messaging.operation.type = "receive",
        messaging.operation.name = "receive",
    );
    if let Some(headers) = headers {
        let parent = messaging::propagation::extract(&NatsHeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.continue_trace(parent);
        }
    }
    if follower.is_valid() {
        span.add_link(follower.clone());
    }
}

/// `GET /api/v1/orders/{id}/events`.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/events",
    tag = "orders",
    operation_id = "follow_order",
    summary = "Follow an order's status (Server-Sent Events)",
    description = "The current status first, then one event per change; the stream \
        ends after CONFIRMED, REJECTED or CANCELLED (a CONFIRMED order with a \
        cancellation pending is followed until CANCELLED). Each event is named \
        `status` and carries an OrderStatusEvent as JSON data; a comment line is \
        sent every 15 s without events.",
    params(("id" = Uuid, Path, description = "The order's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = OrderStatusEvent),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The order service is unavailable", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn follow_order(
    State(state): State<AppState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = translation::path_uuid("id", &id)?;
    let slot = state
        .rate_limiter
        .open_stream(Subject::User(caller.user_id))
        .ok_or(ApiError::RateLimited {
            retry_after: STREAM_RETRY_AFTER,
        })?;
    let feed = subscribe(&state, id).await;
    let reader = OrderReader {
        client: state.services.order.clone(),
        id,
        caller,
        request_id: request_id.map(|Extension(id)| id),
    };
    let mut first = reader.current().await?;
    if feed.is_some()
        && let Some(stored) = last_notification(&state, id).await
        && rank(stored.status) > rank(first.status)
    {
        first = stored;
    }
    let mut tracker = Tracker::default();
    tracker.admit(&first, true);
    let period = if feed.is_some() {
        RECHECK
    } else {
        RECHECK_WITHOUT_FEED
    };
    let follower = Follower {
        reader,
        first: Some(first),
        tracker,
        feed,
        recheck: recheck_interval(period),
        shutdown: state.shutdown.clone(),
        _slot: slot,
    };
    let events = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next_event().await?;
        Some((Ok::<_, Infallible>(event.to_sse()), follower))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    // Reverse proxies that buffer responses (nginx) would hold events back.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;

    fn event(status: OrderStatus) -> OrderStatusEvent {
        OrderStatusEvent {
            id: Uuid::nil(),
            status,
            failure_reason: None,
            cancellation_pending: false,
            occurred_at: None,
        }
    }

    fn pending_cancellation() -> OrderStatusEvent {
        OrderStatusEvent {
            cancellation_pending: true,
            ..event(OrderStatus::Confirmed)
        }
    }

    /// The bytes an SSE response writes for `events`.
    async fn wire(events: Vec<OrderStatusEvent>) -> String {
        let stream = futures::stream::iter(
            events
                .into_iter()
                .map(|event| Ok::<_, Infallible>(event.to_sse())),
        );
        let body = Sse::new(stream).into_response().into_body();
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_event_is_named_status_with_the_json_as_data() {
        let id = Uuid::now_v7();
        let rejected = OrderStatusEvent {
            id,
            status: OrderStatus::Rejected,
            failure_reason: Some("INSUFFICIENT_FUNDS".into()),
            cancellation_pending: false,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0),
        };
        let text = wire(vec![event(OrderStatus::Pending), rejected]).await;
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(frames.len(), 2, "{text:?}");
        assert_eq!(
            frames[0],
            format!(
                "event: status\ndata: {{\"id\":\"{}\",\"status\":\"PENDING\"}}",
                Uuid::nil()
            )
        );
        let (name, data) = frames[1].split_once('\n').unwrap();
        assert_eq!(name, "event: status");
        let data: serde_json::Value =
            serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            data,
            json!({
                "id": id,
                "status": "REJECTED",
                "failure_reason": "INSUFFICIENT_FUNDS",
                "occurred_at": "2023-11-14T22:13:20Z"
            })
        );
    }

    #[test]
    fn a_pending_cancellation_is_shown() {
        let data = serde_json::to_value(pending_cancellation()).unwrap();
        assert_eq!(data["status"], "CONFIRMED");
        assert_eq!(data["cancellation_pending"], true);
    }

    #[test]
    fn notifications_of_the_order_service_are_read() {
        let id = Uuid::now_v7();
        let payload = json!({
            "order_id": id,
            "status": "REJECTED",
            "failure_reason": "INSUFFICIENT_STOCK",
            "occurred_at": "2025-01-01T12:00:00.5Z"
        });
        let update = OrderStatusEvent::of_notification(id, payload.to_string().as_bytes()).unwrap();
        assert_eq!(update.status, OrderStatus::Rejected);
        assert_eq!(update.failure_reason.as_deref(), Some("INSUFFICIENT_STOCK"));
        assert!(update.occurred_at.is_some());

        let bare =
            json!({"order_id": id, "status": "CONFIRMED", "occurred_at": "2025-01-01T12:00:00Z"});
        let update = OrderStatusEvent::of_notification(id, bare.to_string().as_bytes()).unwrap();
        assert_eq!(update.status, OrderStatus::Confirmed);
        assert_eq!(update.failure_reason, None);
    }

    #[test]
    fn unreadable_or_foreign_notifications_are_refused() {
        let id = Uuid::now_v7();
        for payload in [
            json!({"order_id": id, "status": "SHIPPED", "occurred_at": "2025-01-01T12:00:00Z"})
                .to_string(),
            json!({"order_id": Uuid::now_v7(), "status": "CONFIRMED", "occurred_at": "2025-01-01T12:00:00Z"})
                .to_string(),
            json!({"order_id": id, "status": "CONFIRMED"}).to_string(),
            "not json".to_owned(),
        ] {
            assert!(
                OrderStatusEvent::of_notification(id, payload.as_bytes()).is_err(),
                "{payload}"
            );
        }
    }

    #[test]
    fn orders_read_through_grpc_become_events() {
        let id = Uuid::now_v7();
        let order = pb::Order {
            id: id.to_string(),
            status: pb::OrderStatus::Confirmed.into(),
            cancellation_pending: true,
            updated_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..pb::Order::default()
        };
        let event = OrderStatusEvent::of_order(&order).unwrap();
        assert_eq!(event.id, id);
        assert_eq!(event.status, OrderStatus::Confirmed);
        assert!(event.cancellation_pending);
        assert_eq!(event.failure_reason, None);
        assert_eq!(
            event.occurred_at,
            DateTime::from_timestamp(1_700_000_000, 0)
        );

        let unspecified = pb::Order {
            id: id.to_string(),
            ..pb::Order::default()
        };
        assert!(OrderStatusEvent::of_order(&unspecified).is_err());
    }

    #[test]
    fn duplicates_and_stale_statuses_are_not_sent() {
        let mut tracker = Tracker::default();
        assert!(tracker.admit(&event(OrderStatus::Pending), true));
        // The notification of the status just read.
        assert!(!tracker.admit(&event(OrderStatus::Pending), false));
        assert!(!tracker.finished());
        assert!(tracker.admit(&event(OrderStatus::Confirmed), false));
        // A lagging read model still says PENDING.
        assert!(!tracker.admit(&event(OrderStatus::Pending), true));
        assert!(!tracker.admit(&event(OrderStatus::Confirmed), true));
        assert!(tracker.finished());
    }

    #[test]
    fn terminal_statuses_end_the_stream() {
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            let mut tracker = Tracker::default();
            tracker.admit(&event(status), true);
            assert!(tracker.finished(), "{status:?}");
        }
        let mut tracker = Tracker::default();
        tracker.admit(&event(OrderStatus::Pending), true);
        assert!(!tracker.finished());
    }

    #[test]
    fn a_running_cancellation_is_followed_to_its_end() {
        let mut tracker = Tracker::default();
        assert!(tracker.admit(&pending_cancellation(), true));
        assert!(!tracker.finished());
        // A notification cannot tell whether the cancellation still runs.
        assert!(!tracker.admit(&event(OrderStatus::Confirmed), false));
        assert!(!tracker.finished());
        assert!(tracker.admit(&event(OrderStatus::Cancelled), false));
        assert!(tracker.finished());

        // Refused: a re-read shows CONFIRMED with nothing pending.
        let mut tracker = Tracker::default();
        tracker.admit(&pending_cancellation(), true);
        assert!(tracker.admit(&event(OrderStatus::Confirmed), true));
        assert!(tracker.finished());
    }
}
