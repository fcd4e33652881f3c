//! The saga's commands in, their replies out (RabbitMQ).
//!
//! `payment.charge` and `payment.refund` arrive on a durable quorum queue
//! bound to the commands exchange, with a retry path and a dead-letter queue
//! (the messaging crate's topology). For each delivery:
//!
//! 1. the body is decoded with the contract's types — a body that does not
//!    decode can never succeed and goes to the dead-letter queue at once,
//!    without blocking the messages behind it; a decodable command with bad
//!    values (a zero amount) is *answered*, `declined` with
//!    `INVALID_COMMAND`, so the saga does not wait for a reply that never
//!    comes;
//! 2. the use case runs ([`Payments::execute`]): exactly-once by command id;
//! 3. the reply is sent — to the exchange in the command's `reply-to` header,
//!    or else to the AMQP `reply_to` queue of a request — and only then is
//!    the delivery acknowledged. A reply that cannot be sent requeues the
//!    command; its next delivery is a duplicate and sends the stored reply
//!    again. While the database cannot be reached, the command is held and
//!    tried again when it can, at no cost to its attempts. Another failure
//!    that may pass (a conflict, an injected fault) requeues it, until the
//!    subscription's attempts run out and it is dead-lettered; one that
//!    cannot (a bug, corrupt stored data) is dead-lettered at once, with the
//!    reason, for an operator.
//!
//! A charge for a customer whose wallet is not open yet is not declined at
//! once: the wallet opens when this service handles the customer's
//! `user.registered`, and an order placed right after registering can
//! overtake it. Such a charge is requeued (counted) until its last attempt,
//! and declined `ACCOUNT_NOT_FOUND` only then.
//!
//! Replies are at least once: an orchestrator may see one reply twice, and
//! both copies say the same.

use messaging::{
    Broker, CloudEvent, Delivery, Headers, MessagingError, Nack, OutgoingMessage, ReceivedMessage,
    Subscription, envelope,
};
use payment_contract::{
    ChargePayment, DeclineReason as WireReason, Outcome, PaymentCommand, PaymentReply,
    RefundPayment, headers,
};
use platform::db::Database;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{SOURCE, contract_money, contract_reason};
use crate::app::commands::{CommandOutcome, PaymentRequest, UnopenedWallet};
use crate::app::{Payments, RequestContext};
use crate::domain::events::DeclineReason;
use crate::domain::ids::{CommandId, OrderId, UserId};
use crate::domain::money::{Amount, Currency};
use crate::error::PaymentError;
use crate::store::CommandKind;

/// Consumes the commands queue until `cancel` fires, handling up to
/// `concurrency` commands at once, then drains.
pub async fn consume(
    payments: Payments,
    database: Database,
    broker: Broker,
    subscription: Subscription,
    concurrency: usize,
    cancel: CancellationToken,
) {
    let Some(deliveries) = super::subscribe(&database, &broker, &subscription, &cancel).await
    else {
        return;
    };
    let handler = Handler {
        payments,
        broker,
        max_attempts: subscription.max_attempts,
    };
    let handler = &handler;
    deliveries
        .consume_deliveries(
            concurrency,
            cancel,
            move |delivery, release_held| async move {
                handler.handle(delivery, &release_held).await;
            },
        )
        .await;
}

struct Handler {
    payments: Payments,
    /// Where replies to a `reply-to` exchange are published.
    broker: Broker,
    /// The subscription's: a charge for a wallet not open yet is tried again
    /// until the last of them.
    max_attempts: u32,
}

/// A reply ready to send.
struct Reply {
    message_type: &'static str,
    order_id: Uuid,
    body: PaymentReply,
}

