//! The two sagas of an order, on the platform's saga engine.
//!
//! # `place_order` — one per order, id = order id = reservation id
//!
//! | step | action | compensation |
//! |---|---|---|
//! | `reserve_stock` | inventory `ReserveStock` (gRPC), records `StockReserved` | `ReleaseReservation` |
//! | `charge_payment` | `payment.charge` command (RabbitMQ), completed by the reply | `payment.refund` command |
//! | `commit_reservation` | records `PaymentCompleted`, inventory `CommitReservation` | — |
//!
//! and then, in the transaction that records the saga's end
//! ([`PlaceOrderOutcome`]), `OrderConfirmed` — or `OrderRejected` with the
//! reason when the saga compensated. The fault point
//! [`BEFORE_CONFIRM_FAULT_POINT`] sits right before the confirmation.
//!
//! # `cancel_order` — one per accepted cancellation of a CONFIRMED order
//!
//! | step | action |
//! |---|---|
//! | `refund_payment` | `payment.refund` command for the order's total |
//! | `return_stock` | inventory `ReleaseReservation`: a committed reservation's units go back to stock |
//!
//! and then `OrderCancelled` ([`CancelOrderOutcome`]). Neither step has a
//! compensation: money that went back to the customer is not taken again.
//! And neither gives up while its participant is silent — a refund command
//! sent during an outage may still be executed when the payment service is
//! back, so abandoning the cancellation then would leave a CONFIRMED order
//! refunded; the steps are retried (backing off to every 30 s) until they
//! get an answer, however long the outage (the saga shows as RUNNING in the
//! admin listing meanwhile). Should the refund be *refused* (a closed wallet without a payout IBAN), nothing
//! moved: the cancellation is abandoned and the order stays CONFIRMED.
//! Should the refund succeed and the stock return be refused, the order is
//! still CANCELLED — the money invariant (cancelled orders are fully
//! refunded) wins — and the saga's failure tells an operator which units to
//! return.
//!
//! # Failures become reasons
//!
//! A participant's refusal keeps its code (`INSUFFICIENT_STOCK`,
//! `INSUFFICIENT_FUNDS`, `ACCOUNT_FROZEN`, ...). A step that never got an
//! answer within its attempts becomes `PAYMENT_TIMEOUT` (payment steps) or
//! `INVENTORY_UNAVAILABLE` (inventory steps).
//!
//! # At least once, everywhere
//!
//! The engine may run a step again after a crash, so every operation is
//! idempotent: reservations by reservation id, payment commands by
//! `command_id` (the engine's per-step key `{saga_id}:{step}`), and the
//! order's own recordings by the aggregate, which treats a repeat as a
//! no-op.
//!
//! # Refunding a charge whose fate is unknown
//!
//! When `charge_payment` gives up (no reply within its attempts — the
//! payment service is slow or down), the charge may still be sitting in the
//! payment service's queue and be executed later; so the step is
//! compensated with a refund like any other. A refund that reaches the
//! payment service before its charge answers `NOTHING_TO_REFUND` and voids
//! the order there: the late charge is then declined (`ORDER_VOIDED`), so
//! that answer is final and a REJECTED order never keeps money. Several
//! refunds of one order are harmless: the payment service never refunds an
//! order more than its charge.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use payment_contract::{
    ChargePayment, DeclineReason, Outcome, PaymentReply, RefundPayment, headers, types,
};
use saga::{
    Command, EngineConfig, FailureKind, FinishedSaga, HookError, Operation, Reply, RetryPolicy,
    SagaDefinition, SagaEngine, SagaHooks, SagaOutcome, Step, StepContext, StepError, StepFailure,
    StepResult,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::domain::events::OrderEvent;
use crate::domain::ids::{CustomerId, OrderId, PaymentId};
use crate::domain::items::OrderItem;
use crate::domain::money::Money;
use crate::domain::order::{OrderCommand, OrderStatus};
use crate::domain::reason::FailureReason;
use crate::error::OrderError;
use crate::inventory::{Inventory, InventoryError};
use crate::messaging::contract::SOURCE;
use crate::store::{self, Store};

/// Saga type of an order's placement.
pub const PLACE_ORDER: &str = "place_order";
/// Saga type of a CONFIRMED order's cancellation.
pub const CANCEL_ORDER: &str = "cancel_order";

/// Step names, as they appear in the step log, fault points
/// (`saga.<type>.before_<step>`) and the admin listing.
pub mod steps {
    pub const RESERVE_STOCK: &str = "reserve_stock";
    pub const CHARGE_PAYMENT: &str = "charge_payment";
    pub const COMMIT_RESERVATION: &str = "commit_reservation";
    pub const REFUND_PAYMENT: &str = "refund_payment";
    pub const RETURN_STOCK: &str = "return_stock";
}

/// Reached in the placement saga's final transaction, right before the
/// order is confirmed: `abort` there kills the process between "every step
/// done" and "order CONFIRMED".
pub const BEFORE_CONFIRM_FAULT_POINT: &str = "order.saga.before_confirm";

/// `ferrishop_orders_total{status}`: orders reaching each status.
pub const ORDERS_TOTAL: &str = "ferrishop_orders_total";

/// What the placement saga carries from step to step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrderData {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: Vec<OrderItem>,
    pub total: Money,
    /// Set by the charge's reply.
    #[serde(default)]
    pub payment_id: Option<PaymentId>,
}

