//! The `Order` aggregate: one order's state and the rules for changing it.
//!
//! ```text
//! PENDING ──> CONFIRMED ──> CANCELLED
//!    │
//!    └──────> REJECTED
//! ```
//!
//! An order is event-sourced: its state is the fold of its events
//! ([`Order::apply`]) and a command is *decided* against that state, yielding
//! the events to record ([`Order::handle`]) or a typed refusal
//! ([`OrderRuleError`]). Nothing here touches a database or a clock; ids and
//! times come in with the commands.
//!
//! # Who sends which command
//!
//! - The customer: [`OrderCommand::Place`] and [`OrderCommand::RequestCancellation`].
//! - The placement saga, as it goes: [`OrderCommand::RecordStockReserved`],
//!   [`OrderCommand::RecordPayment`], and at its end
//!   [`OrderCommand::Confirm`] or [`OrderCommand::Reject`].
//! - The cancellation saga at its end: [`OrderCommand::CompleteCancellation`]
//!   or [`OrderCommand::AbandonCancellation`].
//!
//! # Repeats are no-ops, contradictions are errors
//!
//! Saga steps run at least once (a process can die after a step took effect
//! and before the saga recorded it), so a saga's command that repeats what
//! already happened — confirming a CONFIRMED order, recording the same
//! payment twice — yields no events instead of failing. A command that
//! contradicts the state — confirming a REJECTED order, cancelling a PENDING
//! one — is refused with the status that forbids it; the API turns that into
//! `FAILED_PRECONDITION` / 409.

use chrono::{DateTime, Utc};
use eventstore::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::*;
use super::ids::{CustomerId, OrderId, PaymentId, SagaId};
use super::items::OrderLines;
use super::money::Money;
use super::reason::FailureReason;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; its saga is running.
    Pending,
    /// Stock committed and paid.
    Confirmed,
    /// The saga failed and was compensated.
    Rejected,
    /// Refunded and stock returned after confirmation.
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Whether `self → next` is an edge of the status machine.
    pub const fn may_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Pending, Self::Confirmed | Self::Rejected) | (Self::Confirmed, Self::Cancelled)
        )
    }

    /// No status can follow.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Cancelled)
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A placed order's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub lines: OrderLines,
    pub status: OrderStatus,
    pub stock_reserved: bool,
    pub payment_id: Option<PaymentId>,
    /// Why it was REJECTED.
    pub failure_reason: Option<FailureReason>,
    /// The cancellation saga running for this CONFIRMED order, if any.
    pub cancellation: Option<SagaId>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PlacedOrder {
    pub fn total(&self) -> Money {
        self.lines.total()
    }
}

