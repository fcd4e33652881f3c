//! Deliveries, their settlement, and the stream a subscription yields.
//!
//! The contract every broker adapter implements is at-least-once:
//!
//! - [`Delivery::ack`] is the only thing that removes a message for the group;
//!   a delivery that is dropped, or whose consumer dies, comes back.
//! - [`Delivery::nack`] with `requeue` brings the message back after the
//!   subscription's retry delay, counting an attempt; once `max_attempts` is
//!   reached — or straight away without `requeue` — the message is moved to
//!   the subscription's dead-letter destination with an
//!   [`x-failure-reason`](crate::envelope::FAILURE_REASON) header, so a
//!   poison message stops blocking the queue but is never silently lost.
//! - [`Nack::unavailable`] is for a handler whose own dependency is down (its
//!   database): the message is not at fault, so it costs no attempt. The
//!   delivery is held and the handler run again after a backoff
//!   ([`Delivery::handle_through_outages`], which [`DeliveryStream::consume`]
//!   uses), for as long as the outage lasts; a poison budget of three
//!   attempts would otherwise send good messages to the dead-letter
//!   destination during a database restart, and nothing replays them. A
//!   held delivery the broker takes back meanwhile (its channel closed, its
//!   partition moved) is let go, and one still waiting in the stream is
//!   skipped: the copy handed out again is the one to handle.
//! - [`DeliveryStream::drain`] is graceful shutdown: stop taking deliveries,
//!   hand back the ones fetched but not yet given out, wait for those being
//!   processed to be settled, then close the consumer.
//!
//! What each broker does for those verbs lives behind the crate-private
//! `Settler` trait; counting attempts, metrics and spans live here, once.

use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use opentelemetry::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, Span};

use crate::envelope;
use crate::error::{MessagingError, MessagingSystem, Result};
use crate::message::{Headers, OutgoingMessage};
use crate::subscription::Subscription;
use crate::telemetry;

/// The content of a received message, without the means to settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Where it was published (exchange, topic or subject).
    pub destination: String,
    pub key: Option<String>,
    pub headers: Headers,
    pub payload: Bytes,
    /// 1 on first delivery, +1 for each redelivery the broker or this crate
    /// counted.
    pub attempt: u32,
    /// Whether the broker flagged this as a redelivery.
    pub redelivered: bool,
}

impl ReceivedMessage {
    /// The `ce_id` header: the idempotency key for inbox tables.
    pub fn message_id(&self) -> Option<&str> {
        self.headers.get(envelope::ID)
    }
}

/// Why a delivery is being given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub retry: Retry,
    /// Recorded in the `x-failure-reason` header if the message is dead-lettered.
    pub reason: String,
}

/// Whether, and how, a failed message is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Redeliver after the retry delay, counting an attempt; dead-letter once
    /// `max_attempts` is reached.
    Counted,
    /// A dependency of the handler is down, not the message at fault: hold
    /// the delivery and run the handler again after a backoff, without
    /// counting an attempt ([`Delivery::handle_through_outages`]). Settled
    /// directly with [`Delivery::nack`], it is a counted retry.
    Held,
    /// Never going to work: dead-letter now.
    Never,
}

impl Nack {
    /// Try again later, counting an attempt (a failure that may pass: a
    /// conflict, a timeout, an injected fault).
    pub fn requeue(reason: impl Into<String>) -> Self {
        Self {
            retry: Retry::Counted,
            reason: reason.into(),
        }
    }

    /// The handler's own dependency (its database) is unreachable: try again
    /// once it is back, at no cost to the message's attempts.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            retry: Retry::Held,
            reason: reason.into(),
        }
    }

    /// Never going to work (malformed payload): dead-letter right away.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self {
            retry: Retry::Never,
            reason: reason.into(),
        }
    }

    /// Whether the message may be delivered again.
    pub fn requeues(&self) -> bool {
        self.retry != Retry::Never
    }
}