/// What the cancellation saga carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrderData {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub total: Money,
    /// Set once the refund's reply said the money is back.
    #[serde(default)]
    pub refunded: bool,
}

/// Timeouts, attempts and destinations of the steps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bound of one inventory call (the client's own, retries included).
    pub inventory_timeout: Duration,
    /// How long a payment command waits for its reply before it is sent
    /// again.
    pub payment_timeout: Duration,
    /// Sends of a payment command before the step gives up.
    pub payment_attempts: u32,
    /// Where payment commands go.
    pub commands_exchange: String,
    /// Where the payment service is asked to reply.
    pub replies_exchange: String,
}

impl Settings {
    /// An inventory step's timeout: the client's own bound fires first, so
    /// a slow call fails with the client's error, not the engine's.
    fn inventory_step_timeout(&self) -> Duration {
        self.inventory_timeout + Duration::from_secs(1)
    }

    fn payment_retry(&self) -> RetryPolicy {
        RetryPolicy::default().with_max_attempts(self.payment_attempts)
    }

    /// A cancellation, once accepted, is carried through: its steps are
    /// retried until their participant answers (see the module docs),
    /// backing off to one attempt every 30 s. No count of attempts bounds
    /// it: giving up on a refund that may yet be executed would leave a
    /// CONFIRMED order refunded.
    fn until_answered() -> RetryPolicy {
        RetryPolicy::compensation().with_max_attempts(u32::MAX)
    }
}

/// What the steps talk to.
#[derive(Debug, Clone)]
pub struct Participants {
    pub inventory: Inventory,
    pub store: Store,
}

/// The placement saga.
pub fn place_order(
    participants: &Participants,
    settings: &Settings,
) -> SagaDefinition<PlaceOrderData> {
    let reserve = participants.clone();
    let release = participants.clone();
    let commit = participants.clone();
    let refund = settings.clone();
    let charge = settings.clone();
    SagaDefinition::new(PLACE_ORDER)
        .step(
            Step::call(steps::RESERVE_STOCK, move |_, data| {
                reserve_stock(reserve.clone(), data)
            })
            .compensate(Operation::call(move |_, data| {
                release_stock(release.clone(), data)
            }))
            .timeout(settings.inventory_step_timeout()),
        )
        .step(
            Step::command(
                steps::CHARGE_PAYMENT,
                move |context, data| charge_command(&charge, context, data),
                on_charge_reply,
            )
            .compensate(Operation::command(
                move |context, data| charge_refund_command(&refund, context, data),
                on_charge_refund_reply,
            ))
            .timeout(settings.payment_timeout)
            .retry(settings.payment_retry()),
        )
        .step(
            Step::call(steps::COMMIT_RESERVATION, move |_, data| {
                commit_reservation(commit.clone(), data)
            })
            .timeout(settings.inventory_step_timeout()),
        )
}