/// An order's write model: nothing until it is placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order(Option<PlacedOrder>);

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Place {
        order_id: OrderId,
        customer_id: CustomerId,
        lines: OrderLines,
        at: DateTime<Utc>,
    },
    RecordStockReserved {
        at: DateTime<Utc>,
    },
    RecordPayment {
        payment_id: PaymentId,
        at: DateTime<Utc>,
    },
    /// Records the payment too if it was not recorded yet.
    Confirm {
        payment_id: PaymentId,
        at: DateTime<Utc>,
    },
    Reject {
        reason: FailureReason,
        at: DateTime<Utc>,
    },
    RequestCancellation {
        saga_id: SagaId,
        at: DateTime<Utc>,
    },
    CompleteCancellation {
        at: DateTime<Utc>,
    },
    AbandonCancellation {
        reason: FailureReason,
        at: DateTime<Utc>,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRuleError {
    #[error("the order does not exist")]
    NotPlaced,
    #[error("order {0} exists already")]
    AlreadyPlaced(OrderId),
    #[error("the order is {status}, no longer PENDING")]
    NotPending { status: OrderStatus },
    #[error("a {status} order cannot be cancelled")]
    NotCancellable { status: OrderStatus },
    #[error("the order is {status} and no cancellation is running")]
    NoCancellationRunning { status: OrderStatus },
    #[error("payment {reported} reported, but payment {recorded} is recorded")]
    PaymentMismatch {
        recorded: PaymentId,
        reported: PaymentId,
    },
}

impl Order {
    /// The order, once placed.
    pub fn placed(&self) -> Option<&PlacedOrder> {
        self.0.as_ref()
    }

    #[cfg(test)]
    pub fn status(&self) -> Option<OrderStatus> {
        self.0.as_ref().map(|order| order.status)
    }

    fn require(&self) -> Result<&PlacedOrder, OrderRuleError> {
        self.0.as_ref().ok_or(OrderRuleError::NotPlaced)
    }

    fn require_pending(&self) -> Result<&PlacedOrder, OrderRuleError> {
        let order = self.require()?;
        match order.status {
            OrderStatus::Pending => Ok(order),
            status => Err(OrderRuleError::NotPending { status }),
        }
    }

    fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderRuleError> {
        use OrderCommand as C;
        use OrderEvent as E;
        match command {
            C::Place {
                order_id,
                customer_id,
                lines,
                at,
            } => {
                if let Some(order) = &self.0 {
                    return Err(OrderRuleError::AlreadyPlaced(order.id));
                }
                let total = lines.total();
                Ok(vec![E::Placed(OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    total,
                    at,
                })])
            }
            C::RecordStockReserved { at } => {
                let order = self.require_pending()?;
                Ok(if order.stock_reserved {
                    vec![]
                } else {
                    vec![E::StockReserved(StockReserved { at })]
                })
            }
            C::RecordPayment { payment_id, at } => {
                let order = self.require_pending()?;
                Self::payment_events(order, payment_id, at)
            }
            C::Confirm { payment_id, at } => {
                let order = self.require()?;
                match order.status {
                    OrderStatus::Confirmed => Ok(vec![]),
                    OrderStatus::Pending => {
                        let mut events = Self::payment_events(order, payment_id, at)?;
                        events.push(E::Confirmed(OrderConfirmed { at }));
                        Ok(events)
                    }
                    status => Err(OrderRuleError::NotPending { status }),
                }
            }
            C::Reject { reason, at } => {
                let order = self.require()?;
                match order.status {
                    OrderStatus::Rejected => Ok(vec![]),
                    OrderStatus::Pending => Ok(vec![E::Rejected(OrderRejected { reason, at })]),
                    status => Err(OrderRuleError::NotPending { status }),
                }
            }
            C::RequestCancellation { saga_id, at } => {
                let order = self.require()?;
                match (order.status, order.cancellation) {
                    (OrderStatus::Confirmed, Some(_)) => Ok(vec![]),
                    (OrderStatus::Confirmed, None) => {
                        Ok(vec![E::CancellationRequested(OrderCancellationRequested {
                            saga_id,
                            at,
                        })])
                    }
                    (status, _) => Err(OrderRuleError::NotCancellable { status }),
                }
            }
            C::CompleteCancellation { at } => {
                let order = self.require()?;
                match (order.status, order.cancellation) {
                    (OrderStatus::Cancelled, _) => Ok(vec![]),
                    (OrderStatus::Confirmed, Some(_)) => {
                        Ok(vec![E::Cancelled(OrderCancelled { at })])
                    }
                    (status, _) => Err(OrderRuleError::NoCancellationRunning { status }),
                }
            }
            C::AbandonCancellation { reason, at } => {
                let order = self.require()?;
                match (order.status, order.cancellation) {
                    (OrderStatus::Confirmed, Some(_)) => {
                        Ok(vec![E::CancellationRejected(OrderCancellationRejected {
                            reason,
                            at,
                        })])
                    }
                    (OrderStatus::Confirmed, None) => Ok(vec![]),
                    (status, _) => Err(OrderRuleError::NoCancellationRunning { status }),
                }
            }
        }
    }

    /// `PaymentCompleted` unless this payment is recorded already; a
    /// different payment for the same order is a contradiction (the wallet
    /// charges an order once).
    fn payment_events(
        order: &PlacedOrder,
        payment_id: PaymentId,
        at: DateTime<Utc>,
    ) -> Result<Vec<OrderEvent>, OrderRuleError> {
        match order.payment_id {
            Some(recorded) if recorded == payment_id => Ok(vec![]),
            Some(recorded) => Err(OrderRuleError::PaymentMismatch {
                recorded,
                reported: payment_id,
            }),
            None => Ok(vec![OrderEvent::PaymentCompleted(PaymentCompleted {
                payment_id,
                at,
            })]),
        }
    }
}

impl Aggregate for Order {
    const CATEGORY: &'static str = "order";

    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = OrderRuleError;