impl Handler {
    /// Processes `delivery` (held while the database is down), replies, then
    /// settles it; a delivery still held when `release_held` fires is handed
    /// back.
    async fn handle(&self, delivery: Delivery, release_held: &CancellationToken) {
        let span = delivery.span().clone();
        async {
            let outcome = delivery
                .handle_through_outages(release_held, || self.process(delivery.message()))
                .await;
            let Some(outcome) = outcome else {
                let _ = delivery.release().await;
                return;
            };
            // Failures to settle are logged and measured by the delivery.
            let _ = match outcome {
                Ok(reply) => match self.send_reply(&delivery, reply).await {
                    Ok(()) => delivery.ack().await,
                    Err(error) => {
                        tracing::warn!(%error, "reply not sent; the command will be redelivered");
                        delivery
                            .nack(Nack::requeue(format!("reply not sent: {error}")))
                            .await
                    }
                },
                Err(nack) => {
                    if nack.requeues() {
                        tracing::warn!(reason = %nack.reason, "command failed; will retry");
                    } else {
                        tracing::error!(reason = %nack.reason, "command dead-lettered");
                    }
                    delivery.nack(nack).await
                }
            };
        }
        .instrument(span)
        .await;
    }

    async fn process(&self, message: &ReceivedMessage) -> Result<Reply, Nack> {
        let message_type = message.headers.get(envelope::TYPE).unwrap_or_default();
        let command = PaymentCommand::decode(message_type, &message.payload)
            .map_err(|error| Nack::reject(error.to_string()))?;
        let outcome = match parse(&command) {
            Err(detail) => Outcome::Declined {
                reason: WireReason::InvalidCommand,
                detail,
            },
            Ok(request) => {
                let context = RequestContext {
                    user_id: Some(request.customer),
                    correlation_id: message
                        .headers
                        .get(headers::SAGA_ID)
                        .or(message.headers.get(headers::CORRELATION_ID))
                        .and_then(|id| Uuid::parse_str(id).ok()),
                    causation_id: message.message_id().and_then(|id| Uuid::parse_str(id).ok()),
                };
                let unopened = if message.attempt < self.max_attempts {
                    UnopenedWallet::Wait
                } else {
                    UnopenedWallet::Decline
                };
                let outcome = self
                    .payments
                    .execute(&request, unopened, &context)
                    .await
                    .map_err(|error| match error {
                        PaymentError::AccountNotFound if unopened == UnopenedWallet::Wait => {
                            Nack::requeue(format!(
                                "no wallet for customer {} yet",
                                request.customer
                            ))
                        }
                        error => error.nack(),
                    })?;
                wire_outcome(outcome)
            }
        };
        Ok(Reply {
            message_type: command.reply_type(),
            order_id: command.order_id(),
            body: PaymentReply {
                command_id: command.command_id().to_owned(),
                order_id: command.order_id(),
                outcome,
            },
        })
    }

    /// Sends `reply` where the command asked, with the command's
    /// correlation headers.
    async fn send_reply(&self, delivery: &Delivery, reply: Reply) -> Result<(), MessagingError> {
        let payload = serde_json::to_vec(&reply.body).map_err(|error| MessagingError::Invalid {
            system: delivery.system(),
            what: "reply",
            reason: error.to_string(),
        })?;
        let mut reply_headers = Headers::new();
        for name in headers::ECHOED {
            if let Some(value) = delivery.headers.get(name) {
                reply_headers.insert(name, value);
            }
        }
        CloudEvent::new(reply.message_type, SOURCE)
            .with_subject(reply.order_id.to_string())
            .write_to(&mut reply_headers);
        match delivery.headers.get(headers::REPLY_TO) {
            Some(destination) => {
                let mut message =
                    OutgoingMessage::new(destination, payload).with_key(reply.order_id.to_string());
                message.headers = reply_headers;
                self.broker.publish(message).await.map(drop)
            }
            None => match delivery.reply(reply_headers, payload).await {
                Err(MessagingError::Invalid { what: "reply", .. }) => {
                    tracing::warn!(
                        command_id = %reply.body.command_id,
                        "command has neither a reply-to header nor a reply queue; nobody to answer"
                    );
                    Ok(())
                }
                other => other,
            },
        }
    }
}