impl fmt::Display for Nack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A message moved to the dead-letter destination, with its failure headers.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub key: Option<String>,
    pub headers: Headers,
    pub payload: Bytes,
}

/// What each broker does to settle one delivery.
#[async_trait]
pub(crate) trait Settler: Send + Sync {
    /// Done: never deliver again to this group.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Deliver again after `delay`, counting an attempt.
    async fn retry(self: Box<Self>, delay: Duration) -> Result<()>;
    /// Publish `letter` to the dead-letter destination (a subscription
    /// without one logs it).
    async fn publish_dead_letter(&self, letter: DeadLetter) -> Result<()>;
    /// Done with a message whose dead letter is published: never deliver it
    /// again.
    async fn discard(self: Box<Self>) -> Result<()>;
    /// Hand back a delivery that was fetched but never processed (drain).
    async fn release(self: Box<Self>) -> Result<()>;
    /// Whether the broker has taken the delivery back (its channel closed,
    /// its partition moved): it hands the message out again, and settling
    /// this copy does nothing.
    fn taken_back(&self) -> bool {
        false
    }
    /// Answer the request this delivery carries.
    async fn reply(&self, reply: OutgoingMessage, trace: Option<Context>) -> Result<()>;
}

/// When to give up on a message, and how long to wait between tries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

/// The longest wait between two tries of a delivery held through an outage.
pub const MAX_HOLD_DELAY: Duration = Duration::from_secs(10);

/// The shortest, whatever the subscription's delays: no busy loop.
const MIN_HOLD_DELAY: Duration = Duration::from_millis(10);

impl From<&Subscription> for RetryPolicy {
    fn from(subscription: &Subscription) -> Self {
        Self {
            max_attempts: subscription.max_attempts,
            retry_delay: subscription.retry_delay,
        }
    }
}

/// Everything a broker adapter knows about a message it received.
pub(crate) struct DeliveryParts {
    pub message: ReceivedMessage,
    pub group: String,
    pub parent: Context,
    pub settler: Box<dyn Settler>,
}

/// One received message, to be settled exactly once with [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`dead_letter`](Self::dead_letter). Dropping it
/// unsettled leaves the broker to redeliver it.
pub struct Delivery {
    message: ReceivedMessage,
    system: MessagingSystem,
    policy: RetryPolicy,
    settler: Option<Box<dyn Settler>>,
    span: Span,
    received_at: Instant,
    _in_flight: TaskTrackerToken,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("system", &self.system)
            .field("message", &self.message)
            .field("settled", &self.settler.is_none())
            .finish()
    }
}

impl Deref for Delivery {
    type Target = ReceivedMessage;
    fn deref(&self) -> &ReceivedMessage {
        &self.message
    }
}

impl Delivery {
    pub fn message(&self) -> &ReceivedMessage {
        &self.message
    }

    /// The consumer span (child of the producer's span); run the handler in it.
    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn system(&self) -> MessagingSystem {
        self.system
    }

    /// Processed: remove the message for this consumer group.
    pub async fn ack(mut self) -> Result<()> {
        let settler = self.take_settler()?;
        let result = settler.ack().instrument(self.span.clone()).await;
        self.finish("ack", &result);
        result
    }