    fn apply(&mut self, event: &OrderEvent) {
        if let OrderEvent::Placed(placed) = event {
            self.0 = Some(PlacedOrder {
                id: placed.order_id,
                customer_id: placed.customer_id,
                lines: placed.lines.clone(),
                status: OrderStatus::Pending,
                stock_reserved: false,
                payment_id: None,
                failure_reason: None,
                cancellation: None,
                placed_at: placed.at,
                updated_at: placed.at,
            });
            return;
        }
        // Events of an order that was never placed cannot exist; ignore.
        let Some(order) = self.0.as_mut() else {
            return;
        };
        order.updated_at = event.at();
        match event {
            OrderEvent::Placed(_) => {}
            OrderEvent::StockReserved(_) => order.stock_reserved = true,
            OrderEvent::PaymentCompleted(e) => order.payment_id = Some(e.payment_id),
            OrderEvent::Confirmed(_) => order.status = OrderStatus::Confirmed,
            OrderEvent::Rejected(e) => {
                order.status = OrderStatus::Rejected;
                order.failure_reason = Some(e.reason.clone());
            }
            OrderEvent::CancellationRequested(e) => order.cancellation = Some(e.saga_id),
            OrderEvent::CancellationRejected(_) => order.cancellation = None,
            OrderEvent::Cancelled(_) => {
                order.status = OrderStatus::Cancelled;
                order.cancellation = None;
            }
        }
    }

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderRuleError> {
        self.decide(command)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::domain::ids::ProductId;
    use crate::domain::items::tests::offer;
    use crate::domain::items::{OrderItem, OrderItems, Quantity};

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_750_000_000 + second, 0)
            .single()
            .unwrap()
    }

    fn lines() -> OrderLines {
        let product = ProductId::from_uuid(Uuid::from_u128(7));
        OrderItems::parse(vec![OrderItem {
            product_id: product,
            quantity: Quantity::new(3).unwrap(),
        }])
        .unwrap()
        .price(&[offer(product, 250)])
        .unwrap()
    }

    fn payment(n: u128) -> PaymentId {
        PaymentId::from_uuid(Uuid::from_u128(n))
    }

    fn reason(code: &str) -> FailureReason {
        FailureReason::parse(code).unwrap()
    }

    /// Handles `command` and folds the events in.
    fn run(order: &mut Order, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderRuleError> {
        let events = order.handle(command)?;
        for event in &events {
            order.apply(event);
        }
        Ok(events)
    }

    fn placed() -> Order {
        let mut order = Order::default();
        run(
            &mut order,
            OrderCommand::Place {
                order_id: OrderId::from_uuid(Uuid::from_u128(1)),
                customer_id: CustomerId::from_uuid(Uuid::from_u128(2)),
                lines: lines(),
                at: at(0),
            },
        )
        .unwrap();
        order
    }

    #[test]
    fn the_happy_path_confirms_then_cancels() {
        let mut order = placed();
        assert_eq!(order.status(), Some(OrderStatus::Pending));
        assert_eq!(order.placed().unwrap().total().amount(), 750);
        run(&mut order, OrderCommand::RecordStockReserved { at: at(1) }).unwrap();
        let events = run(
            &mut order,
            OrderCommand::Confirm {
                payment_id: payment(9),
                at: at(2),
            },
        )
        .unwrap();
        assert_eq!(events.len(), 2, "payment recorded along: {events:?}");
        assert_eq!(order.status(), Some(OrderStatus::Confirmed));
        assert_eq!(order.placed().unwrap().payment_id, Some(payment(9)));

        let saga = SagaId::from_uuid(Uuid::from_u128(3));
        run(
            &mut order,
            OrderCommand::RequestCancellation {
                saga_id: saga,
                at: at(3),
            },
        )
        .unwrap();
        assert_eq!(order.status(), Some(OrderStatus::Confirmed));
        assert_eq!(order.placed().unwrap().cancellation, Some(saga));
        run(&mut order, OrderCommand::CompleteCancellation { at: at(4) }).unwrap();
        assert_eq!(order.status(), Some(OrderStatus::Cancelled));
        assert_eq!(order.placed().unwrap().updated_at, at(4));
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        let mut order = placed();
        assert_eq!(
            order.handle(OrderCommand::RequestCancellation {
                saga_id: SagaId::generate(),
                at: at(1)
            }),
            Err(OrderRuleError::NotCancellable {
                status: OrderStatus::Pending
            })
        );
        run(
            &mut order,
            OrderCommand::Reject {
                reason: reason("INSUFFICIENT_STOCK"),
                at: at(1),
            },
        )
        .unwrap();
        assert_eq!(
            order.placed().unwrap().failure_reason,
            Some(reason("INSUFFICIENT_STOCK"))
        );
        assert_eq!(
            order.handle(OrderCommand::Confirm {
                payment_id: payment(1),
                at: at(2)
            }),
            Err(OrderRuleError::NotPending {
                status: OrderStatus::Rejected
            })
        );
        assert_eq!(
            order.handle(OrderCommand::RequestCancellation {
                saga_id: SagaId::generate(),
                at: at(2)
            }),
            Err(OrderRuleError::NotCancellable {
                status: OrderStatus::Rejected
            })
        );
        assert_eq!(
            Order::default().handle(OrderCommand::RecordStockReserved { at: at(0) }),
            Err(OrderRuleError::NotPlaced)
        );
        assert!(matches!(
            order.handle(OrderCommand::Place {
                order_id: OrderId::generate(),
                customer_id: CustomerId::from_uuid(Uuid::from_u128(2)),
                lines: lines(),
                at: at(3),
            }),
            Err(OrderRuleError::AlreadyPlaced(_))
        ));
    }

    #[test]
    fn a_refused_cancellation_leaves_the_order_confirmed_and_cancellable() {
        let mut order = placed();
        run(
            &mut order,
            OrderCommand::Confirm {
                payment_id: payment(1),
                at: at(1),
            },
        )
        .unwrap();
        run(
            &mut order,
            OrderCommand::RequestCancellation {
                saga_id: SagaId::generate(),
                at: at(2),
            },
        )
        .unwrap();
        run(
            &mut order,
            OrderCommand::AbandonCancellation {
                reason: reason("ACCOUNT_CLOSED"),
                at: at(3),
            },
        )
        .unwrap();
        assert_eq!(order.status(), Some(OrderStatus::Confirmed));
        assert_eq!(order.placed().unwrap().cancellation, None);
        assert_eq!(
            order.handle(OrderCommand::CompleteCancellation { at: at(4) }),
            Err(OrderRuleError::NoCancellationRunning {
                status: OrderStatus::Confirmed
            })
        );
        assert!(
            run(
                &mut order,
                OrderCommand::RequestCancellation {
                    saga_id: SagaId::generate(),
                    at: at(5)
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_second_payment_for_one_order_is_a_contradiction() {
        let mut order = placed();
        run(
            &mut order,
            OrderCommand::RecordPayment {
                payment_id: payment(1),
                at: at(1),
            },
        )
        .unwrap();
        assert_eq!(
            run(
                &mut order,
                OrderCommand::RecordPayment {
                    payment_id: payment(1),
                    at: at(2)
                }
            ),
            Ok(vec![])
        );
        assert_eq!(
            order.handle(OrderCommand::Confirm {
                payment_id: payment(2),
                at: at(2)
            }),
            Err(OrderRuleError::PaymentMismatch {
                recorded: payment(1),
                reported: payment(2)
            })
        );
    }

    fn command() -> impl Strategy<Value = OrderCommand> {
        let when = (0i64..1000).prop_map(at);
        let pay = (1u128..3).prop_map(payment);
        let why = prop::sample::select(vec![
            "INSUFFICIENT_STOCK",
            "INSUFFICIENT_FUNDS",
            "PAYMENT_TIMEOUT",
        ])
        .prop_map(reason);
        prop_oneof![
            when.clone()
                .prop_map(|at| OrderCommand::RecordStockReserved { at }),
            (pay.clone(), when.clone())
                .prop_map(|(payment_id, at)| OrderCommand::RecordPayment { payment_id, at }),
            (pay, when.clone())
                .prop_map(|(payment_id, at)| OrderCommand::Confirm { payment_id, at }),
            (why.clone(), when.clone())
                .prop_map(|(reason, at)| OrderCommand::Reject { reason, at }),
            when.clone()
                .prop_map(|at| OrderCommand::RequestCancellation {
                    saga_id: SagaId::from_uuid(Uuid::from_u128(5)),
                    at
                }),
            when.clone()
                .prop_map(|at| OrderCommand::CompleteCancellation { at }),
            (why, when).prop_map(|(reason, at)| OrderCommand::AbandonCancellation { reason, at }),
        ]
    }

    proptest! {
        /// Whatever the saga and the customer send, in whatever order, the
        /// status only ever moves along the machine's edges, a final status
        /// never changes, the lines never change, and replaying the recorded
        /// events rebuilds exactly the same state.
        #[test]
        fn the_status_machine_holds_under_any_command_sequence(commands in prop::collection::vec(command(), 0..40)) {
            let mut order = placed();
            let original_lines = order.placed().unwrap().lines.clone();
            let mut order_from_log = Order::default();
            // `placed()` was built from this one event.
            let mut log = vec![OrderEvent::Placed(OrderPlaced {
                order_id: OrderId::from_uuid(Uuid::from_u128(1)),
                customer_id: CustomerId::from_uuid(Uuid::from_u128(2)),
                lines: lines(),
                total: lines().total(),
                at: at(0),
            })];
            for command in commands {
                let before = order.status().unwrap();
                match run(&mut order, command.clone()) {
                    Ok(events) => {
                        let after = order.status().unwrap();
                        prop_assert!(before == after || before.may_become(after), "{before} -> {after}");
                        if before.is_final() {
                            prop_assert_eq!(before, after);
                        }
                        // Doing it again changes nothing (saga steps repeat).
                        prop_assert_eq!(order.handle(command), Ok(vec![]));
                        log.extend(events);
                    }
                    Err(_) => prop_assert_eq!(order.status().unwrap(), before),
                }
                prop_assert_eq!(&order.placed().unwrap().lines, &original_lines);
            }
            for event in &log {
                order_from_log.apply(event);
            }
            prop_assert_eq!(order_from_log, order);
        }
    }
}
