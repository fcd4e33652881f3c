//! Postgres adapter: the catalogue, stock levels and reservations.
//!
//! Reads go straight to the pool. Changes go through a [`StoreTx`], one
//! database transaction that a use case drives step by step: lock what it is
//! about to change, let the domain decide, write the result, record the
//! integration events in the outbox, commit. Locking is what makes
//! "no oversell" hold under concurrency:
//!
//! - Stock rows are locked with `SELECT … FOR UPDATE` *in product id order*
//!   ([`StoreTx::lock_entries`]), so the check ("is enough available?") and
//!   the write happen on a row no one else can change in between, and two
//!   transactions locking overlapping products always lock them in the same
//!   order: they queue, they never deadlock.
//! - A reservation row is locked before its products' stock rows, in every
//!   use case, for the same reason.
//! - Creating a reservation is `INSERT … ON CONFLICT DO NOTHING` on the
//!   caller's id: of two concurrent identical requests, the second waits for
//!   the first to commit and then finds its reservation, which is what makes
//!   `ReserveStock` idempotent even under a retry storm.
//!
//! The CHECK constraints in `migrations/inventory` repeat the domain's rules,
//! so a bug here would fail loudly instead of corrupting stock.
//!
//! Timestamps that matter to correctness (reservation deadlines) come from the
//! database clock, `now()`, which every replica shares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::events::InventoryEvent;
use crate::domain::money::Currency;
use crate::domain::product::{
    CatalogEntry, CatalogFilter, Category, Description, NewProduct, Price, Product, ProductId,
    ProductName, Sku,
};
use crate::domain::reservation::{Reservation, ReservationId, ReservationStatus, ReservedLine};
use crate::domain::stock::{Quantity, ReorderPolicy, Stock, StockLevel};
use crate::error::InventoryError;
use crate::messaging;

/// The catalogue columns joined with stock, as [`EntryRow`] reads them.
macro_rules! select_entries {
    ($($rest:literal),* $(,)?) => {
        concat!(
            "SELECT p.id, p.sku, p.name, p.description, p.price_amount, p.price_currency, \
                    p.category, p.active, p.created_at, p.updated_at, \
                    s.on_hand, s.reserved, s.version, s.updated_at AS stock_updated_at, \
                    s.avg_daily_demand, s.lead_time_days, s.safety_stock \
             FROM products p JOIN stock s ON s.product_id = p.id ",
            $($rest),*
        )
    };
}

/// Reads and transactions on the service's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Where the integration events recorded in the outbox go.
    events_topic: Arc<str>,
}

impl Store {
    pub fn new(pool: PgPool, events_topic: &str) -> Self {
        Self {
            pool,
            events_topic: Arc::from(events_topic),
        }
    }

    /// Starts a unit of work.
    pub async fn begin(&self) -> Result<StoreTx, InventoryError> {
        Ok(StoreTx {
            tx: self.pool.begin().await?,
            events_topic: Arc::clone(&self.events_topic),
        })
    }

