//! Commands: the use cases that change stock or the catalogue.
//!
//! Each runs in one database transaction: lock, decide with the domain,
//! write, record the integration events in the outbox, commit. An early
//! return drops the transaction, which rolls back everything it did —
//! that is how "all or nothing" is implemented, not by undoing steps.

use std::collections::BTreeMap;

use crate::domain::events::{
    InventoryEvent, LowStock, ReleaseReason, StockReleased, StockReserved,
};
use crate::domain::product::{CatalogEntry, NewProduct, ProductId};
use crate::domain::reservation::{
    self, HoldError, Reservation, ReservationAction, ReservationId, ReservationLines,
    ReservationStatus, ReservedLine, StockEffect,
};
use crate::domain::stock::{Quantity, Stock, StockError};
use crate::error::InventoryError;

use super::Inventory;

/// Fault point reached before every reservation (see DESIGN.md).
const RESERVE_FAULT: &str = "inventory.reserve";

impl Inventory {
    /// Adds a product to the catalogue.
    pub async fn create_product(&self, new: NewProduct) -> Result<CatalogEntry, InventoryError> {
        self.store.create_product(ProductId::generate(), &new).await
    }

    /// Adds `quantity` units to a product's stock.
    pub async fn restock(
        &self,
        id: ProductId,
        quantity: Quantity,
    ) -> Result<CatalogEntry, InventoryError> {
        let mut tx = self.store.begin().await?;
        let mut entry = tx
            .lock_entries(&[id])
            .await?
            .remove(&id)
            .ok_or(InventoryError::ProductNotFound(id))?;
        let after = entry
            .level
            .stock
            .restock(quantity)
            .map_err(|error| match error {
                StockError::Overflow => {
                    InventoryError::invalid("quantity", "stock would exceed its maximum")
                }
                other => other.into(),
            })?;
        entry.level = tx.save_stock(id, after).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Holds stock for every line, or for none (see [`reservation::hold_all`]).
    ///
    /// Idempotent by `id`: if the reservation exists, it is returned as it
    /// now stands, provided it was made for the same lines — expired first
    /// if it is held past its deadline, so that a saga resumed late learns
    /// now what its commit would tell it after the charge.
    pub async fn reserve(
        &self,
        id: ReservationId,
        lines: ReservationLines,
    ) -> Result<Reservation, InventoryError> {
        platform::faults::inject(RESERVE_FAULT).await?;
        let mut tx = self.store.begin().await?;
        let Some(expires_at) = tx.create_reservation(id, self.reservation_ttl).await? else {
            let (existing, overdue) = tx.lock_reservation(id).await?.ok_or_else(|| {
                InventoryError::Internal(format!("reservation {id} conflicted but is not there"))
            })?;
            if !existing.answers(&lines) {
                return Err(InventoryError::ReservationMismatch(id));
            }
            if overdue && existing.status == ReservationStatus::Held {
                drop(tx);
                let status = self.act(id, ReservationAction::Expire).await?;
                return Ok(Reservation { status, ..existing });
            }
            return Ok(existing);
        };

        let entries = tx.lock_entries(&lines.product_ids()).await?;
        let holds = reservation::hold_all(&lines, |product_id| {
            entries
                .get(&product_id)
                .filter(|entry| entry.product.active)
                .map(|entry| entry.level.stock)
        })
        .map_err(|error| match error {
            HoldError::UnknownProduct(product_id) => InventoryError::ProductNotFound(product_id),
            HoldError::Insufficient(shortages) => InventoryError::InsufficientStock(shortages),
            HoldError::Stock(error) => error.into(),
        })?;

        let mut reserved = Vec::with_capacity(holds.len());
        let mut events = Vec::new();
        for hold in holds {
            let entry = entry_of(&entries, hold.product_id)?;
            let level = tx.save_stock(hold.product_id, hold.after).await?;
            events.push(InventoryEvent::StockReserved(StockReserved {
                reservation_id: id,
                product_id: hold.product_id,
                quantity: hold.quantity,
                stock: level.stock.into(),
            }));
            events.extend(low_stock(entry, hold.before, hold.after));
            reserved.push(ReservedLine {
                product_id: hold.product_id,
                product_name: entry.product.name.clone(),
                quantity: hold.quantity,
                unit_price: entry.product.price,
            });
        }
        tx.insert_lines(id, &reserved).await?;
        tx.record(&events).await?;
        tx.commit().await?;
        tracing::info!(reservation_id = %id, lines = reserved.len(), "stock reserved");
        Ok(Reservation {
            id,
            status: ReservationStatus::Held,
            lines: reserved,
            expires_at,
        })
    }

    /// Sells a held reservation's units.
    pub async fn commit(&self, id: ReservationId) -> Result<ReservationStatus, InventoryError> {
        self.act(id, ReservationAction::Commit).await
    }

    /// Gives a reservation's units back (see the proto's ReleaseReservation).
    pub async fn release(&self, id: ReservationId) -> Result<ReservationStatus, InventoryError> {
        self.act(id, ReservationAction::Release).await
    }

    /// Expires up to `batch` overdue reservations; returns how many.
    ///
    /// Several replicas may sweep at once: each reservation is re-checked
    /// under its row lock, so one that another sweeper (or a commit) got to
    /// first is left alone.
    /// A reservation that fails to expire is logged and skipped, so one bad
    /// row cannot stall the sweep of the others.
    pub async fn expire_overdue(&self, batch: u32) -> Result<usize, InventoryError> {
        let mut expired = 0;
        for id in self.store.overdue_reservations(batch).await? {
            match self.act(id, ReservationAction::Expire).await {
                Ok(ReservationStatus::Expired) => expired += 1,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(reservation_id = %id, %error, "cannot expire reservation");
                }
            }
        }
        Ok(expired)
    }