/// The cancellation saga.
pub fn cancel_order(
    participants: &Participants,
    settings: &Settings,
) -> SagaDefinition<CancelOrderData> {
    let refund = settings.clone();
    let inventory = participants.inventory.clone();
    SagaDefinition::new(CANCEL_ORDER)
        .step(
            Step::command(
                steps::REFUND_PAYMENT,
                move |context, data| cancellation_refund_command(&refund, context, data),
                on_cancellation_refund_reply,
            )
            .timeout(settings.payment_timeout)
            .retry(Settings::until_answered()),
        )
        .step(
            Step::call(steps::RETURN_STOCK, move |_, data: CancelOrderData| {
                let inventory = inventory.clone();
                async move {
                    inventory
                        .release(data.order_id)
                        .await
                        .map_err(inventory_step_error)?;
                    Ok(data)
                }
            })
            .timeout(settings.inventory_step_timeout())
            .retry(Settings::until_answered()),
        )
}

// ---------------------------------------------------------------- place_order

async fn reserve_stock(
    participants: Participants,
    data: PlaceOrderData,
) -> StepResult<PlaceOrderData> {
    participants
        .inventory
        .reserve(data.order_id, &data.items)
        .await
        .map_err(inventory_step_error)?;
    let command = OrderCommand::RecordStockReserved { at: Utc::now() };
    record(&participants.store, data.order_id, command).await?;
    Ok(data)
}

async fn release_stock(
    participants: Participants,
    data: PlaceOrderData,
) -> StepResult<PlaceOrderData> {
    participants
        .inventory
        .release(data.order_id)
        .await
        .map_err(inventory_step_error)?;
    Ok(data)
}

async fn commit_reservation(
    participants: Participants,
    data: PlaceOrderData,
) -> StepResult<PlaceOrderData> {
    if let Some(payment_id) = data.payment_id {
        let command = OrderCommand::RecordPayment {
            payment_id,
            at: Utc::now(),
        };
        record(&participants.store, data.order_id, command).await?;
    }
    participants
        .inventory
        .commit(data.order_id)
        .await
        .map_err(inventory_step_error)?;
    Ok(data)
}

fn charge_command(
    settings: &Settings,
    context: &StepContext,
    data: &PlaceOrderData,
) -> Result<Command, StepError> {
    payment_command(
        settings,
        types::CHARGE,
        data.order_id,
        &ChargePayment {
            command_id: context.idempotency_key(),
            order_id: data.order_id.as_uuid(),
            customer_id: data.customer_id.as_uuid(),
            amount: wire_money(data.total),
        },
    )
}

fn on_charge_reply(
    _: &StepContext,
    data: PlaceOrderData,
    reply: &Reply,
) -> StepResult<PlaceOrderData> {
    match decode(reply)?.outcome {
        Outcome::Charged { payment_id, .. } => Ok(PlaceOrderData {
            payment_id: Some(PaymentId::from_uuid(payment_id)),
            ..data
        }),
        Outcome::Declined { reason, detail } => Err(StepError::rejected(reason.code(), detail)),
        Outcome::Refunded { .. } => Err(StepError::transient("a refund reply to a charge")),
    }
}

/// The charge's compensation (see the module docs).
fn charge_refund_command(
    settings: &Settings,
    context: &StepContext,
    data: &PlaceOrderData,
) -> Result<Command, StepError> {
    refund_command(
        settings,
        context,
        data.order_id,
        data.customer_id,
        data.total,
    )
}

/// Refunded, or nothing was charged and now never will be: either way the
/// customer has their money.
fn on_charge_refund_reply(
    _: &StepContext,
    data: PlaceOrderData,
    reply: &Reply,
) -> StepResult<PlaceOrderData> {
    match decode(reply)?.outcome {
        Outcome::Refunded { .. }
        | Outcome::Declined {
            reason: DeclineReason::NothingToRefund,
            ..
        } => Ok(data),
        Outcome::Declined { reason, detail } => Err(StepError::rejected(reason.code(), detail)),
        Outcome::Charged { .. } => Err(StepError::transient("a charge reply to a refund")),
    }
}

