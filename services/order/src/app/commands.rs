//! Use cases that change orders: placing one and cancelling one.
//!
//! Both end the same way: in one transaction, the order's new events (and
//! the messages announcing them, through the outbox) and the saga that will
//! carry the change out. Either both exist or neither does, so no order is
//! ever PENDING without a saga to settle it, and no saga works for an order
//! that was never recorded.

use chrono::Utc;
use eventstore::GlobalPosition;
use platform::validation::Violations;
use saga::NewSaga;

use super::{Caller, Orders};
use crate::domain::ids::{CustomerId, OrderId, ProductId, SagaId};
use crate::domain::items::{LinesError, OrderItem, OrderItems, PricingError, Quantity};
use crate::domain::money::MoneyError;
use crate::domain::order::{OrderCommand, OrderStatus};
use crate::domain::request::{IdempotencyKey, RequestFingerprint};
use crate::error::OrderError;
use crate::inventory::InventoryError;
use crate::saga::{CancelOrderData, PlaceOrderData, count_statuses};
use crate::store::{self, StoredRequest};

/// A request to place an order.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub customer: CustomerId,
    pub items: OrderItems,
    pub key: IdempotencyKey,
}

impl PlaceOrder {
    /// `customer`'s request as sent over REST or gRPC: the items as
    /// `(product_id, quantity)`, and the idempotency key under its name on
    /// that surface, `key_field`. Every bad field is named: each
    /// `items[i].product_id` and `items[i].quantity`, then `items` as a whole
    /// once every item is valid, and the key.
    pub fn parse<'a>(
        customer: CustomerId,
        items: impl IntoIterator<Item = (&'a str, u32)>,
        key_field: &str,
        key: &str,
    ) -> Result<Self, OrderError> {
        let mut violations = Violations::default();
        let mut parsed = Vec::new();
        for (index, (product_id, quantity)) in items.into_iter().enumerate() {
            let product_id = violations.check(
                format!("items[{index}].product_id"),
                ProductId::parse(product_id),
            );
            let quantity =
                violations.check(format!("items[{index}].quantity"), Quantity::new(quantity));
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                parsed.push(OrderItem {
                    product_id,
                    quantity,
                });
            }
        }
        let items = if violations.is_empty() {
            violations.check("items", OrderItems::parse(parsed))
        } else {
            None
        };
        let key = violations.check(key_field, IdempotencyKey::parse(key));
        match (items, key) {
            (Some(items), Some(key)) => Ok(Self {
                customer,
                items,
                key,
            }),
            _ => Err(violations.into()),
        }
    }
}

/// The answer to PlaceOrder and CancelOrder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub order_id: OrderId,
    /// The order's status when the answer was given.
    pub status: OrderStatus,
    /// Where the order's latest event sits: queries given it wait for their
    /// read model to get there.
    pub token: Option<GlobalPosition>,
}

impl Orders {
    /// Prices the items at the inventory, records the PENDING order and
    /// starts its placement saga — or, for a key used before with the same
    /// items, answers with the order that request created.
    pub async fn place_order(&self, request: PlaceOrder) -> Result<Accepted, OrderError> {
        let fingerprint = RequestFingerprint::of(&request.items);
        if let Some(existing) = self.store.request(request.customer, &request.key).await? {
            return self.replay(existing, &fingerprint, &request.key).await;
        }

        let product_ids: Vec<_> = request.items.product_ids().collect();
        let offers = self
            .inventory
            .offers(&product_ids)
            .await
            .map_err(upstream)?;
        let lines = request.items.price(&offers).map_err(pricing_error)?;

        let order_id = OrderId::generate();
        let mut transaction = self.store.pool().begin().await?;
        let claimed = self
            .store
            .claim_request_in(
                &mut transaction,
                request.customer,
                &request.key,
                order_id,
                &fingerprint,
            )
            .await?;
        if !claimed {
            // A concurrent request with this key committed first.
            transaction.rollback().await?;
            let existing = self
                .store
                .request(request.customer, &request.key)
                .await?
                .ok_or_else(|| OrderError::Internal("an idempotency record vanished".into()))?;
            return self.replay(existing, &fingerprint, &request.key).await;
        }
        let saga = PlaceOrderData {
            order_id,
            customer_id: request.customer,
            items: lines.items(),
            total: lines.total(),
            payment_id: None,
        };
        let command = OrderCommand::Place {
            order_id,
            customer_id: request.customer,
            lines,
            at: Utc::now(),
        };
        let metadata = store::metadata(order_id, Some(request.customer));
        let recorded = self
            .store
            .record_in(&mut transaction, order_id, command, &metadata)
            .await?;
        self.sagas
            .place
            .start_in(
                &mut transaction,
                NewSaga::new(saga).with_id(order_id.as_uuid()),
            )
            .await?;
        transaction.commit().await?;
        self.sagas.place.announce().await;
        count_statuses(&recorded.events);
        tracing::info!(order.id = %order_id, total = %recorded.order.total(), "order placed");
        Ok(Accepted {
            order_id,
            status: recorded.order.status,
            token: recorded.appended.map(|appended| appended.position),
        })
    }