    /// Applies `action` to a reservation, following [`reservation::decide`].
    async fn act(
        &self,
        id: ReservationId,
        action: ReservationAction,
    ) -> Result<ReservationStatus, InventoryError> {
        let mut tx = self.store.begin().await?;
        let (reservation, overdue) = match tx.lock_reservation(id).await? {
            Some(found) => found,
            None if action == ReservationAction::Release => {
                // Release first, reserve later: remember the release so the
                // late ReserveStock holds nothing.
                if tx.create_released_placeholder(id).await? {
                    tx.commit().await?;
                    tracing::info!(reservation_id = %id, "released before it was reserved");
                    return Ok(ReservationStatus::Released);
                }
                // A concurrent ReserveStock created it meanwhile: release that.
                tx.lock_reservation(id).await?.ok_or_else(|| {
                    InventoryError::Internal(format!(
                        "reservation {id} conflicted but is not there"
                    ))
                })?
            }
            None => return Err(InventoryError::ReservationNotFound(id)),
        };

        let decision = reservation::decide(reservation.status, overdue, action);
        if let Some(transition) = decision.transition {
            let product_ids: Vec<ProductId> = reservation
                .lines
                .iter()
                .map(|line| line.product_id)
                .collect();
            let entries = tx.lock_entries(&product_ids).await?;
            let reason = ReleaseReason::of(reservation.status, transition.to);
            let mut events = Vec::new();
            for line in &reservation.lines {
                let entry = entry_of(&entries, line.product_id)?;
                let before = entry.level.stock;
                let after = match transition.effect {
                    StockEffect::ReleaseHeld => before.release(line.quantity)?,
                    StockEffect::CommitHeld => before.commit(line.quantity)?,
                    StockEffect::ReturnCommitted => before.restock(line.quantity)?,
                };
                let level = tx.save_stock(line.product_id, after).await?;
                if transition.effect != StockEffect::CommitHeld {
                    events.push(InventoryEvent::StockReleased(StockReleased {
                        reservation_id: id,
                        product_id: line.product_id,
                        quantity: line.quantity,
                        reason,
                        stock: level.stock.into(),
                    }));
                }
                events.extend(low_stock(entry, before, after));
            }
            tx.set_reservation_status(id, transition.to).await?;
            tx.record(&events).await?;
            tx.commit().await?;
            tracing::info!(
                reservation_id = %id,
                from = reservation.status.as_str(),
                to = transition.to.as_str(),
                "reservation changed"
            );
        }
        decision
            .outcome
            .map_err(|reason| InventoryError::Reservation { id, reason })
    }

    /// Adds every product of `catalog` whose SKU is not taken yet; returns
    /// how many were added.
    pub async fn seed(&self, catalog: Vec<NewProduct>) -> Result<usize, InventoryError> {
        let mut added = 0;
        for product in catalog {
            match self.create_product(product).await {
                Ok(_) => added += 1,
                Err(InventoryError::SkuTaken(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(added)
    }
}

fn entry_of(
    entries: &BTreeMap<ProductId, CatalogEntry>,
    id: ProductId,
) -> Result<&CatalogEntry, InventoryError> {
    entries
        .get(&id)
        .ok_or_else(|| InventoryError::Internal(format!("stock of product {id} vanished")))
}

/// The low-stock event, if the change from `before` to `after` crossed the
/// product's reorder point downwards.
fn low_stock(entry: &CatalogEntry, before: Stock, after: Stock) -> Option<InventoryEvent> {
    let policy = entry.product.reorder_policy;
    policy.crossed_below(before, after).then(|| {
        InventoryEvent::LowStock(LowStock {
            product_id: entry.product.id,
            sku: entry.product.sku.clone(),
            reorder_point: policy.reorder_point(),
            stock: after.into(),
        })
    })
}
