//! `product_sales`: units and revenue per product and day, built from the
//! integration events on Kafka rather than from this service's own event
//! log — the way any other service (analytics, a warehouse) would build it.
//!
//! An `order.confirmed` adds its lines to the day it was confirmed, an
//! `order.cancelled` adds its lines to the *cancelled* columns of the day it
//! was cancelled; the net figures are the difference. So, summed over all
//! days, the net units and revenue of a product equal its CONFIRMED order
//! lines minus its CANCELLED ones.
//!
//! The counters accumulate, which is only correct if every message counts
//! once: the consumer ([`crate::messaging::sales`]) applies each message in
//! the same transaction as its inbox record, so a redelivery is a no-op.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::messaging::contract::LineV1;

/// The inbox consumer name of this read model.
pub const CONSUMER: &str = "order.product-sales";

/// Whether lines were sold or a sale was reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    Sold,
    Cancelled,
}

/// Adds `lines` to `day`'s figures on `connection` (the inbox transaction).
pub async fn record(
    connection: &mut PgConnection,
    movement: Movement,
    day: NaiveDate,
    lines: &[LineV1],
) -> Result<(), sqlx::Error> {
    for line in lines {
        let units = i64::from(line.quantity);
        let revenue = line.line_total.amount();
        let (sold, cancelled, earned, returned) = match movement {
            Movement::Sold => (units, 0, revenue, 0),
            Movement::Cancelled => (0, units, 0, revenue),
        };
        sqlx::query(
            "INSERT INTO product_sales (product_id, day, currency, product_name, \
                                        units_sold, units_cancelled, revenue, revenue_cancelled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (product_id, day, currency) DO UPDATE SET \
                product_name = EXCLUDED.product_name, \
                units_sold = product_sales.units_sold + EXCLUDED.units_sold, \
                units_cancelled = product_sales.units_cancelled + EXCLUDED.units_cancelled, \
                revenue = product_sales.revenue + EXCLUDED.revenue, \
                revenue_cancelled = product_sales.revenue_cancelled + EXCLUDED.revenue_cancelled",
        )
        .bind(line.product_id.as_uuid())
        .bind(day)
        .bind(line.line_total.currency().as_str())
        .bind(&line.product_name)
        .bind(sold)
        .bind(cancelled)
        .bind(earned)
        .bind(returned)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// One product's figures on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DailySales {
    pub product_id: Uuid,
    pub day: NaiveDate,
    pub currency: String,
    pub product_name: String,
    pub units_sold: i64,
    pub units_cancelled: i64,
    pub revenue: i64,
    pub revenue_cancelled: i64,
}

/// The figures of `day` (every product), best sellers first.
pub async fn of_day(pool: &PgPool, day: NaiveDate) -> Result<Vec<DailySales>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, day, currency, product_name, units_sold, units_cancelled, \
                revenue, revenue_cancelled \
           FROM product_sales WHERE day = $1 \
          ORDER BY units_sold - units_cancelled DESC, product_id",
    )
    .bind(day)
    .fetch_all(pool)
    .await
}