    /// Not processed: redeliver later (`requeue`, while attempts remain) or
    /// dead-letter.
    pub async fn nack(mut self, nack: Nack) -> Result<()> {
        let settler = self.take_settler()?;
        let span = self.span.clone();
        if nack.requeues() && self.message.attempt < self.policy.max_attempts {
            tracing::debug!(parent: &span, reason = %nack.reason, attempt = self.message.attempt, "requeue");
            let result = settler
                .retry(self.policy.retry_delay)
                .instrument(span)
                .await;
            self.finish("retry", &result);
            return result;
        }
        let reason = if nack.requeues() {
            format!(
                "{} (gave up after {} attempts)",
                nack.reason, self.message.attempt
            )
        } else {
            nack.reason
        };
        let letter = self.dead_letter_for(&reason);
        let result = match settler
            .publish_dead_letter(letter)
            .instrument(span.clone())
            .await
        {
            Ok(()) => settler.discard().instrument(span).await,
            Err(error) => {
                // Kept, not lost: delivered again after the retry delay, and
                // dead-lettered then (its attempts are spent).
                tracing::warn!(parent: &span, %error, "dead-lettering failed; the message comes back");
                let _ = settler
                    .retry(self.policy.retry_delay)
                    .instrument(span)
                    .await;
                Err(error)
            }
        };
        self.finish("dead_letter", &result);
        result
    }

    /// Move to the dead-letter destination now, with `reason`.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<()> {
        self.nack(Nack::reject(reason)).await
    }

    /// Answer a request (RabbitMQ `reply_to` + correlation id, NATS reply
    /// subject). Settle the delivery separately.
    pub async fn reply(&self, headers: Headers, payload: impl Into<Bytes>) -> Result<()> {
        let settler = self
            .settler
            .as_ref()
            .ok_or_else(|| self.already_settled())?;
        let mut reply = OutgoingMessage::new(String::new(), payload);
        reply.headers = headers;
        settler
            .reply(reply, telemetry::context_of(&self.span))
            .instrument(self.span.clone())
            .await
    }

    /// Runs `handler` until it settles on an outcome that is not
    /// [`Nack::unavailable`]: while it reports a dependency down, the
    /// delivery is held (on JetStream, its lease keeps it from being
    /// redelivered) and the handler runs again after the subscription's retry
    /// delay, doubling up to [`MAX_HOLD_DELAY`]. Such tries count no attempt. `None` when `cancel`
    /// fires during a wait, or once the broker has taken the delivery back
    /// (a RabbitMQ channel closed, a Kafka partition reassigned: another copy
    /// is on its way): [`release`](Self::release) the delivery then.
    pub async fn handle_through_outages<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut handler: F,
    ) -> Option<std::result::Result<T, Nack>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Nack>>,
    {
        let mut delay = self
            .policy
            .retry_delay
            .clamp(MIN_HOLD_DELAY, MAX_HOLD_DELAY);
        let mut tries = 1u32;
        loop {
            let nack = match handler().await {
                Err(nack) if nack.retry == Retry::Held => nack,
                outcome => return Some(outcome),
            };
            tracing::warn!(
                parent: &self.span,
                reason = %nack.reason,
                tries,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "a dependency of the handler is unavailable; holding the message"
            );
            if self.taken_back() {
                tracing::warn!(parent: &self.span, "the broker took the held message back; it will be handed out again");
                return None;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_HOLD_DELAY);
            tries = tries.saturating_add(1);
        }
    }

    /// Hands an unprocessed delivery back to its group at once. Brokers that
    /// count every return (RabbitMQ quorum queues, JetStream) count it as an
    /// attempt.
    pub async fn release(mut self) -> Result<()> {
        if self.taken_back() {
            self.let_go();
            return Ok(());
        }
        let settler = self.take_settler()?;
        let result = settler.release().await;
        self.finish("released", &result);
        result
    }

    fn dead_letter_for(&self, reason: &str) -> DeadLetter {
        let mut headers = self.message.headers.clone();
        headers.insert(envelope::FAILURE_REASON, sanitize_reason(reason));
        headers.insert(envelope::FAILURE_ATTEMPTS, self.message.attempt.to_string());
        headers.insert(
            envelope::ORIGINAL_DESTINATION,
            self.message.destination.clone(),
        );
        DeadLetter {
            key: self.message.key.clone(),
            headers,
            payload: self.message.payload.clone(),
        }
    }

    /// Whether the broker has taken this delivery back since handing it out.
    fn taken_back(&self) -> bool {
        self.settler
            .as_ref()
            .is_some_and(|settler| settler.taken_back())
    }

    /// Drops a delivery the broker has taken back, measured as such.
    fn let_go(mut self) {
        self.settler = None;
        self.finish("taken_back", &Ok(()));
    }

    fn take_settler(&mut self) -> Result<Box<dyn Settler>> {
        self.settler.take().ok_or_else(|| self.already_settled())
    }

    fn already_settled(&self) -> MessagingError {
        MessagingError::Invalid {
            system: self.system,
            what: "settlement",
            reason: format!(
                "delivery from {:?} was already settled",
                self.message.destination
            ),
        }
    }

    fn finish(&self, outcome: &'static str, result: &Result<()>) {
        let outcome = if result.is_ok() { outcome } else { "error" };
        self.span.record("outcome", outcome);
        if let Err(error) = result {
            telemetry::mark_error(&self.span, "settle");
            tracing::warn!(parent: &self.span, %error, "settling a delivery failed");
        }
        telemetry::record_process(
            self.system,
            &self.message.destination,
            outcome,
            self.received_at.elapsed(),
        );
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.settler.is_some() {
            // Left for the broker to redeliver; visible in the metrics.
            telemetry::record_process(
                self.system,
                &self.message.destination,
                "abandoned",
                self.received_at.elapsed(),
            );
        }
    }
}

