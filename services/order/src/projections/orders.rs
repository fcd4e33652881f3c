//! The order read models, `order_view` and `customer_order_history`: how
//! they are written (a [`Projection`] of the order event log) and how they
//! are read ([`OrderReadModels`]).
//!
//! Both tables hold the same columns — an order as a client sees it — but
//! each is its own read model with its own checkpoint and indexes: the view
//! is looked up by order id, the history is scanned per customer, newest
//! first, optionally by status. Keeping them apart lets either be rebuilt,
//! re-indexed or reshaped without touching the other.
//!
//! # Replace, never accumulate
//!
//! Every column is *set* from the event being applied (times included: they
//! come from the events, not from `now()`), and every update is guarded by
//! the stream version (`WHERE version < $new`), so applying an event twice
//! changes nothing and replaying the whole log rebuilds identical rows.

use chrono::{DateTime, Utc};
use eventstore::{ApplyError, DomainEvent, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::events::OrderEvent;
use crate::domain::ids::{CustomerId, OrderId, ProductId};
use crate::domain::items::OrderLine;
use crate::domain::money::{Currency, Money};
use crate::domain::order::OrderStatus;
use crate::error::OrderError;

/// Projection (and table) name of the per-order view.
pub const ORDER_VIEW: &str = "order_view";
/// Projection (and table) name of the per-customer history.
pub const ORDER_HISTORY: &str = "customer_order_history";

/// A line as the read models store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewLine {
    pub product_id: ProductId,
    pub product_name: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

impl ViewLine {
    fn of(line: &OrderLine) -> Self {
        Self {
            product_id: line.product_id,
            product_name: line.product_name.clone(),
            quantity: line.quantity.get(),
            unit_price: line.unit_price,
            line_total: line.line_total().unwrap_or(line.unit_price),
        }
    }
}

/// An order as the read models show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub lines: Vec<ViewLine>,
    pub total: Money,
    pub failure_reason: Option<String>,
    /// A CONFIRMED order whose cancellation is running.
    pub cancellation_pending: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Writes one of the two tables from the order event log.
#[derive(Debug, Clone, Copy)]
pub struct OrderRows {
    table: &'static str,
}

impl OrderRows {
    /// The `order_view` projection.
    pub fn view() -> Self {
        Self { table: ORDER_VIEW }
    }

    /// The `customer_order_history` projection.
    pub fn history() -> Self {
        Self {
            table: ORDER_HISTORY,
        }
    }

    /// Sets the columns an event changes (NULL parameters keep theirs).
    async fn update(
        &self,
        connection: &mut PgConnection,
        order_id: Uuid,
        event: &RecordedEvent,
        change: Change,
    ) -> Result<(), ApplyError> {
        let statement = format!(
            "UPDATE {} SET status = COALESCE($3, status), \
                    failure_reason = COALESCE($4, failure_reason), \
                    cancellation_pending = COALESCE($5, cancellation_pending), \
                    payment_id = COALESCE($6, payment_id), \
                    version = $2, updated_at = $7 \
              WHERE order_id = $1 AND version < $2",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(order_id)
            .bind(event.version)
            .bind(change.status.map(OrderStatus::as_str))
            .bind(change.failure_reason)
            .bind(change.cancellation_pending)
            .bind(change.payment_id)
            .bind(change.at)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// What one event changes in a row.
#[derive(Debug, Default)]
struct Change {
    status: Option<OrderStatus>,
    failure_reason: Option<String>,
    cancellation_pending: Option<bool>,
    payment_id: Option<Uuid>,
    at: Option<DateTime<Utc>>,
}

/// The order id of an `order-<uuid>` stream.
fn order_id_of(stream_id: &str) -> Option<Uuid> {
    stream_id
        .strip_prefix("order-")
        .and_then(|id| Uuid::try_parse(id).ok())
}

#[async_trait::async_trait]
impl Projection for OrderRows {
    fn name(&self) -> &str {
        self.table
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let Some(order_id) = order_id_of(&event.stream_id) else {
            return Ok(());
        };
        let decoded = OrderEvent::from_payload(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        )
        .map_err(|error| ApplyError::Other(Box::new(error)))?;
        let at = Some(decoded.at());
        let change = match decoded {
            OrderEvent::Placed(placed) => {
                let lines: Vec<ViewLine> = placed.lines.lines().iter().map(ViewLine::of).collect();
                let statement = format!(
                    "INSERT INTO {} (order_id, customer_id, status, lines, total_amount, currency, \
                                     version, created_at, updated_at) \
                     VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (order_id) DO NOTHING",
                    self.table
                );
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .bind(order_id)
                    .bind(placed.customer_id.as_uuid())
                    .bind(serde_json::to_value(&lines)?)
                    .bind(placed.total.amount())
                    .bind(placed.total.currency().as_str())
                    .bind(event.version)
                    .bind(placed.at)
                    .execute(connection)
                    .await?;
                return Ok(());
            }
            OrderEvent::StockReserved(_) => Change::default(),
            OrderEvent::PaymentCompleted(e) => Change {
                payment_id: Some(e.payment_id.as_uuid()),
                ..Change::default()
            },
            OrderEvent::Confirmed(_) => Change {
                status: Some(OrderStatus::Confirmed),
                ..Change::default()
            },
            OrderEvent::Rejected(e) => Change {
                status: Some(OrderStatus::Rejected),
                failure_reason: Some(e.reason.to_string()),
                ..Change::default()
            },
            OrderEvent::CancellationRequested(_) => Change {
                cancellation_pending: Some(true),
                ..Change::default()
            },
            OrderEvent::CancellationRejected(_) => Change {
                cancellation_pending: Some(false),
                ..Change::default()
            },
            OrderEvent::Cancelled(_) => Change {
                status: Some(OrderStatus::Cancelled),
                cancellation_pending: Some(false),
                ..Change::default()
            },
        };
        self.update(connection, order_id, event, Change { at, ..change })
            .await
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), ApplyError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", self.table)))
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// A row of either table.
#[derive(sqlx::FromRow)]
struct Row {
    order_id: Uuid,
    customer_id: Uuid,
    status: String,
    lines: serde_json::Value,
    total_amount: i64,
    currency: String,
    failure_reason: Option<String>,
    cancellation_pending: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_summary(self) -> Result<OrderSummary, OrderError> {
        let corrupt = |what: &str| {
            OrderError::Internal(format!("read model row {} has a bad {what}", self.order_id))
        };
        let status = OrderStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?;
        let currency = Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?;
        let total = Money::new(self.total_amount, currency).map_err(|_| corrupt("total"))?;
        let lines = serde_json::from_value(self.lines.clone()).map_err(|_| corrupt("lines"))?;
        Ok(OrderSummary {
            order_id: OrderId::from_uuid(self.order_id),
            customer_id: CustomerId::from_uuid(self.customer_id),
            status,
            lines,
            total,
            failure_reason: self.failure_reason,
            cancellation_pending: self.cancellation_pending,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "order_id, customer_id, status, lines, total_amount, currency, \
                       failure_reason, cancellation_pending, created_at, updated_at";

/// Reads the order read models.
#[derive(Debug, Clone)]
pub struct OrderReadModels {
    pool: PgPool,
}

impl OrderReadModels {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One order from `order_view`.
    pub async fn order(&self, id: OrderId) -> Result<Option<OrderSummary>, OrderError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {ORDER_VIEW} WHERE order_id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.map(Row::into_summary).transpose()
    }

    /// Up to `limit` of `customer`'s orders from `customer_order_history`,
    /// newest first, placed before `before` (the previous page's last id).
    pub async fn customer_orders(
        &self,
        customer: CustomerId,
        status: Option<OrderStatus>,
        before: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<OrderSummary>, OrderError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {ORDER_HISTORY} \
              WHERE customer_id = $1 \
                AND ($2::text IS NULL OR status = $2) \
                AND ($3::uuid IS NULL OR order_id < $3) \
              ORDER BY order_id DESC \
              LIMIT $4"
        )))
        .bind(customer.as_uuid())
        .bind(status.map(OrderStatus::as_str))
        .bind(before.map(|id| id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Row::into_summary).collect()
    }
}