// --------------------------------------------------------------- cancel_order

fn cancellation_refund_command(
    settings: &Settings,
    context: &StepContext,
    data: &CancelOrderData,
) -> Result<Command, StepError> {
    refund_command(
        settings,
        context,
        data.order_id,
        data.customer_id,
        data.total,
    )
}

fn on_cancellation_refund_reply(
    _: &StepContext,
    data: CancelOrderData,
    reply: &Reply,
) -> StepResult<CancelOrderData> {
    match decode(reply)?.outcome {
        Outcome::Refunded { .. } => Ok(CancelOrderData {
            refunded: true,
            ..data
        }),
        Outcome::Declined { reason, detail } => Err(StepError::rejected(reason.code(), detail)),
        Outcome::Charged { .. } => Err(StepError::transient("a charge reply to a refund")),
    }
}

// -------------------------------------------------------------------- helpers

/// A refund of the order's total, keyed by the step's idempotency key.
fn refund_command(
    settings: &Settings,
    context: &StepContext,
    order_id: OrderId,
    customer_id: CustomerId,
    total: Money,
) -> Result<Command, StepError> {
    payment_command(
        settings,
        types::REFUND,
        order_id,
        &RefundPayment {
            command_id: context.idempotency_key(),
            order_id: order_id.as_uuid(),
            customer_id: customer_id.as_uuid(),
            amount: wire_money(total),
        },
    )
}

/// A payment command as the payment contract wants it: the CloudEvents type
/// names the command, `reply-to` names our replies exchange, and the engine
/// adds the correlation headers the payment service echoes.
fn payment_command<T: Serialize>(
    settings: &Settings,
    message_type: &str,
    order_id: OrderId,
    body: &T,
) -> Result<Command, StepError> {
    Ok(Command::json(&settings.commands_exchange, body)
        .map_err(StepError::transient)?
        .with_header(messaging::envelope::TYPE, message_type)
        .with_header(messaging::envelope::SOURCE, SOURCE)
        .with_header(messaging::envelope::SUBJECT, order_id.to_string())
        .with_header(headers::REPLY_TO, &settings.replies_exchange))
}

fn decode(reply: &Reply) -> Result<PaymentReply, StepError> {
    reply
        .decode()
        .map_err(|error| StepError::transient(format!("unreadable payment reply: {error}")))
}

fn wire_money(money: Money) -> payment_contract::Money {
    payment_contract::Money::new(money.amount(), money.currency().as_str())
}

fn inventory_step_error(error: InventoryError) -> StepError {
    match error {
        InventoryError::Refused { code, message } => StepError::rejected(code, message),
        InventoryError::Unavailable(message) => StepError::transient(message),
    }
}

/// Records a saga-side fact about the order; any failure is worth another
/// attempt of the step (the recording is idempotent).
async fn record(store: &Store, order_id: OrderId, command: OrderCommand) -> StepResult<()> {
    store
        .record(order_id, command, &store::metadata(order_id, None))
        .await
        .map(drop)
        .map_err(StepError::transient)
}

/// The reason an order (or its cancellation) failed, from what made the
/// saga compensate.
pub fn failure_reason(failure: Option<&StepFailure>) -> FailureReason {
    match failure {
        Some(StepFailure {
            kind: FailureKind::Rejected,
            code: Some(code),
            ..
        }) => FailureReason::or_unknown(code),
        Some(failure)
            if failure.step == steps::CHARGE_PAYMENT || failure.step == steps::REFUND_PAYMENT =>
        {
            FailureReason::or_unknown(FailureReason::PAYMENT_TIMEOUT)
        }
        Some(_) => FailureReason::or_unknown(FailureReason::INVENTORY_UNAVAILABLE),
        None => FailureReason::or_unknown(FailureReason::UNKNOWN),
    }
}