/// Header values cannot contain line breaks on every broker.
fn sanitize_reason(reason: &str) -> String {
    reason.replace(['\r', '\n'], " ")
}

/// The adapter's end of a [`DeliveryStream`].
pub(crate) struct DeliverySink {
    system: MessagingSystem,
    policy: RetryPolicy,
    sender: mpsc::Sender<Result<Delivery>>,
    stop: CancellationToken,
    /// Cancelled once the broker no longer delivers to this consumer.
    consumer_stopped: CancellationToken,
    in_flight: TaskTracker,
}

impl DeliverySink {
    /// Cancelled when the stream is drained or dropped: stop consuming.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Wraps a received message into a [`Delivery`] with its consumer span.
    pub fn delivery(&self, parts: DeliveryParts) -> Delivery {
        let message_id = parts.message.message_id().unwrap_or_default().to_owned();
        let span = telemetry::consumer_span(
            self.system,
            &parts.message.destination,
            &parts.group,
            &message_id,
            parts.message.attempt,
            parts.parent,
        );
        Delivery {
            message: parts.message,
            system: self.system,
            policy: self.policy,
            settler: Some(parts.settler),
            span,
            received_at: Instant::now(),
            _in_flight: self.in_flight.token(),
        }
    }

    /// Hands a delivery to the stream, or dead-letters it first if it has
    /// already been attempted more often than allowed (a consumer kept dying
    /// on it without settling). Returns `false` once the stream is gone.
    pub async fn send(&self, delivery: Delivery) -> bool {
        let Some(delivery) = self.admit(delivery).await else {
            return !self.stop.is_cancelled();
        };
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            sent = self.sender.send(Ok(delivery)) => sent.is_ok(),
        }
    }

    /// The delivery, unless it has already been attempted more often than
    /// allowed: it is then dead-lettered here and `None` returned.
    pub async fn admit(&self, delivery: Delivery) -> Option<Delivery> {
        if delivery.attempt <= delivery.policy.max_attempts {
            return Some(delivery);
        }
        let reason = format!(
            "delivered {} times without being settled (max attempts {})",
            delivery.attempt - 1,
            delivery.policy.max_attempts
        );
        // The failure is logged and measured by `nack`, which sends the
        // message round again if dead-lettering failed.
        let _ = delivery.dead_letter(reason).await;
        None
    }

    /// Waits until the stream has room, then says for how many deliveries;
    /// `None` once the stream is gone. Only this sink fills the stream, so
    /// that many can be sent without waiting.
    pub async fn room(&self) -> Option<usize> {
        drop(self.sender.reserve().await.ok()?);
        Some(self.sender.capacity().max(1))
    }

    /// Waits for room in the stream, for an adapter that must keep serving
    /// its broker while the handler is busy; `None` once the stream is gone.
    pub async fn reserve(&self) -> Option<mpsc::Permit<'_, Result<Delivery>>> {
        self.sender.reserve().await.ok()
    }

    /// Waits (up to `timeout`) until every delivery handed out is settled or
    /// dropped; call after the broker consumer was cancelled, before closing
    /// the channel the acks travel on.
    pub async fn wait_settled(&self, timeout: Duration) {
        self.consumer_stopped.cancel();
        self.in_flight.close();
        if tokio::time::timeout(timeout, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                messaging.system = self.system.as_str(),
                unsettled = self.in_flight.len(),
                "drain deadline passed with deliveries still unsettled; they will be redelivered"
            );
        }
    }
}

