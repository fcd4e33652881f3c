//! Queries: the use cases that only read.

use std::future::ready;
use std::num::NonZeroU32;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::domain::money::Rate;
use crate::domain::pricing::{self, Quote};
use crate::domain::product::{CatalogEntry, CatalogFilter, ProductId};
use crate::domain::stock::{Quantity, StockLevel};
use crate::error::InventoryError;
use crate::feed::FeedEvent;

use super::Inventory;

/// Products fetched per database round trip while streaming the catalogue:
/// what a listing holds in memory at most, however long it is.
pub const LIST_PAGE_SIZE: u32 = 100;

impl Inventory {
    /// One product with its stock.
    pub async fn product(&self, id: ProductId) -> Result<CatalogEntry, InventoryError> {
        self.store
            .entry(id)
            .await?
            .ok_or(InventoryError::ProductNotFound(id))
    }

    /// The active products matching `filter` after `after`, in id order, at
    /// most `limit` of them (`None`: all), fetched a page at a time as the
    /// stream is consumed.
    pub fn list_products(
        &self,
        filter: CatalogFilter,
        after: Option<ProductId>,
        limit: Option<NonZeroU32>,
    ) -> BoxStream<'static, Result<CatalogEntry, InventoryError>> {
        let store = self.store.clone();
        let page_size = limit.map_or(LIST_PAGE_SIZE, |limit| limit.get().min(LIST_PAGE_SIZE));
        // State: where the next page starts, or None once the last page came.
        let pages = stream::try_unfold(Some(after), move |cursor| {
            let store = store.clone();
            async move {
                let Some(after) = cursor else {
                    return Ok(None);
                };
                let page = store.page(filter, after, page_size).await?;
                let full = u32::try_from(page.len()).is_ok_and(|len| len == page_size);
                let next = match page.last() {
                    Some(last) if full => Some(Some(last.product.id)),
                    _ => None,
                };
                Ok::<_, InventoryError>(Some((page, next)))
            }
        });
        let entries = pages
            .map_ok(|page| stream::iter(page.into_iter().map(Ok)))
            .try_flatten();
        match limit {
            Some(limit) => entries
                .take(usize::try_from(limit.get()).unwrap_or(usize::MAX))
                .boxed(),
            None => entries.boxed(),
        }
    }

    /// Prices `quantity` units of a product at `tax_rate`.
    pub async fn quote(
        &self,
        id: ProductId,
        quantity: Quantity,
        tax_rate: Rate,
    ) -> Result<Quote, InventoryError> {
        let entry = self.product(id).await?;
        pricing::quote(entry.product.price, quantity, tax_rate).map_err(|_| {
            InventoryError::invalid("quantity", "the amount for this quantity is out of range")
        })
    }

    /// A product's stock level now, then after every change.
    ///
    /// The feed is subscribed to *before* the current level is read, so no
    /// change can fall between the two; levels not newer than the last one
    /// sent (by version) are dropped, so none is sent twice or out of order.
    pub async fn watch_stock(
        &self,
        id: ProductId,
    ) -> Result<BoxStream<'static, Result<StockLevel, InventoryError>>, InventoryError> {
        let updates = self.feed.subscribe();
        let current = self
            .store
            .stock_level(id)
            .await?
            .ok_or(InventoryError::ProductNotFound(id))?;
        let watch = Watch {
            id,
            store: self.store.clone(),
            updates,
            last_version: current.version,
        };
        let changes = stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            match watch.next().await {
                Ok(Some(level)) => Some((Ok(level), Some(watch))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        });
        Ok(stream::once(ready(Ok(current))).chain(changes).boxed())
    }
}

/// One watcher's position in the feed.
struct Watch {
    id: ProductId,
    store: crate::store::Store,
    updates: tokio::sync::broadcast::Receiver<FeedEvent>,
    last_version: i64,
}

impl Watch {
    /// The next newer level of the product; `None` when the feed is gone.
    async fn next(&mut self) -> Result<Option<StockLevel>, InventoryError> {
        loop {
            let level = match self.updates.recv().await {
                Ok(FeedEvent::Changed(level)) if level.product_id == self.id => level,
                Ok(FeedEvent::Changed(_)) => continue,
                Ok(FeedEvent::Resync) | Err(RecvError::Lagged(_)) => self
                    .store
                    .stock_level(self.id)
                    .await?
                    .ok_or(InventoryError::ProductNotFound(self.id))?,
                Err(RecvError::Closed) => return Ok(None),
            };
            if level.version > self.last_version {
                self.last_version = level.version;
                return Ok(Some(level));
            }
        }
    }
}