/// Counts the statuses `events` reach in `ferrishop_orders_total`.
pub fn count_statuses(events: &[OrderEvent]) {
    for event in events {
        let status = match event {
            OrderEvent::Placed(_) => OrderStatus::Pending,
            OrderEvent::Confirmed(_) => OrderStatus::Confirmed,
            OrderEvent::Rejected(_) => OrderStatus::Rejected,
            OrderEvent::Cancelled(_) => OrderStatus::Cancelled,
            _ => continue,
        };
        metrics::counter!(ORDERS_TOTAL, "status" => status.as_str()).increment(1);
    }
}

// ---------------------------------------------------------------------- hooks

/// Confirms or rejects the order in the placement saga's final transaction.
#[derive(Debug, Clone)]
pub struct PlaceOrderOutcome {
    store: Store,
}

#[async_trait]
impl SagaHooks<PlaceOrderData> for PlaceOrderOutcome {
    async fn on_finished(
        &self,
        connection: &mut PgConnection,
        saga: &FinishedSaga<PlaceOrderData>,
    ) -> Result<(), HookError> {
        let order_id = saga.data.order_id;
        let at = Utc::now();
        let command = match saga.outcome {
            SagaOutcome::Completed => {
                platform::faults::inject(BEFORE_CONFIRM_FAULT_POINT).await?;
                let payment_id = saga.data.payment_id.ok_or_else(|| {
                    OrderError::Internal(format!("saga {} completed without a payment", saga.id))
                })?;
                OrderCommand::Confirm { payment_id, at }
            }
            SagaOutcome::Compensated | SagaOutcome::Failed => OrderCommand::Reject {
                reason: failure_reason(saga.failure.as_ref()),
                at,
            },
        };
        record_outcome(&self.store, connection, order_id, command).await?;
        Ok(())
    }
}

/// Completes or abandons the cancellation in the cancellation saga's final
/// transaction.
#[derive(Debug, Clone)]
pub struct CancelOrderOutcome {
    store: Store,
}

#[async_trait]
impl SagaHooks<CancelOrderData> for CancelOrderOutcome {
    async fn on_finished(
        &self,
        connection: &mut PgConnection,
        saga: &FinishedSaga<CancelOrderData>,
    ) -> Result<(), HookError> {
        let order_id = saga.data.order_id;
        let at = Utc::now();
        let command = if saga.outcome == SagaOutcome::Completed || saga.data.refunded {
            OrderCommand::CompleteCancellation { at }
        } else {
            OrderCommand::AbandonCancellation {
                reason: failure_reason(saga.failure.as_ref()),
                at,
            }
        };
        record_outcome(&self.store, connection, order_id, command).await?;
        Ok(())
    }
}

/// Records a finished saga's `command` on its order, in the saga's final
/// transaction, and counts the statuses it leads to. Counted before the
/// commit: a final transaction that then fails is retried and counts again
/// (rare, and visible as a saga error).
async fn record_outcome(
    orders: &Store,
    connection: &mut PgConnection,
    order_id: OrderId,
    command: OrderCommand,
) -> Result<(), OrderError> {
    let recorded = orders
        .record_in(
            connection,
            order_id,
            command,
            &store::metadata(order_id, None),
        )
        .await?;
    count_statuses(&recorded.events);
    Ok(())
}

/// The engines of both sagas.
#[derive(Debug, Clone)]
pub struct Sagas {
    pub place: SagaEngine<PlaceOrderData>,
    pub cancel: SagaEngine<CancelOrderData>,
}

/// Why a reply could not be fed to a saga.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply names step {0:?}, which no saga of this service has")]
    UnknownStep(String),
    #[error(transparent)]
    Saga(#[from] saga::SagaError),
}

/// The order service's two sagas.
enum SagaKind {
    Place,
    Cancel,
}