impl Drop for DeliverySink {
    fn drop(&mut self) {
        self.consumer_stopped.cancel();
    }
}

/// The deliveries of one subscription, in the order the broker gives them.
///
/// Dropping the stream stops the consumer; [`drain`](Self::drain) does so
/// gracefully.
pub struct DeliveryStream {
    receiver: mpsc::Receiver<Result<Delivery>>,
    stop: CancellationToken,
    consumer_stopped: CancellationToken,
    worker: Option<JoinHandle<()>>,
}

impl fmt::Debug for DeliveryStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryStream")
            .field("stopped", &self.stop.is_cancelled())
            .finish()
    }
}

/// How long a stopping consumer waits for handed-out deliveries to be settled.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl DeliveryStream {
    /// A stream and the sink its adapter task feeds; `prefetch` bounds how far
    /// the adapter reads ahead of the handler.
    pub(crate) fn channel(
        system: MessagingSystem,
        policy: RetryPolicy,
        prefetch: u16,
    ) -> (Self, DeliverySink) {
        let (sender, receiver) = mpsc::channel(usize::from(prefetch.max(1)));
        let (stop, consumer_stopped) = (CancellationToken::new(), CancellationToken::new());
        let sink = DeliverySink {
            system,
            policy,
            sender,
            stop: stop.clone(),
            consumer_stopped: consumer_stopped.clone(),
            in_flight: TaskTracker::new(),
        };
        (
            Self {
                receiver,
                stop,
                consumer_stopped,
                worker: None,
            },
            sink,
        )
    }

    pub(crate) fn attach_worker(&mut self, worker: JoinHandle<()>) {
        self.worker = Some(worker);
    }

    /// Graceful stop: no new deliveries; fetched-but-unhandled ones go back
    /// to the broker; waits until the deliveries already handed out are
    /// settled (up to [`DRAIN_TIMEOUT`]), then closes the consumer.
    pub async fn drain(mut self) {
        self.stop_consuming().await;
        self.receiver.close();
        while let Some(item) = self.receiver.recv().await {
            if let Ok(delivery) = item {
                let _ = delivery.release().await;
            }
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
    }

    /// Runs `handler` on every delivery until `cancel` fires or the stream
    /// ends, with up to `concurrency` handlers at once: `Ok` acks,
    /// `Err(nack)` nacks, a [`Nack::unavailable`] is held and handled again
    /// ([`Delivery::handle_through_outages`]). Then drains.
    ///
    /// A concurrency of 1 keeps each key's messages in order as long as none
    /// is retried: a [`Nack::requeue`]d message comes back after the retry
    /// delay, behind those published after it (a held one keeps its place).
    pub async fn consume<H, F>(self, concurrency: usize, cancel: CancellationToken, handler: H)
    where
        H: Fn(ReceivedMessage) -> F,
        F: Future<Output = std::result::Result<(), Nack>>,
    {
        let handler = &handler;
        self.consume_deliveries(concurrency, cancel, move |delivery, release_held| {
            process(delivery, handler, release_held)
        })
        .await;
    }

    /// [`consume`](Self::consume) for handlers that settle each delivery
    /// themselves (to reply before the ack, say). A handler holding its
    /// delivery through an outage hands it back when the token it is given
    /// fires: after `cancel`, once the broker no longer delivers here.
    pub async fn consume_deliveries<H, F>(
        mut self,
        concurrency: usize,
        cancel: CancellationToken,
        handler: H,
    ) where
        H: Fn(Delivery, CancellationToken) -> F,
        F: Future<Output = ()>,
    {
        let concurrency = concurrency.max(1);
        let release_held = CancellationToken::new();
        let mut running = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(()) = running.next(), if !running.is_empty() => {}
                next = self.next(), if running.len() < concurrency => match next {
                    Some(Ok(delivery)) => running.push(handler(delivery, release_held.clone())),
                    Some(Err(error)) => tracing::warn!(%error, "subscription reported an error"),
                    None => break,
                },
            }
        }
        let finish_running = async { while running.next().await.is_some() {} };
        let release = async {
            self.stop_consuming().await;
            release_held.cancel();
        };
        futures::join!(finish_running, release);
        self.drain().await;
    }

    /// Stops the broker consumer and waits (up to [`DRAIN_TIMEOUT`]) until
    /// it no longer delivers. A delivery handed back before that would come
    /// straight back to this consumer, to be handed back once more: two
    /// attempts where the broker counts returns.
    async fn stop_consuming(&self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.consumer_stopped.cancelled()).await;
    }
}