    /// One product with its stock, active or not.
    pub async fn entry(&self, id: ProductId) -> Result<Option<CatalogEntry>, InventoryError> {
        sqlx::query_as::<_, EntryRow>(select_entries!("WHERE p.id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?
            .map(EntryRow::into_entry)
            .transpose()
    }

    /// Up to `limit` active products matching `filter` whose id comes after
    /// `after`, in id order: one page of a keyset-paginated listing. Each
    /// page is an index range scan that starts where the previous one ended,
    /// so page 1,000 costs what page 1 does (unlike `OFFSET`).
    pub async fn page(
        &self,
        filter: CatalogFilter,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<Vec<CatalogEntry>, InventoryError> {
        sqlx::query_as::<_, EntryRow>(select_entries!(
            "WHERE p.active \
               AND ($1::text IS NULL OR p.category = $1) \
               AND ($2::boolean IS NULL OR (s.available > 0) = $2) \
               AND ($3::uuid IS NULL OR p.id > $3) \
             ORDER BY p.id \
             LIMIT $4"
        ))
        .bind(filter.category.map(Category::as_str))
        .bind(filter.in_stock)
        .bind(after.map(|id| id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(EntryRow::into_entry)
        .collect()
    }

    /// The current stock level of a product.
    pub async fn stock_level(&self, id: ProductId) -> Result<Option<StockLevel>, InventoryError> {
        sqlx::query_as::<_, LevelRow>(
            "SELECT product_id, on_hand, reserved, version, updated_at \
             FROM stock WHERE product_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?
        .map(LevelRow::into_level)
        .transpose()
    }

    /// Adds a product and its stock row.
    ///
    /// Errors: [`InventoryError::SkuTaken`] when another product has the SKU.
    pub async fn create_product(
        &self,
        id: ProductId,
        new: &NewProduct,
    ) -> Result<CatalogEntry, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO products (id, sku, name, description, price_amount, price_currency, category) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_uuid())
        .bind(new.sku.as_str())
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.price.money().amount())
        .bind(new.price.money().currency().as_str())
        .bind(new.category.as_str())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(error))
                if error.is_unique_violation()
                    && error.constraint() == Some("products_sku_key") =>
            {
                return Err(InventoryError::SkuTaken(new.sku.clone()));
            }
            other => other?,
        };
        let policy = new.reorder_policy;
        sqlx::query(
            "INSERT INTO stock (product_id, on_hand, reserved, avg_daily_demand, lead_time_days, safety_stock) \
             VALUES ($1, $2, 0, $3, $4, $5)",
        )
        .bind(id.as_uuid())
        .bind(i64::from(new.initial_stock))
        .bind(i64::from(policy.avg_daily_demand))
        .bind(i64::from(policy.lead_time_days))
        .bind(i64::from(policy.safety_stock))
        .execute(&mut *tx)
        .await?;
        let entry = sqlx::query_as::<_, EntryRow>(select_entries!("WHERE p.id = $1"))
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await?
            .into_entry()?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Ids of held reservations past their deadline, most overdue first.
    pub async fn overdue_reservations(
        &self,
        limit: u32,
    ) -> Result<Vec<ReservationId>, InventoryError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM reservations \
             WHERE status = 'HELD' AND expires_at <= now() \
             ORDER BY expires_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(ReservationId::from_uuid).collect())
    }
}

/// One database transaction of a use case. Dropping it without
/// [`StoreTx::commit`] rolls everything back, which is how a use case that
/// returns early with an error undoes what it did.
#[derive(Debug)]
pub struct StoreTx {
    tx: Transaction<'static, Postgres>,
    events_topic: Arc<str>,
}

impl StoreTx {
    pub async fn commit(self) -> Result<(), InventoryError> {
        Ok(self.tx.commit().await?)
    }

    /// Locks the stock rows of `ids` (in id order) and returns the products
    /// with their stock. Unknown ids are absent from the result.
    pub async fn lock_entries(
        &mut self,
        ids: &[ProductId],
    ) -> Result<BTreeMap<ProductId, CatalogEntry>, InventoryError> {
        let ids: Vec<Uuid> = ids.iter().map(ProductId::as_uuid).collect();
        sqlx::query_as::<_, EntryRow>(select_entries!(
            "WHERE p.id = ANY($1) ORDER BY p.id FOR UPDATE OF s"
        ))
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await?
        .into_iter()
        .map(|row| row.into_entry().map(|entry| (entry.product.id, entry)))
        .collect()
    }

    /// Writes a product's new stock counters; returns the new level.
    pub async fn save_stock(
        &mut self,
        id: ProductId,
        stock: Stock,
    ) -> Result<StockLevel, InventoryError> {
        sqlx::query_as::<_, LevelRow>(
            "UPDATE stock SET on_hand = $2, reserved = $3, version = version + 1, updated_at = now() \
             WHERE product_id = $1 \
             RETURNING product_id, on_hand, reserved, version, updated_at",
        )
        .bind(id.as_uuid())
        .bind(stock.on_hand())
        .bind(stock.reserved())
        .fetch_one(&mut *self.tx)
        .await?
        .into_level()
    }