/// The saga whose step a payment reply answers.
fn answered_saga(reply: &Reply) -> Result<SagaKind, ReplyError> {
    match reply.correlation.step.as_str() {
        steps::CHARGE_PAYMENT => Ok(SagaKind::Place),
        steps::REFUND_PAYMENT => Ok(SagaKind::Cancel),
        other => Err(ReplyError::UnknownStep(other.to_owned())),
    }
}

impl Sagas {
    pub fn build(
        pool: &PgPool,
        participants: &Participants,
        settings: &Settings,
        config: EngineConfig,
    ) -> Result<Self, saga::BuildError> {
        let place = SagaEngine::builder(pool.clone(), place_order(participants, settings))
            .config(config.clone())
            .hooks(Arc::new(PlaceOrderOutcome {
                store: participants.store.clone(),
            }))
            .build()?;
        let cancel = SagaEngine::builder(pool.clone(), cancel_order(participants, settings))
            .config(config)
            .hooks(Arc::new(CancelOrderOutcome {
                store: participants.store.clone(),
            }))
            .build()?;
        Ok(Self { place, cancel })
    }

    /// Records a payment reply on `connection` with the engine whose saga
    /// has the step it answers (step names are unique across both sagas).
    /// Once the transaction commits, [`Sagas::announce_reply`] wakes its
    /// workers.
    pub async fn on_reply_in(
        &self,
        connection: &mut PgConnection,
        reply: &Reply,
    ) -> Result<saga::ReplyOutcome, ReplyError> {
        match answered_saga(reply)? {
            SagaKind::Place => Ok(self.place.on_reply_in(connection, reply).await?),
            SagaKind::Cancel => Ok(self.cancel.on_reply_in(connection, reply).await?),
        }
    }

    /// Wakes the workers of the saga a recorded reply answers, once its
    /// transaction has committed ([`saga::SagaEngine::announce`]).
    pub async fn announce_reply(&self, reply: &Reply) {
        match answered_saga(reply) {
            Ok(SagaKind::Place) => self.place.announce().await,
            Ok(SagaKind::Cancel) => self.cancel.announce().await,
            Err(_) => {}
        }
    }