async fn process<H, F>(delivery: Delivery, handler: &H, release_held: CancellationToken)
where
    H: Fn(ReceivedMessage) -> F,
    F: Future<Output = std::result::Result<(), Nack>>,
{
    let span = delivery.span().clone();
    let outcome = delivery
        .handle_through_outages(&release_held, || handler(delivery.message().clone()))
        .instrument(span)
        .await;
    // Failures to settle are logged and measured by the delivery itself.
    let _ = match outcome {
        Some(Ok(())) => delivery.ack().await,
        Some(Err(nack)) => delivery.nack(nack).await,
        None => delivery.release().await,
    };
}

impl Stream for DeliveryStream {
    type Item = Result<Delivery>;

    /// Skips deliveries the broker took back while they waited here (their
    /// RabbitMQ channel closed, their Kafka partition moved): their copies
    /// handed out again are the ones to handle.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(delivery))) if delivery.taken_back() => delivery.let_go(),
                polled => return polled,
            }
        }
    }
}

impl Drop for DeliveryStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A settler for deliveries that cannot be settled (NATS core, transient):
/// every verb succeeds without doing anything, since the broker keeps no state.
pub(crate) struct NoopSettler<R> {
    pub replier: R,
}

/// Sends replies for settlers that need nothing else.
#[async_trait]
pub(crate) trait Replier: Send + Sync {
    async fn reply(&self, reply: OutgoingMessage, trace: Option<Context>) -> Result<()>;
}

#[async_trait]
impl<R: Replier> Settler for NoopSettler<R> {
    async fn ack(self: Box<Self>) -> Result<()> {
        Ok(())
    }
    async fn retry(self: Box<Self>, _delay: Duration) -> Result<()> {
        Ok(())
    }
    async fn publish_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        tracing::warn!(
            reason = letter
                .headers
                .get(envelope::FAILURE_REASON)
                .unwrap_or_default(),
            "a transient message failed and was dropped (transient subscriptions have no dead-letter destination)"
        );
        Ok(())
    }
    async fn discard(self: Box<Self>) -> Result<()> {
        Ok(())
    }
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
    async fn reply(&self, reply: OutgoingMessage, trace: Option<Context>) -> Result<()> {
        self.replier.reply(reply, trace).await
    }
}