    /// The answer to a repeated PlaceOrder: the first request's order, if
    /// it ordered the same.
    async fn replay(
        &self,
        existing: StoredRequest,
        fingerprint: &RequestFingerprint,
        key: &IdempotencyKey,
    ) -> Result<Accepted, OrderError> {
        if existing.fingerprint != *fingerprint {
            return Err(OrderError::IdempotencyKeyReused(key.to_string()));
        }
        let order = self.store.load(existing.order_id).await?.ok_or_else(|| {
            OrderError::Internal(format!(
                "order {} of a recorded request is missing",
                existing.order_id
            ))
        })?;
        Ok(Accepted {
            order_id: order.id,
            status: order.status,
            token: self.store.last_position(order.id).await?,
        })
    }

    /// Accepts the cancellation of the caller's CONFIRMED order and starts
    /// its saga. Cancelling an order whose cancellation is already running
    /// starts nothing and succeeds.
    pub async fn cancel_order(
        &self,
        caller: &Caller,
        order_id: OrderId,
    ) -> Result<Accepted, OrderError> {
        let order = self
            .store
            .load(order_id)
            .await?
            .filter(|order| order.customer_id == caller.user_id)
            .ok_or(OrderError::OrderNotFound(order_id))?;
        let metadata = store::metadata(order_id, Some(caller.user_id));
        let mut attempt = 1;
        loop {
            let saga_id = SagaId::generate();
            let command = OrderCommand::RequestCancellation {
                saga_id,
                at: Utc::now(),
            };
            let mut transaction = self.store.pool().begin().await?;
            let recorded = match self
                .store
                .record_in(&mut transaction, order_id, command, &metadata)
                .await
            {
                Ok(recorded) => recorded,
                Err(OrderError::Conflict(_)) if attempt < store::CONFLICT_ATTEMPTS => {
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let starts_saga = !recorded.events.is_empty();
            if starts_saga {
                let saga = CancelOrderData {
                    order_id,
                    customer_id: order.customer_id,
                    total: order.total(),
                    refunded: false,
                };
                self.sagas
                    .cancel
                    .start_in(
                        &mut transaction,
                        NewSaga::new(saga).with_id(saga_id.as_uuid()),
                    )
                    .await?;
                tracing::info!(order.id = %order_id, saga.id = %saga_id, "cancellation accepted");
            }
            transaction.commit().await?;
            if starts_saga {
                self.sagas.cancel.announce().await;
            }
            return Ok(Accepted {
                order_id,
                status: recorded.order.status,
                token: match recorded.appended {
                    Some(appended) => Some(appended.position),
                    None => self.store.last_position(order_id).await?,
                },
            });
        }
    }
}

fn upstream(error: InventoryError) -> OrderError {
    match error {
        InventoryError::Unavailable(reason) => OrderError::UpstreamUnavailable(reason),
        // Looking products up is never refused for a valid id; a refusal
        // here means the two services disagree about the contract.
        InventoryError::Refused { code, message } => OrderError::Internal(format!(
            "inventory refused a product lookup ({code}): {message}"
        )),
    }
}

fn pricing_error(error: PricingError) -> OrderError {
    match error {
        PricingError::UnknownProduct(product_id) => OrderError::ProductNotFound {
            field: "items".into(),
            product_id,
        },
        PricingError::Lines(LinesError::Money(MoneyError::Overflow)) => {
            OrderError::invalid("items", "the order's total is out of range")
        }
        // One shop, one currency: prices in two currencies are the
        // catalogue's misconfiguration, not the customer's mistake.
        other => OrderError::Internal(format!("cannot price the order: {other}")),
    }
}