    /// The step names of `saga_type`, in order.
    pub fn step_names(&self, saga_type: &str) -> Vec<String> {
        fn names<D: saga::SagaData>(steps: &[Step<D>]) -> Vec<String> {
            steps.iter().map(|step| step.name().to_owned()).collect()
        }
        match saga_type {
            PLACE_ORDER => names(self.place.definition().steps()),
            CANCEL_ORDER => names(self.cancel.definition().steps()),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use saga::Phase;
    use uuid::Uuid;

    use super::*;
    use crate::domain::money::Currency;

    fn data() -> PlaceOrderData {
        PlaceOrderData {
            order_id: OrderId::generate(),
            customer_id: CustomerId::from_uuid(Uuid::now_v7()),
            items: vec![],
            total: Money::new(2599, Currency::EUR).unwrap(),
            payment_id: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            inventory_timeout: Duration::from_secs(5),
            payment_timeout: Duration::from_secs(10),
            payment_attempts: 3,
            commands_exchange: "payments".into(),
            replies_exchange: "replies".into(),
        }
    }

    fn context(phase: Phase, attempt: u32, saga_id: Uuid) -> StepContext {
        StepContext {
            saga_id,
            saga_type: PLACE_ORDER.into(),
            step: steps::CHARGE_PAYMENT.into(),
            phase,
            attempt,
        }
    }

    fn reply(context: &StepContext, outcome: Outcome) -> Reply {
        Reply::json(
            context.correlation(),
            &PaymentReply {
                command_id: context.idempotency_key(),
                order_id: Uuid::now_v7(),
                outcome,
            },
        )
        .unwrap()
    }

    #[test]
    fn cancellation_steps_never_run_out_of_attempts() {
        let policy = Settings::until_answered();
        // Ten years of attempts at one every 30 s, and then some.
        for attempt in [1, 10_000, 10_600_000, u32::MAX - 1] {
            assert!(policy.allows_another_attempt_after(attempt), "{attempt}");
        }
        assert_eq!(policy.base_delay(10_600_000), Duration::from_secs(30));
    }

    #[test]
    fn charges_follow_the_payment_contract() {
        let data = data();
        let context = context(Phase::Action, 2, data.order_id.as_uuid());
        let command = charge_command(&settings(), &context, &data).unwrap();
        assert_eq!(command.destination, "payments");
        assert_eq!(command.headers["ce_type"], types::CHARGE);
        assert_eq!(command.headers[headers::REPLY_TO], "replies");
        let body: ChargePayment = serde_json::from_slice(&command.payload).unwrap();
        // The same on every attempt: the payment service deduplicates by it.
        assert_eq!(body.command_id, format!("{}:charge_payment", data.order_id));
        assert_eq!(body.amount, payment_contract::Money::new(2599, "EUR"));
    }

    #[test]
    fn charge_replies_record_the_payment_or_reject_with_the_reason() {
        let data = data();
        let context = context(Phase::Action, 1, data.order_id.as_uuid());
        let payment_id = Uuid::now_v7();
        let charged = on_charge_reply(
            &context,
            data.clone(),
            &reply(
                &context,
                Outcome::Charged {
                    payment_id,
                    amount: payment_contract::Money::new(2599, "EUR"),
                },
            ),
        )
        .unwrap();
        assert_eq!(charged.payment_id, Some(PaymentId::from_uuid(payment_id)));
        let declined = on_charge_reply(
            &context,
            data,
            &reply(
                &context,
                Outcome::Declined {
                    reason: DeclineReason::AccountFrozen,
                    detail: "frozen".into(),
                },
            ),
        );
        assert_eq!(
            declined,
            Err(StepError::rejected("ACCOUNT_FROZEN", "frozen"))
        );
    }

    #[test]
    fn a_charge_is_compensated_by_a_refund_that_nothing_to_refund_also_settles() {
        let data = data();
        let context = context(Phase::Compensation, 1, data.order_id.as_uuid());
        let command = charge_refund_command(&settings(), &context, &data).unwrap();
        assert_eq!(command.headers["ce_type"], types::REFUND);
        let body: RefundPayment = serde_json::from_slice(&command.payload).unwrap();
        assert_eq!(
            body.command_id,
            format!("{}:charge_payment:compensation", data.order_id)
        );
        assert_eq!(body.amount, payment_contract::Money::new(2599, "EUR"));

        let answer =
            |outcome| on_charge_refund_reply(&context, data.clone(), &reply(&context, outcome));
        let refunded = Outcome::Refunded {
            refund_id: None,
            amount: payment_contract::Money::new(2599, "EUR"),
        };
        assert_eq!(answer(refunded), Ok(data.clone()));
        let nothing = Outcome::Declined {
            reason: DeclineReason::NothingToRefund,
            detail: String::new(),
        };
        assert_eq!(answer(nothing), Ok(data.clone()));
        let closed = Outcome::Declined {
            reason: DeclineReason::AccountClosed,
            detail: "closed".into(),
        };
        assert_eq!(
            answer(closed),
            Err(StepError::rejected("ACCOUNT_CLOSED", "closed"))
        );
    }

    #[test]
    fn failures_become_stable_reasons() {
        let rejected = StepFailure {
            step: steps::RESERVE_STOCK.into(),
            kind: FailureKind::Rejected,
            code: Some("INSUFFICIENT_STOCK".into()),
            message: String::new(),
        };
        assert_eq!(
            failure_reason(Some(&rejected)).as_str(),
            "INSUFFICIENT_STOCK"
        );
        let timed_out = StepFailure {
            step: steps::CHARGE_PAYMENT.into(),
            kind: FailureKind::Exhausted,
            code: None,
            message: "no reply".into(),
        };
        assert_eq!(failure_reason(Some(&timed_out)).as_str(), "PAYMENT_TIMEOUT");
        let unreachable = StepFailure {
            step: steps::COMMIT_RESERVATION.into(),
            ..timed_out
        };
        assert_eq!(
            failure_reason(Some(&unreachable)).as_str(),
            "INVENTORY_UNAVAILABLE"
        );
    }
}