/// The contract's command as a use-case request, or why it is invalid.
fn parse(command: &PaymentCommand) -> Result<PaymentRequest, String> {
    let (kind, command_id, order_id, customer_id, amount) = match command {
        PaymentCommand::Charge(ChargePayment {
            command_id,
            order_id,
            customer_id,
            amount,
        }) => (
            CommandKind::Charge,
            command_id,
            order_id,
            customer_id,
            amount,
        ),
        PaymentCommand::Refund(RefundPayment {
            command_id,
            order_id,
            customer_id,
            amount,
        }) => (
            CommandKind::Refund,
            command_id,
            order_id,
            customer_id,
            amount,
        ),
    };
    let command_id = CommandId::parse(command_id).map_err(|error| format!("command_id {error}"))?;
    let currency =
        Currency::parse(&amount.currency).map_err(|error| format!("amount.currency {error}"))?;
    let amount =
        Amount::new(amount.amount, currency).map_err(|error| format!("amount.amount {error}"))?;
    Ok(PaymentRequest {
        kind,
        command_id,
        order_id: OrderId::from_uuid(*order_id),
        customer: UserId::from_uuid(*customer_id),
        amount,
    })
}

/// The use case's outcome as the contract spells it.
fn wire_outcome(outcome: CommandOutcome) -> Outcome {
    match outcome {
        CommandOutcome::Charged { payment_id, amount } => Outcome::Charged {
            payment_id: payment_id.as_uuid(),
            amount: contract_money(amount.money()),
        },
        CommandOutcome::Refunded { refund_id, amount } => Outcome::Refunded {
            refund_id: refund_id.map(|id| id.as_uuid()),
            amount: contract_money(amount),
        },
        CommandOutcome::Declined { reason } => Outcome::Declined {
            reason: contract_reason(reason),
            detail: describe(reason).to_owned(),
        },
        CommandOutcome::CommandIdReused => Outcome::Declined {
            reason: WireReason::CommandIdReused,
            detail: "the command id was used before for a different request".to_owned(),
        },
    }
}

fn describe(reason: DeclineReason) -> &'static str {
    match reason {
        DeclineReason::InsufficientFunds => "the wallet's balance is below the amount",
        DeclineReason::AccountFrozen => "the wallet is frozen",
        DeclineReason::AccountClosed => "the wallet is closed",
        DeclineReason::AccountNotFound => "the customer has no wallet",
        DeclineReason::CurrencyMismatch => "the amount is not in the wallet's currency",
        DeclineReason::NothingToRefund => {
            "nothing was charged for this order; it is voided and will not be charged"
        }
        DeclineReason::OrderVoided => "the order was voided by a refund before it was charged",
        DeclineReason::RefundExceedsCharge => {
            "the refund exceeds what is left of the order's charge"
        }
    }
}

#[cfg(test)]
mod tests {
    use payment_contract::Money;

    use super::*;

    fn charge(amount: i64, currency: &str, command_id: &str) -> PaymentCommand {
        PaymentCommand::Charge(ChargePayment {
            command_id: command_id.into(),
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            amount: Money::new(amount, currency),
        })
    }

    #[test]
    fn valid_commands_become_requests() {
        let request = parse(&charge(2599, "EUR", "saga:charge_payment")).unwrap();
        assert_eq!(request.kind, CommandKind::Charge);
        assert_eq!(request.amount.minor_units(), 2599);
        assert_eq!(request.command_id.as_str(), "saga:charge_payment");
    }

    #[test]
    fn invalid_values_are_named() {
        assert!(
            parse(&charge(0, "EUR", "c"))
                .unwrap_err()
                .contains("amount.amount")
        );
        assert!(
            parse(&charge(-5, "EUR", "c"))
                .unwrap_err()
                .contains("amount.amount")
        );
        assert!(
            parse(&charge(5, "euro", "c"))
                .unwrap_err()
                .contains("amount.currency")
        );
        assert!(
            parse(&charge(5, "EUR", ""))
                .unwrap_err()
                .contains("command_id")
        );
    }

    #[test]
    fn outcomes_keep_their_codes_on_the_wire() {
        let Outcome::Declined { reason, .. } = wire_outcome(CommandOutcome::Declined {
            reason: DeclineReason::InsufficientFunds,
        }) else {
            panic!("not a decline");
        };
        assert_eq!(reason.code(), "INSUFFICIENT_FUNDS");
    }
}