    /// Creates a HELD reservation expiring after `ttl`, unless one with this
    /// id exists (or is being created by a concurrent transaction, which this
    /// call then waits for). Returns its deadline when created.
    pub async fn create_reservation(
        &mut self,
        id: ReservationId,
        ttl: Duration,
    ) -> Result<Option<DateTime<Utc>>, InventoryError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO reservations (id, status, expires_at) VALUES ($1, 'HELD', now() + $2) \
             ON CONFLICT (id) DO NOTHING \
             RETURNING expires_at",
        )
        .bind(id.as_uuid())
        .bind(ttl)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Records `id` as released without lines, unless a reservation with this
    /// id exists. Returns whether it was recorded.
    pub async fn create_released_placeholder(
        &mut self,
        id: ReservationId,
    ) -> Result<bool, InventoryError> {
        let inserted = sqlx::query(
            "INSERT INTO reservations (id, status, expires_at) VALUES ($1, 'RELEASED', now()) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_uuid())
        .execute(&mut *self.tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Stores the lines of a new reservation.
    pub async fn insert_lines(
        &mut self,
        id: ReservationId,
        lines: &[ReservedLine],
    ) -> Result<(), InventoryError> {
        let product_ids: Vec<Uuid> = lines.iter().map(|l| l.product_id.as_uuid()).collect();
        let quantities: Vec<i64> = lines.iter().map(|l| i64::from(l.quantity.get())).collect();
        let names: Vec<&str> = lines.iter().map(|l| l.product_name.as_str()).collect();
        let amounts: Vec<i64> = lines
            .iter()
            .map(|l| l.unit_price.money().amount())
            .collect();
        let currencies: Vec<String> = lines
            .iter()
            .map(|l| l.unit_price.money().currency().to_string())
            .collect();
        sqlx::query(
            "INSERT INTO reservation_lines \
                 (reservation_id, product_id, quantity, product_name, unit_price_amount, unit_price_currency) \
             SELECT $1, * FROM UNNEST($2::uuid[], $3::bigint[], $4::text[], $5::bigint[], $6::text[])",
        )
        .bind(id.as_uuid())
        .bind(product_ids)
        .bind(quantities)
        .bind(names)
        .bind(amounts)
        .bind(currencies)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Locks a reservation and reads it with its lines; the flag says
    /// whether its deadline has passed (by the database clock).
    pub async fn lock_reservation(
        &mut self,
        id: ReservationId,
    ) -> Result<Option<(Reservation, bool)>, InventoryError> {
        let Some(row) = sqlx::query_as::<_, ReservationRow>(
            "SELECT id, status, expires_at, expires_at <= now() AS overdue \
             FROM reservations WHERE id = $1 FOR UPDATE",
        )
        .bind(id.as_uuid())
        .fetch_optional(&mut *self.tx)
        .await?
        else {
            return Ok(None);
        };
        let lines = sqlx::query_as::<_, LineRow>(
            "SELECT product_id, quantity, product_name, unit_price_amount, unit_price_currency \
             FROM reservation_lines WHERE reservation_id = $1 ORDER BY product_id",
        )
        .bind(id.as_uuid())
        .fetch_all(&mut *self.tx)
        .await?
        .into_iter()
        .map(LineRow::into_line)
        .collect::<Result<_, _>>()?;
        let status = ReservationStatus::from_stored(&row.status)
            .ok_or_else(|| corrupt("reservation", row.id, format!("status {:?}", row.status)))?;
        let reservation = Reservation {
            id,
            status,
            lines,
            expires_at: row.expires_at,
        };
        Ok(Some((reservation, row.overdue)))
    }

    pub async fn set_reservation_status(
        &mut self,
        id: ReservationId,
        status: ReservationStatus,
    ) -> Result<(), InventoryError> {
        sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE id = $1")
            .bind(id.as_uuid())
            .bind(status.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Writes integration events to the outbox, to be published once this
    /// transaction commits — and only if it does.
    pub async fn record(&mut self, events: &[InventoryEvent]) -> Result<(), InventoryError> {
        let messages = events
            .iter()
            .map(|event| messaging::outbox_message(event, &self.events_topic))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| InventoryError::Internal(format!("encoding an event: {error}")))?;
        eventstore::enqueue_all(&mut self.tx, &messages)
            .await
            .map_err(|error| match error {
                eventstore::OutboxError::Database(error) => error.into(),
                other => InventoryError::Internal(format!("outbox: {other}")),
            })
    }
}

#[derive(FromRow)]
struct EntryRow {
    id: Uuid,
    sku: String,
    name: String,
    description: String,
    price_amount: i64,
    price_currency: String,
    category: String,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    on_hand: i64,
    reserved: i64,
    version: i64,
    stock_updated_at: DateTime<Utc>,
    avg_daily_demand: i64,
    lead_time_days: i64,
    safety_stock: i64,
}

impl EntryRow {
    fn into_entry(self) -> Result<CatalogEntry, InventoryError> {
        let id = self.id;
        let bad = |what: &str, error: &dyn std::fmt::Display| {
            corrupt("product", id, format!("{what}: {error}"))
        };
        let currency = Currency::parse(&self.price_currency).map_err(|e| bad("currency", &e))?;
        let count = |value: i64, what: &str| u32::try_from(value).map_err(|e| bad(what, &e));
        let product = Product {
            id: ProductId::from_uuid(id),
            sku: Sku::parse(&self.sku).map_err(|e| bad("sku", &e))?,
            name: ProductName::parse(&self.name).map_err(|e| bad("name", &e))?,
            description: Description::parse(&self.description)
                .map_err(|e| bad("description", &e))?,
            price: Price::from_stored(self.price_amount, currency).map_err(|e| bad("price", &e))?,
            category: self.category.parse().map_err(|e| bad("category", &e))?,
            active: self.active,
            reorder_policy: ReorderPolicy {
                avg_daily_demand: count(self.avg_daily_demand, "avg_daily_demand")?,
                lead_time_days: count(self.lead_time_days, "lead_time_days")?,
                safety_stock: count(self.safety_stock, "safety_stock")?,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        let level = LevelRow {
            product_id: id,
            on_hand: self.on_hand,
            reserved: self.reserved,
            version: self.version,
            updated_at: self.stock_updated_at,
        }
        .into_level()?;
        Ok(CatalogEntry { product, level })
    }
}

#[derive(FromRow)]
struct LevelRow {
    product_id: Uuid,
    on_hand: i64,
    reserved: i64,
    version: i64,
    updated_at: DateTime<Utc>,
}

impl LevelRow {
    fn into_level(self) -> Result<StockLevel, InventoryError> {
        Ok(StockLevel {
            product_id: ProductId::from_uuid(self.product_id),
            stock: Stock::new(self.on_hand, self.reserved)
                .map_err(|e| corrupt("stock", self.product_id, e.to_string()))?,
            version: self.version,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
struct ReservationRow {
    id: Uuid,
    status: String,
    expires_at: DateTime<Utc>,
    overdue: bool,
}

#[derive(FromRow)]
struct LineRow {
    product_id: Uuid,
    quantity: i64,
    product_name: String,
    unit_price_amount: i64,
    unit_price_currency: String,
}

impl LineRow {
    fn into_line(self) -> Result<ReservedLine, InventoryError> {
        let id = self.product_id;
        let bad = |what: &str, error: &dyn std::fmt::Display| {
            corrupt(
                "reservation line of product",
                id,
                format!("{what}: {error}"),
            )
        };
        let currency =
            Currency::parse(&self.unit_price_currency).map_err(|e| bad("currency", &e))?;
        Ok(ReservedLine {
            product_id: ProductId::from_uuid(id),
            product_name: ProductName::parse(&self.product_name).map_err(|e| bad("name", &e))?,
            quantity: Quantity::from_stored(self.quantity).map_err(|e| bad("quantity", &e))?,
            unit_price: Price::from_stored(self.unit_price_amount, currency)
                .map_err(|e| bad("price", &e))?,
        })
    }
}

/// A stored row the domain refuses: a bug or a manual edit, never the caller's
/// fault.
fn corrupt(what: &str, id: Uuid, reason: String) -> InventoryError {
    InventoryError::Internal(format!("corrupt {what} {id}: {reason}"))
}
